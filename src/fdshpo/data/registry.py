"""Datasets by name: ``load_dataset(name, ...)`` and ``register_dataset(name, loader)``.

Built-in names: ``fashion-mnist-sample`` (bundled), ``fashion-mnist``, ``mnist``, ``cifar10``
(see :mod:`fdshpo.data.standard` for where each is looked for, in order). A loader is any
callable ``loader(request: DataRequest) -> TensorDataset``; the request carries where the user
said to look. Loaders raise :class:`DatasetNotFound` listing every place they looked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .sample import TensorDataset

#: Environment variable naming the default data root.
DATA_ROOT_ENV = "FDSHPO_DATA_ROOT"


class DatasetNotFound(UserError):
    """No source of a dataset held its files; the message lists every place looked at."""


@dataclass(frozen=True)
class DataRequest:
    """Where to look for a dataset, as the user gave it.

    ``path``: an explicit file or folder (highest priority). ``root``: the data root holding
    torchvision layouts (``FashionMNIST/raw``, ``MNIST/raw``, ``cifar-10-batches-py``) and the
    cache of store downloads. ``store``: an object-store URI (``s3://bucket/prefix``, a path or
    ``file://...``) or an ArtifactStore, and ``store_prefix`` the key prefix of the dataset's
    files in it (default ``datasets/<name>``). ``download``: allow torchvision's own download.
    """

    name: str
    root: Path
    path: Path | None = None
    store: Any = None
    store_prefix: str | None = None
    s3_endpoint: str | None = None
    download: bool = False
    settings: Mapping[str, str] = field(default_factory=lambda: dict(LIBRARY_SETTINGS))


#: How a caller of :func:`load_dataset` sets each source (``path``, ``root``, ``store``,
#: ``download``), as the not-found message names it: the library's arguments and the CLI's
#: options (``fdshpo data prepare``). A caller passes its own (``settings=``); a source it
#: cannot set is left out of the advice.
LIBRARY_SETTINGS = {"path": "path=FOLDER (CLI: --data-path FOLDER)",
                    "root": "root=, --data-root or $FDSHPO_DATA_ROOT",
                    "store": "store=URI (CLI: --data-store URI)",
                    "download": "download=True (CLI: --download)"}
#: An experiment config (``fdshpo run``, the pipeline's components) sets only the data root.
CONFIG_SETTINGS = {"root": "data.root in the config, or $FDSHPO_DATA_ROOT"}


Loader = Callable[[DataRequest], TensorDataset]
_LOADERS: dict[str, Loader] = {}


def default_data_root() -> Path:
    """``$FDSHPO_DATA_ROOT``, else ``~/.cache/fdshpo/datasets``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else Path.home() / ".cache" / "fdshpo" / "datasets"


def register_dataset(name: str, loader: Loader, *, overwrite: bool = False) -> None:
    """Make ``load_dataset(name, ...)`` call ``loader(request)``.

    Raises ValueError when ``name`` is taken (pass ``overwrite=True`` to replace it).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a dataset name must be a non-empty string")
    if name in _LOADERS and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True to "
                         "replace it")
    _LOADERS[name] = loader


def known_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_LOADERS)


def load_dataset(name: str, root: str | Path | None = None, *, path: str | Path | None = None,
                 store: Any = None, store_prefix: str | None = None,
                 s3_endpoint: str | None = None, download: bool = False,
                 settings: Mapping[str, str] | None = None) -> TensorDataset:
    """The dataset ``name`` as normalised in-memory tensors (CPU, float32 images).

    ``settings``: how the caller's user sets each source, for the not-found message
    (default :data:`LIBRARY_SETTINGS`; an experiment config passes :data:`CONFIG_SETTINGS`).

    Raises:
        UserError: unknown ``name`` (the message lists the known names).
        DatasetNotFound: no source held the data (the message lists every place looked at and
            how to provide the data).
        IdxFormatError / CifarFormatError: a file was found but is corrupted or truncated.
    """
    if name not in _LOADERS:
        raise UserError(f"unknown dataset {name!r}; known datasets are {known_datasets()} "
                        "(add your own with fdshpo.data.register_dataset)")
    request = DataRequest(name=name, root=Path(root) if root is not None else default_data_root(),
                          path=Path(path) if path is not None else None, store=store,
                          store_prefix=store_prefix, s3_endpoint=s3_endpoint, download=download,
                          settings=dict(settings or LIBRARY_SETTINGS))
    return _LOADERS[name](request)

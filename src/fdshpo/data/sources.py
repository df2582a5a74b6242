"""Finding a dataset's files: explicit path, data root, system folders, object store, download.

:func:`locate` tries the sources of a :class:`DataRequest` in this fixed order and returns the
first folder whose files pass ``check``:

1. the explicit ``path`` (when given, it is the only place looked at: a wrong path is an error,
   never a silent fallback to other data);
2. torchvision layouts under the data ``root``;
3. system folders (e.g. Debian's ``/usr/share/datasets/fashion-mnist``);
4. the object store: every key under ``store_prefix`` is copied into ``root/.store-cache/``;
5. torchvision's own download into ``root``, only when ``download=True``.

Otherwise it raises :class:`DatasetNotFound` listing every place and why it did not qualify.
The store's locator appears in messages and in the returned description with its user info
redacted (:func:`fdshpo.store.credentials.redact_userinfo`): no key reaches a log or a record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..store.credentials import redact_userinfo
from .registry import DataRequest, DatasetNotFound

#: ``check(folder) -> None`` when the folder holds the dataset, else the reason it does not.
Check = Callable[[Path], "str | None"]


@dataclass(frozen=True)
class SourcePlan:
    """Where one dataset may live, beside the user's explicit path and the store."""

    layouts: Sequence[str]                    # sub-folders of a base folder to try, "" = itself
    root_folders: Sequence[str]               # folders under the data root
    system_folders: Sequence[tuple[str, Path]] = ()   # (description, folder)
    download: Callable[[Path], None] | None = None    # torchvision download into a root
    how_to: Sequence[str] = field(default_factory=tuple)  # extra ways to provide the data


def _first_ok(bases: Sequence[Path], layouts: Sequence[str], check: Check
              ) -> tuple[Path | None, list[str]]:
    reasons = []
    for base in bases:
        if not base.is_dir():
            reasons.append(f"{base}: no such folder")
            continue
        for layout in layouts:
            folder = base / layout if layout else base
            if not folder.is_dir():
                reasons.append(f"{folder}: no such folder")
                continue
            why = check(folder)
            if why is None:
                return folder, reasons
            reasons.append(f"{folder}: {why}")
    return None, reasons


def fetch_from_store(request: DataRequest, dest: Path) -> tuple[str, int]:
    """Copy every key under the request's store prefix into ``dest``: (store uri, file count)."""
    store = request.store
    if isinstance(store, (str, Path)):
        try:
            from ..store import open_store
        except ImportError as err:
            raise RuntimeError(f"the object store module is not available ({err})") from None
        store = open_store(str(store), s3_endpoint=request.s3_endpoint)
    prefix = (request.store_prefix or f"datasets/{request.name}").strip("/")
    keys = store.list(prefix + "/")
    for key in keys:
        relative = key[len(prefix) + 1:]
        if not relative or ".." in Path(relative).parts:
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, target)
    return f"{getattr(store, 'uri', store)} prefix {prefix!r}", len(keys)


def locate(request: DataRequest, plan: SourcePlan, check: Check) -> tuple[Path, str]:
    """(folder holding the dataset, description of the source it came from)."""
    if request.path is not None:
        folder, reasons = _first_ok([request.path], plan.layouts, check)
        if folder is not None:
            return folder, f"explicit path {folder}"
        raise DatasetNotFound(
            f"dataset {request.name!r} is not at the explicit path {request.path}:\n  "
            + "\n  ".join(reasons) + "\n" + _how_to(request, plan))

    looked = ["explicit path: none given"]
    folder, reasons = _first_ok([request.root / f for f in plan.root_folders], ("",), check)
    if folder is not None:
        return folder, f"data root {folder}"
    looked += [f"data root {request.root}: {r}" for r in reasons]

    for description, base in plan.system_folders:
        folder, reasons = _first_ok([base], ("",), check)
        if folder is not None:
            return folder, f"{description} {folder}"
        looked += [f"{description}: {r}" for r in reasons]

    if request.store is None:
        looked.append("object store: none given")
    else:
        key = hashlib.sha256(f"{request.store}|{request.store_prefix}".encode()).hexdigest()[:16]
        cache = request.root / ".store-cache" / f"{request.name}-{key}"
        try:
            where, count = fetch_from_store(request, cache)
        except Exception as err:  # noqa: BLE001 - any store failure is reported, not fatal here
            looked.append(redact_userinfo(f"object store {request.store}: "
                                          f"{type(err).__name__}: {err}"))
        else:
            folder, reasons = _first_ok([cache], plan.layouts, check)
            if folder is not None:
                return folder, redact_userinfo(f"object store {where}")
            looked.append(redact_userinfo(f"object store {where}: {count} files, " + (
                "; ".join(reasons) if count else "nothing under that prefix")))

    if plan.download is None:
        looked.append("download: torchvision cannot download this dataset")
    elif not request.download:
        looked.append("torchvision download: not enabled" + (
            f" (pass {request.settings['download']})" if "download" in request.settings
            else ""))
    else:
        try:
            plan.download(request.root)
        except Exception as err:  # noqa: BLE001 - offline machines fail in many ways
            looked.append(f"torchvision download into {request.root}: {type(err).__name__}: "
                          f"{err}")
        else:
            folder, reasons = _first_ok([request.root / f for f in plan.root_folders], ("",),
                                        check)
            if folder is not None:
                return folder, f"torchvision download {folder}"
            looked += [f"after torchvision download: {r}" for r in reasons]

    raise DatasetNotFound(
        f"dataset {request.name!r} was not found. Looked, in order, at:\n  "
        + "\n  ".join(f"{i}. {line}" for i, line in enumerate(looked, 1)) + "\n"
        + _how_to(request, plan))


def _how_to(request: DataRequest, plan: SourcePlan) -> str:
    """The ways to provide the data that the caller can set, named as its user sets them
    (``request.settings``: the library's and CLI's names, or an experiment config's keys)."""
    setting = request.settings
    ways = []
    if "path" in setting:
        ways.append(f"pass the folder holding the files: {setting['path']}")
    ways.append(f"put the files under the data root {request.root} in the layout "
                + " or ".join(f"{f}/" for f in plan.root_folders)
                + (f" (the root is {setting['root']})" if "root" in setting else ""))
    ways += plan.how_to
    if "store" in setting:
        ways.append(f"upload the files to an object store under the prefix "
                    f"{request.store_prefix or 'datasets/' + request.name}/ (fdshpo data "
                    f"upload) and pass {setting['store']}")
    if plan.download is not None and "download" in setting:
        ways.append(f"on a machine that is online, pass {setting['download']}")
    return "Provide the data in one of these ways:\n  - " + "\n  - ".join(ways)

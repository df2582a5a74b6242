"""Reading and writing CIFAR-10 in its Python format (``cifar-10-batches-py``), without md5 checks.

Each batch file is a pickled dict with ``b"data"``: uint8 (N, 3072) rows of 1024 red, 1024 green
then 1024 blue pixels of a 32x32 image, and ``b"labels"``: N ints in [0, 10). The training set is
``data_batch_1`` .. ``data_batch_5`` (10,000 images each in the real set), the test set
``test_batch``. Users' copies and test fixtures are written locally, so nothing is checked
against torchvision's md5 table; instead every file is checked for structure and the error names
the file. Unpickling is restricted to numpy arrays and plain containers (no arbitrary code).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ..errors import UserError

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
IMAGE_BYTES = 3 * 32 * 32


class CifarFormatError(UserError):
    """A CIFAR batch file is corrupted, truncated or not a CIFAR batch."""


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (what CIFAR batch files contain)."""

    ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype"),
                                                     ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one batch file."""
    path = Path(path)
    try:
        entry = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as err:
        raise CifarFormatError(f"{path}: not a readable CIFAR-10 batch file ({err}); "
                               "copy the file again from the original archive") from None
    if not isinstance(entry, dict):
        raise CifarFormatError(f"{path}: not a CIFAR-10 batch file (no dict inside)")
    data = entry.get(b"data", entry.get("data"))
    labels = entry.get(b"labels", entry.get("labels"))
    if data is None or labels is None:
        raise CifarFormatError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels' entries")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise CifarFormatError(f"{path}: 'data' must be uint8 of shape (N, {IMAGE_BYTES}), "
                               f"got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise CifarFormatError(f"{path}: {len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise CifarFormatError(f"{path}: labels must be in [0, 9], found "
                               f"[{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels


def read_split(folder: str | Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated images and labels of ``files`` in ``folder``."""
    parts = [read_batch(Path(folder) / name) for name in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_batch(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write uint8 images (N, 3, 32, 32) and labels as a CIFAR-10 batch file."""
    path = Path(path)
    entry = {b"batch_label": path.name.encode(), b"labels": [int(v) for v in labels],
             b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1),
             b"filenames": [f"{i}.png".encode() for i in range(len(images))]}
    path.write_bytes(pickle.dumps(entry, protocol=2))
    return path

"""Data preparation: dataset name + split settings -> one checksummed tensor bundle file.

A library run calls :func:`prepare_dataset` once; every outer step and the final retrain then
call :func:`load_prepared` on the same file, so all of them see exactly the same tensors and the
same held-out validation split (``fdshpo data prepare`` on the command line). The KFP pipeline's
prepare component does not use it: it passes the loaded tensors on and each outer step draws
its own seeded split (:mod:`fdshpo.tune.problem`).

Bundle (a ``torch.save`` file of tensors and plain values, read back with ``weights_only=True``):

    format       "fdshpo-prepared/1"
    meta         name, num_classes, input_shape, mean, std, val_fraction, split_seed, storage,
                 counts, source (where the data came from), fdshpo version
    tensors      train_images, train_labels, test_images, test_labels, train_index, val_index
    sha256       checksum of the content (below)

``train_index``/``val_index`` are ``split_validation(N, val_fraction, split_seed)``: disjoint,
covering the training set; the test set is untouched. Images from 8-bit pixels are stored as
uint8 (4x smaller) when re-normalising them reproduces the float tensors bit for bit, else as
float32. The checksum is sha256 over the content metadata (name, classes, statistics, split
settings, storage) and every tensor's name, dtype, shape and bytes, so the same data and split
give the same checksum on any machine, whatever the source path.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import UserError
from .batches import split_validation
from .registry import load_dataset
from .sample import TensorDataset, normalise_images

FORMAT = "fdshpo-prepared/1"
TENSORS = ("train_images", "train_labels", "test_images", "test_labels", "train_index",
           "val_index")
CONTENT_META = ("name", "num_classes", "mean", "std", "val_fraction", "split_seed", "storage")


class PreparedBundleError(UserError):
    """A prepared bundle is unreadable, of another format, or fails its checksum."""


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared bundle in memory: the dataset, its fixed split, checksum and metadata."""

    dataset: TensorDataset
    train_index: torch.Tensor
    val_index: torch.Tensor
    sha256: str
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def val_fraction(self) -> float:
        return float(self.meta["val_fraction"])

    @property
    def split_seed(self) -> int:
        return int(self.meta["split_seed"])


def content_sha256(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({k: meta[k] for k in CONTENT_META}, sort_keys=True).encode())
    for key in TENSORS:
        t = tensors[key].detach().cpu().contiguous()
        digest.update(f"|{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _quantise(images: torch.Tensor, mean, std) -> torch.Tensor | None:
    """The uint8 pixels whose normalisation is exactly ``images``, else None."""
    if mean is None or std is None or images.shape[1] != len(mean):
        return None
    shape = (1, len(mean), 1, 1)
    m = torch.tensor(mean, dtype=torch.float32).view(shape)
    s = torch.tensor(std, dtype=torch.float32).view(shape)
    pixels = (images.float() * s + m).mul_(255).round_()
    if pixels.min() < 0 or pixels.max() > 255:
        return None
    pixels = pixels.to(torch.uint8)
    return pixels if torch.equal(normalise_images(pixels, mean, std), images) else None


def write_prepared(dataset: TensorDataset, out: str | Path, val_fraction: float = 0.05,
                   split_seed: int = 0) -> PreparedDataset:
    """Write ``dataset`` and its validation split to the bundle file ``out`` (atomically)."""
    out = Path(out)
    train_index, val_index = split_validation(len(dataset.train_images), val_fraction,
                                              split_seed)
    images = {key: getattr(dataset, key).detach().cpu().float()
              for key in ("train_images", "test_images")}
    packed = {key: _quantise(x, dataset.mean, dataset.std) for key, x in images.items()}
    storage = "uint8" if all(v is not None for v in packed.values()) else "float32"
    tensors = {**(packed if storage == "uint8" else images),
               "train_labels": dataset.train_labels.detach().cpu().long(),
               "test_labels": dataset.test_labels.detach().cpu().long(),
               "train_index": train_index, "val_index": val_index}
    meta = {"name": dataset.name, "num_classes": int(dataset.num_classes),
            "input_shape": list(dataset.input_shape),
            "mean": list(dataset.mean) if dataset.mean is not None else None,
            "std": list(dataset.std) if dataset.std is not None else None,
            "val_fraction": float(val_fraction), "split_seed": int(split_seed),
            "storage": storage, "num_train": len(train_index), "num_val": len(val_index),
            "num_test": len(dataset.test_labels), "source": dataset.source,
            "fdshpo_version": __version__}
    sha = content_sha256(meta, tensors)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    from ..store.base import ARTIFACT_MODE

    os.fchmod(fd, ARTIFACT_MODE)  # a bundle is shared like a store's artifacts, not 0600
    os.close(fd)
    try:
        torch.save({"format": FORMAT, "meta": meta, "sha256": sha, **tensors}, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return PreparedDataset(dataset, train_index, val_index, sha, meta, out)


def prepare_dataset(name: str, out: str | Path, *, val_fraction: float = 0.05,
                    split_seed: int = 0, **sources: Any) -> PreparedDataset:
    """Load dataset ``name`` (``sources``: root, path, store, store_prefix, s3_endpoint,
    download, as for :func:`~fdshpo.data.load_dataset`) and write its bundle to ``out``."""
    return write_prepared(load_dataset(name, **sources), out, val_fraction, split_seed)


def load_prepared(path: str | Path, expected_sha256: str | None = None) -> PreparedDataset:
    """Read a bundle, verify its checksum (and ``expected_sha256`` when given).

    Raises PreparedBundleError naming the file when it is unreadable, of another format, or its
    content does not match the checksum.
    """
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PreparedBundleError(f"{path}: no such prepared bundle; run the prepare step "
                                  "(fdshpo.data.prepare_dataset) first") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a broken file
        raise PreparedBundleError(f"{path}: not a readable prepared bundle ({err}); prepare "
                                  "the data again") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise PreparedBundleError(f"{path}: expected a {FORMAT} bundle, found {found!r}")
    meta, tensors = blob["meta"], {key: blob[key] for key in TENSORS}
    actual = content_sha256(meta, tensors)
    if actual != blob["sha256"]:
        raise PreparedBundleError(f"{path}: content checksum {actual} does not match the "
                                  f"recorded {blob['sha256']}; the file is corrupted: prepare "
                                  "the data again")
    if expected_sha256 is not None and actual != expected_sha256:
        raise PreparedBundleError(f"{path}: checksum {actual} is not the expected "
                                  f"{expected_sha256}; this is not the bundle the run prepared")

    def images(key: str) -> torch.Tensor:
        x = tensors[key]
        return normalise_images(x, meta["mean"], meta["std"]) if x.dtype == torch.uint8 else x

    dataset = TensorDataset(
        name=meta["name"], train_images=images("train_images"),
        train_labels=tensors["train_labels"], test_images=images("test_images"),
        test_labels=tensors["test_labels"], num_classes=meta["num_classes"],
        mean=tuple(meta["mean"]) if meta["mean"] is not None else None,
        std=tuple(meta["std"]) if meta["std"] is not None else None,
        source=f"prepared bundle {path} (from {meta['source']})")
    return PreparedDataset(dataset, tensors["train_index"], tensors["val_index"], actual, meta,
                           path)

"""The built-in datasets: Fashion-MNIST (sample and full), MNIST and CIFAR-10.

Where each is looked for, in order (see :mod:`fdshpo.data.sources`):

==================  =================================================================
fashion-mnist       path; ROOT/FashionMNIST/raw, ROOT/fashion-mnist;
                    /usr/share/datasets/fashion-mnist (Debian ``dataset-fashion-mnist``);
                    store prefix ``datasets/fashion-mnist``; torchvision download
mnist               path; ROOT/MNIST/raw, ROOT/mnist; store prefix ``datasets/mnist``;
                    torchvision download
cifar10             path; ROOT/cifar-10-batches-py, ROOT/cifar10; store prefix
                    ``datasets/cifar10``; torchvision download
==================  =================================================================

A folder of the IDX datasets holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, each gzipped
(``.gz``) or not; a folder may also be a parent holding ``<TorchvisionName>/raw``. A CIFAR-10
folder holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (or is the parent of
``cifar-10-batches-py``). Images are normalised per channel with the datasets' published
statistics: x = (pixel / 255 - mean) / std.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import cifar
from .idx import IdxFormatError, read_idx
from .registry import DataRequest, register_dataset
from .sample import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    TensorDataset,
    load_fashion_mnist_sample,
    normalise_images,
)
from .sources import SourcePlan, locate

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: CIFAR-10 training-set per-channel mean and standard deviation (pixels in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train_images": ("train-images-idx3-ubyte", 3),
             "train_labels": ("train-labels-idx1-ubyte", 1),
             "test_images": ("t10k-images-idx3-ubyte", 3),
             "test_labels": ("t10k-labels-idx1-ubyte", 1)}


def idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (raw first)."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def check_idx_folder(folder: Path) -> str | None:
    missing = [f"{stem}[.gz]" for stem, _ in IDX_FILES.values() if idx_file(folder, stem) is None]
    return f"missing {', '.join(missing)}" if missing else None


def check_cifar_folder(folder: Path) -> str | None:
    missing = [n for n in cifar.TRAIN_FILES + cifar.TEST_FILES if not (folder / n).is_file()]
    return f"missing {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-like dataset of 28x28 grey images in IDX files, 10 classes."""

    name: str
    torchvision_name: str
    mean: float
    std: float
    system_folders: tuple[tuple[str, Path], ...] = ()
    how_to: tuple[str, ...] = ()

    def plan(self) -> SourcePlan:
        return SourcePlan(layouts=("", f"{self.torchvision_name}/raw", "raw"),
                          root_folders=(f"{self.torchvision_name}/raw", self.name),
                          system_folders=self.system_folders, download=self._download,
                          how_to=self.how_to)

    def _download(self, root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.torchvision_name)
        for train in (True, False):
            cls(str(root), train=train, download=True)

    def __call__(self, request: DataRequest) -> TensorDataset:
        folder, source = locate(request, self.plan(), check_idx_folder)
        return self.read(folder, source)

    def read(self, folder: Path, source: str = "") -> TensorDataset:
        arrays = {key: read_idx(idx_file(folder, stem), ndim)
                  for key, (stem, ndim) in IDX_FILES.items()}
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            image_file = idx_file(folder, IDX_FILES[f"{split}_images"][0])
            label_file = idx_file(folder, IDX_FILES[f"{split}_labels"][0])
            if len(images) != len(labels):
                raise IdxFormatError(f"{image_file} holds {len(images)} images but {label_file} "
                                     f"holds {len(labels)} labels; the files do not belong "
                                     "together")
            if images.shape[1:] != (28, 28):
                raise IdxFormatError(f"{image_file}: images are {images.shape[1:]}, expected "
                                     "28x28")
            if len(labels) and labels.max() > 9:
                raise IdxFormatError(f"{label_file}: label {labels.max()} is outside [0, 9]")
        stats = (self.mean,), (self.std,)
        return TensorDataset(
            name=self.name,
            train_images=normalise_images(arrays["train_images"][:, None], *stats),
            train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
            test_images=normalise_images(arrays["test_images"][:, None], *stats),
            test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
            num_classes=10, mean=stats[0], std=stats[1], source=source)


def _download_cifar10(root: Path) -> None:
    import torchvision.datasets as tvd

    tvd.CIFAR10(str(root), train=True, download=True)


def read_cifar10(folder: Path, source: str = "") -> TensorDataset:
    """CIFAR-10 from a ``cifar-10-batches-py`` folder (no md5 check; structure checked)."""
    train_x, train_y = cifar.read_split(folder, cifar.TRAIN_FILES)
    test_x, test_y = cifar.read_split(folder, cifar.TEST_FILES)
    return TensorDataset(
        name="cifar10",
        train_images=normalise_images(train_x, CIFAR10_MEAN, CIFAR10_STD),
        train_labels=torch.from_numpy(train_y), test_images=normalise_images(
            test_x, CIFAR10_MEAN, CIFAR10_STD),
        test_labels=torch.from_numpy(test_y), num_classes=10,
        mean=CIFAR10_MEAN, std=CIFAR10_STD, source=source)


def load_cifar10(request: DataRequest) -> TensorDataset:
    plan = SourcePlan(layouts=("", cifar.FOLDER), root_folders=(cifar.FOLDER, "cifar10"),
                      download=_download_cifar10)
    folder, source = locate(request, plan, check_cifar_folder)
    return read_cifar10(folder, source)


FASHION_MNIST = IdxDataset(
    "fashion-mnist", "FashionMNIST", FASHION_MNIST_MEAN, FASHION_MNIST_STD,
    system_folders=(("Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST),),
    how_to=("on Debian/Ubuntu: apt-get install dataset-fashion-mnist",))
MNIST = IdxDataset("mnist", "MNIST", MNIST_MEAN, MNIST_STD)


def register_standard_datasets() -> None:
    register_dataset("fashion-mnist-sample", lambda request: load_fashion_mnist_sample(),
                     overwrite=True)
    register_dataset("fashion-mnist", FASHION_MNIST, overwrite=True)
    register_dataset("mnist", MNIST, overwrite=True)
    register_dataset("cifar10", load_cifar10, overwrite=True)

"""The bundled sample: a stratified subset of the real Fashion-MNIST, shipped in the package.

5,000 training images (500 per class) and 1,000 test images (100 per class), picked with a fixed
seed from the real dataset by ``scripts/make_sample.py``. Fashion-MNIST is (c) 2017 Zalando SE,
MIT (Expat) licence: see ``sample/LICENSE`` beside this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

#: Fashion-MNIST's published per-pixel mean and standard deviation (pixels scaled to [0, 1]).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
SAMPLE_FILE = "fashion_mnist_sample.npz"


@dataclass(frozen=True)
class TensorDataset:
    """A labelled image dataset held as tensors: images (N, C, H, W) float, labels (N,) int64.

    ``mean``/``std`` are the per-channel statistics the images were normalised with
    (x = (pixel / 255 - mean) / std), when they came from 8-bit pixels; ``source`` says where the
    data was read from.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])


def normalise_images(images: np.ndarray | torch.Tensor, mean: Sequence[float],
                     std: Sequence[float]) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float32 with x[:, c] = (pixel / 255 - mean[c]) / std[c]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != len(mean):
        raise ValueError(f"expected uint8 images (N, {len(mean)}, H, W), got "
                         f"{images.dtype} {tuple(images.shape)}")
    shape = (1, len(mean), 1, 1)
    x = images.to(torch.float32).div_(255.0)
    x.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
    return x.div_(torch.tensor(std, dtype=torch.float32).view(shape))


def normalise_uint8(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 with x = (pixel / 255 - mean) / std."""
    return normalise_images(np.ascontiguousarray(images)[:, None], (mean,), (std,))


def load_fashion_mnist_sample() -> TensorDataset:
    """The bundled Fashion-MNIST sample, normalised with the full dataset's mean and std."""
    path = resources.files("fdshpo.data") / "sample" / SAMPLE_FILE
    with resources.as_file(path) as file, np.load(file) as arrays:
        return TensorDataset(
            name="fashion-mnist-sample",
            train_images=normalise_uint8(arrays["train_images"], FASHION_MNIST_MEAN,
                                         FASHION_MNIST_STD),
            train_labels=torch.from_numpy(arrays["train_labels"]).long(),
            test_images=normalise_uint8(arrays["test_images"], FASHION_MNIST_MEAN,
                                        FASHION_MNIST_STD),
            test_labels=torch.from_numpy(arrays["test_labels"]).long(),
            num_classes=10,
            mean=(FASHION_MNIST_MEAN,),
            std=(FASHION_MNIST_STD,),
            source="bundled sample (fdshpo/data/sample)",
        )

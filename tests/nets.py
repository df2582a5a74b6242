"""Tiny networks and data for the engine's tests (float64 where exactness is checked)."""

from __future__ import annotations

import torch
from torch import nn


def tiny_mlp(seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def tiny_conv_bn(seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3 * 3 * 3, 4),
    ).to(dtype)


def batches_for(model_kind: str, num: int, batch: int = 8, seed: int = 1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 6) if model_kind == "mlp" else (batch, 1, 6, 6)
    classes = 3 if model_kind == "mlp" else 4
    return [(torch.randn(*shape, generator=gen, dtype=dtype),
             torch.randint(0, classes, (batch,), generator=gen)) for _ in range(num)]


def sample_subset_problem(train: int, test: int, seed: int):
    """An MLP ClassificationProblem on the first images of the bundled Fashion-MNIST sample."""
    from fdshpo.data import TensorDataset, load_fashion_mnist_sample
    from fdshpo.tune.problem import ClassificationProblem

    full = load_fashion_mnist_sample()
    small = TensorDataset("sample-subset", full.train_images[:train], full.train_labels[:train],
                          full.test_images[:test], full.test_labels[:test], 10)
    return ClassificationProblem(small, "mlp", batch_size=32, val_fraction=0.1, seed=seed)

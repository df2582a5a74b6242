"""The full, real Fashion-MNIST (CI installs Debian's dataset-fashion-mnist; skipped without)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fdshpo.data import load_dataset, load_prepared, prepare_dataset
from fdshpo.data.sample import FASHION_MNIST_MEAN, FASHION_MNIST_STD

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").exists(),
                                reason="needs apt-get install dataset-fashion-mnist")


def test_full_fashion_mnist_counts_and_published_statistics(tmp_path):
    ds = load_dataset("fashion-mnist", root=tmp_path)  # nothing under the root: Debian's copy
    assert ds.source.startswith("Debian package dataset-fashion-mnist")
    assert ds.train_images.shape == (60_000, 1, 28, 28)
    assert ds.test_images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(ds.train_labels).tolist() == [6000] * 10
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10
    pixels = ds.train_images.double() * FASHION_MNIST_STD + FASHION_MNIST_MEAN
    assert pixels.mean().item() == pytest.approx(0.2860, abs=5e-4)
    assert pixels.std().item() == pytest.approx(0.3530, abs=5e-4)
    # normalised: mean 0, std 1 (to the precision of the published statistics)
    assert abs(ds.train_images.mean().item()) < 2e-3
    assert ds.train_images.std().item() == pytest.approx(1.0, abs=2e-3)

    prepared = prepare_dataset("fashion-mnist", tmp_path / "fmnist.pt", val_fraction=0.05,
                               split_seed=0, root=tmp_path)
    assert (prepared.meta["num_train"], prepared.meta["num_val"]) == (57_000, 3_000)
    loaded = load_prepared(tmp_path / "fmnist.pt", expected_sha256=prepared.sha256)
    assert torch.equal(loaded.dataset.train_images, ds.train_images)

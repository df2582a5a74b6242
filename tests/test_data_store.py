"""Datasets from a prefix in the object store: a local store and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import pytest
import torch
from test_data_formats import make_cifar_folder, make_idx_folder

from fdshpo.data import DatasetNotFound, load_dataset
from fdshpo.store import open_store


def upload(store, folder, prefix):
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            store.put_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path)


def test_mnist_from_a_local_store_prefix(tmp_path):
    arrays = make_idx_folder(tmp_path / "files", gz=True)
    store = open_store(tmp_path / "store")
    upload(store, tmp_path / "files", "datasets/mnist")
    store.put_bytes("datasets/mnist-other/unrelated", b"not part of mnist")
    ds = load_dataset("mnist", root=tmp_path / "root", store=str(tmp_path / "store"))
    assert ds.source.startswith("object store") and "datasets/mnist" in ds.source
    assert ds.train_labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    # an ArtifactStore object works too, with another prefix
    upload(store, tmp_path / "files", "team/fmnist")
    again = load_dataset("mnist", root=tmp_path / "root2", store=store,
                         store_prefix="team/fmnist")
    assert "team/fmnist" in again.source
    assert torch.equal(again.train_labels, ds.train_labels)


def test_empty_store_prefix_is_listed_among_the_places_looked_at(tmp_path):
    with pytest.raises(DatasetNotFound, match=r"object store .* prefix 'datasets/cifar10': "
                                              r"0 files, nothing under that prefix"):
        load_dataset("cifar10", root=tmp_path / "root", store=str(tmp_path / "store"))


def test_cifar10_from_s3(s3_bucket, tmp_path):
    batches = make_cifar_folder(tmp_path / "cifar-10-batches-py", per_batch=4)
    store = open_store(f"s3://{s3_bucket}/shared")
    upload(store, tmp_path, "datasets/cifar10")  # the folder itself sits under the prefix
    ds = load_dataset("cifar10", root=tmp_path / "root", store=f"s3://{s3_bucket}/shared")
    assert ds.train_images.shape == (20, 3, 32, 32)
    assert ds.test_labels.tolist() == batches["test_batch"][1].tolist()
    assert f"s3://{s3_bucket}/shared" in ds.source

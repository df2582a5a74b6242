"""Dataset loading from real files in the exact on-disk formats (IDX gz/raw, CIFAR-10 pickles)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fdshpo.data import (
    CifarFormatError,
    DatasetNotFound,
    IdxFormatError,
    TensorDataset,
    known_datasets,
    load_dataset,
    register_dataset,
)
from fdshpo.data.cifar import write_batch
from fdshpo.data.idx import read_idx, write_idx
from fdshpo.data.standard import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD
from fdshpo.errors import UserError

N_TRAIN, N_TEST = 60, 20


def make_idx_folder(folder: Path, gz: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.arange(N_TRAIN, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(N_TEST, dtype=np.uint8) % 10}
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array)
    return arrays


def make_cifar_folder(folder: Path, per_batch: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch)
        write_batch(folder / name, images, labels)
        out[name] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_torchvision_layout(tmp_path, gz):
    arrays = make_idx_folder(tmp_path / "MNIST" / "raw", gz)
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.train_images.shape == (N_TRAIN, 1, 28, 28) and ds.test_images.shape == (N_TEST, 1,
                                                                                       28, 28)
    assert ds.train_images.dtype == torch.float32 and ds.train_labels.dtype == torch.int64
    assert torch.bincount(ds.train_labels).tolist() == [N_TRAIN // 10] * 10
    raw = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float() / 255
    torch.testing.assert_close(ds.train_images[:, 0], (raw - MNIST_MEAN) / MNIST_STD)
    assert ds.mean == (MNIST_MEAN,) and "data root" in ds.source


def test_explicit_path_wins_and_is_never_a_silent_fallback(tmp_path):
    make_idx_folder(tmp_path / "root" / "FashionMNIST" / "raw", gz=True, seed=1)
    explicit = make_idx_folder(tmp_path / "mine", gz=False, seed=2)
    ds = load_dataset("fashion-mnist", root=tmp_path / "root", path=tmp_path / "mine")
    assert ds.source.startswith("explicit path")
    expected = torch.from_numpy(explicit["t10k-images-idx3-ubyte"]).float() / 255
    torch.testing.assert_close(ds.test_images[:, 0] * ds.std[0] + ds.mean[0], expected)
    with pytest.raises(DatasetNotFound, match="not at the explicit path") as err:
        load_dataset("fashion-mnist", root=tmp_path / "root", path=tmp_path / "missing")
    assert "missing: no such folder" in str(err.value)


def test_not_found_lists_every_place_and_how_to_provide(tmp_path, monkeypatch):
    from dataclasses import replace

    from fdshpo.data import registry, standard
    elsewhere = replace(standard.FASHION_MNIST, system_folders=(
        ("Debian package dataset-fashion-mnist", tmp_path / "debian"),))
    monkeypatch.setitem(registry._LOADERS, "fashion-mnist", elsewhere)
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("fashion-mnist", root=tmp_path / "root")
    message = str(err.value)
    for place in ["explicit path: none given", f"{tmp_path}/root/FashionMNIST/raw",
                  f"{tmp_path}/debian: no such folder", "object store: none given",
                  "torchvision download: not enabled", "apt-get install dataset-fashion-mnist",
                  "download=True"]:
        assert place in message, place


def test_cifar10_without_md5_from_locally_written_batches(tmp_path):
    batches = make_cifar_folder(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.train_images.shape == (40, 3, 32, 32) and ds.test_images.shape == (8, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    first = torch.from_numpy(batches["data_batch_1"][0]).float() / 255
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(ds.train_images[:8], (first - mean) / std)
    assert ds.test_labels.tolist() == batches["test_batch"][1].tolist()
    # the parent folder and the batches folder itself both work as an explicit path
    assert load_dataset("cifar10", path=tmp_path).train_images.shape[0] == 40
    assert load_dataset("cifar10", path=tmp_path / "cifar-10-batches-py").test_images.shape[0] == 8


def test_truncated_idx_names_the_file(tmp_path):
    make_idx_folder(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(IdxFormatError, match="train-images-idx3-ubyte: truncated"):
        load_dataset("mnist", path=tmp_path)


def test_truncated_gzip_names_the_file(tmp_path):
    make_idx_folder(tmp_path, gz=True)
    target = tmp_path / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(IdxFormatError, match="train-labels-idx1-ubyte.gz: the gzip stream"):
        load_dataset("mnist", path=tmp_path)


def test_gzip_of_a_short_idx_is_an_error_not_a_short_dataset(tmp_path):
    make_idx_folder(tmp_path, gz=True)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:-784]))
    with pytest.raises(IdxFormatError, match="t10k-images-idx3-ubyte.gz: truncated"):
        load_dataset("mnist", path=tmp_path)


def test_corrupted_idx_header_and_mismatched_files(tmp_path):
    bad = tmp_path / "garbage"
    bad.write_bytes(b"\x89PNG not an idx file")
    with pytest.raises(IdxFormatError, match="garbage: not an IDX file"):
        read_idx(bad, 3)
    make_idx_folder(tmp_path / "pair", gz=False)
    write_idx(tmp_path / "pair" / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(IdxFormatError, match="holds 20 images but .*t10k-labels.* holds 5 labels"):
        load_dataset("mnist", path=tmp_path / "pair")


def test_corrupted_cifar_batch_names_the_file(tmp_path):
    make_cifar_folder(tmp_path)
    target = tmp_path / "data_batch_3"
    target.write_bytes(target.read_bytes()[:500])
    with pytest.raises(CifarFormatError, match="data_batch_3: not a readable CIFAR-10 batch"):
        load_dataset("cifar10", path=tmp_path)


def test_cifar_unpickling_refuses_code(tmp_path):
    import pickle

    make_cifar_folder(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(Path("/etc")))
    with pytest.raises(CifarFormatError, match="test_batch: .*not allowed"):
        load_dataset("cifar10", path=tmp_path)


def test_unknown_name_lists_known_and_register_adds_one(tmp_path):
    with pytest.raises(UserError, match=r"unknown dataset 'svhn'; known datasets are \["):
        load_dataset("svhn")
    assert {"fashion-mnist-sample", "fashion-mnist", "mnist", "cifar10"} <= set(known_datasets())

    def tiny(request):
        x = torch.zeros(4, 1, 2, 2)
        return TensorDataset(request.name, x, torch.arange(4) % 2, x[:2], torch.arange(2), 2,
                             source=str(request.root))

    register_dataset("tiny-test", tiny)
    try:
        ds = load_dataset("tiny-test", root=tmp_path)
        assert ds.name == "tiny-test" and ds.source == str(tmp_path)
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("tiny-test", tiny)
    finally:
        from fdshpo.data import registry
        registry._LOADERS.pop("tiny-test")


def test_bundled_sample_by_name():
    ds = load_dataset("fashion-mnist-sample")
    assert ds.train_images.shape == (5000, 1, 28, 28) and ds.test_images.shape == (1000, 1, 28, 28)
    assert torch.bincount(ds.train_labels).tolist() == [500] * 10
    assert torch.bincount(ds.test_labels).tolist() == [100] * 10


def test_download_is_last_and_opt_in(tmp_path):
    """The download step, with a stand-in downloader (no network here) writing real files."""
    from fdshpo.data.registry import DataRequest
    from fdshpo.data.sources import SourcePlan, locate
    from fdshpo.data.standard import check_idx_folder

    calls = []

    def fake_download(root):  # stands in for torchvision's downloader
        calls.append(root)
        make_idx_folder(root / "MNIST" / "raw", gz=True)

    plan = SourcePlan(layouts=("",), root_folders=("MNIST/raw",), download=fake_download)
    with pytest.raises(DatasetNotFound, match="torchvision download: not enabled"):
        locate(DataRequest("mnist", tmp_path), plan, check_idx_folder)
    assert calls == []
    folder, source = locate(DataRequest("mnist", tmp_path, download=True), plan,
                            check_idx_folder)
    assert calls == [tmp_path] and folder == tmp_path / "MNIST" / "raw"
    assert source.startswith("torchvision download")

    def offline(root):
        raise OSError("Network is unreachable")

    plan = SourcePlan(layouts=("",), root_folders=("MNIST/raw",), download=offline)
    with pytest.raises(DatasetNotFound, match="OSError: Network is unreachable"):
        locate(DataRequest("mnist", tmp_path / "other", download=True), plan, check_idx_folder)

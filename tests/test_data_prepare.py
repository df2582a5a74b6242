"""The prepare step: one checksummed bundle that every outer step and the retrain read back."""

from __future__ import annotations

import pytest
import torch

from fdshpo.data import (
    PreparedBundleError,
    TensorDataset,
    load_dataset,
    load_prepared,
    prepare_dataset,
    write_prepared,
)


def test_bundle_round_trip_is_exact_and_split_is_disjoint(tmp_path):
    original = load_dataset("fashion-mnist-sample")
    prepared = prepare_dataset("fashion-mnist-sample", tmp_path / "data.pt", val_fraction=0.1,
                               split_seed=7)
    assert prepared.meta["storage"] == "uint8"
    assert (tmp_path / "data.pt").stat().st_size < 5_000_000  # 6,000 images as bytes, not floats
    loaded = load_prepared(tmp_path / "data.pt", expected_sha256=prepared.sha256)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(loaded.dataset, key), getattr(original, key)), key
    assert loaded.dataset.mean == original.mean and loaded.dataset.num_classes == 10
    train, val = loaded.train_index, loaded.val_index
    assert len(val) == 500 and len(train) == 4500
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(5000))
    assert loaded.val_fraction == 0.1 and loaded.split_seed == 7
    assert "bundled sample" in loaded.dataset.source


def test_checksum_depends_on_content_and_split_only(tmp_path):
    a = prepare_dataset("fashion-mnist-sample", tmp_path / "a.pt", split_seed=1)
    b = prepare_dataset("fashion-mnist-sample", tmp_path / "b.pt", split_seed=1)
    c = prepare_dataset("fashion-mnist-sample", tmp_path / "c.pt", split_seed=2)
    assert a.sha256 == b.sha256 != c.sha256
    assert not torch.equal(a.val_index, c.val_index)


def test_float_images_without_pixel_statistics_are_stored_as_floats(tmp_path):
    gen = torch.Generator().manual_seed(0)
    ds = TensorDataset("floats", torch.randn(20, 2, 3, 3, generator=gen), torch.arange(20) % 4,
                       torch.randn(5, 2, 3, 3, generator=gen), torch.arange(5) % 4, 4)
    prepared = write_prepared(ds, tmp_path / "f.pt", val_fraction=0.25, split_seed=0)
    assert prepared.meta["storage"] == "float32"
    loaded = load_prepared(tmp_path / "f.pt")
    assert torch.equal(loaded.dataset.train_images, ds.train_images)
    assert loaded.dataset.mean is None


def test_corrupted_or_wrong_bundles_are_refused_with_the_file_named(tmp_path):
    prepared = prepare_dataset("fashion-mnist-sample", tmp_path / "data.pt")
    blob = torch.load(tmp_path / "data.pt", weights_only=True)
    blob["train_labels"][3] = (blob["train_labels"][3] + 1) % 10
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(PreparedBundleError, match="tampered.pt: content checksum .* does not "
                                                  "match"):
        load_prepared(tmp_path / "tampered.pt")
    with pytest.raises(PreparedBundleError, match="is not the expected 00ff"):
        load_prepared(tmp_path / "data.pt", expected_sha256="00ff")
    raw = (tmp_path / "data.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PreparedBundleError, match="cut.pt: not a readable prepared bundle"):
        load_prepared(tmp_path / "cut.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(PreparedBundleError, match="expected a fdshpo-prepared/1 bundle"):
        load_prepared(tmp_path / "other.pt")
    with pytest.raises(PreparedBundleError, match="missing.pt: no such prepared bundle"):
        load_prepared(tmp_path / "missing.pt")
    assert load_prepared(tmp_path / "data.pt").sha256 == prepared.sha256


def test_problem_from_prepared_uses_the_fixed_split_every_outer_step(tmp_path):
    from fdshpo.tune.problem import ClassificationProblem

    prepared = prepare_dataset("fashion-mnist-sample", tmp_path / "data.pt", val_fraction=0.04,
                               split_seed=5)
    problem = ClassificationProblem.from_prepared(load_prepared(tmp_path / "data.pt"), "mlp",
                                                  batch_size=32, val_batch_size=1000, seed=11)
    val_x = prepared.dataset.train_images[prepared.val_index]
    for outer_step in (0, 3):
        task = problem(outer_step, 0, 4)
        assert torch.equal(torch.cat([x for x, _ in task.val_batches]), val_x)
        assert len(list(task.train_batches)) == 4
    resplit = ClassificationProblem.from_prepared(prepared, "mlp", fixed_split=False, seed=11)
    assert not torch.equal(resplit.split(0)[1], resplit.split(1)[1])
    augmented = ClassificationProblem.from_prepared(prepared, "mlp", augment=True, seed=11,
                                                    batch_size=32)
    plain_x, plain_y = next(iter(problem(0, 0, 2).train_batches))
    aug_x, aug_y = next(iter(augmented(0, 0, 2).train_batches))
    assert aug_x.shape == plain_x.shape and not torch.equal(aug_x, plain_x)

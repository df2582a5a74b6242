"""Seeded batch streams, validation splits and tensor augmentation on the bundled real sample."""

from __future__ import annotations

import pytest
import torch

from fdshpo.data import ShuffledBatches, load_dataset, random_crop_flip, split_validation


@pytest.fixture(scope="module")
def sample():
    return load_dataset("fashion-mnist-sample")


def test_split_is_disjoint_complete_and_seeded(sample):
    n = len(sample.train_images)
    train, val = split_validation(n, 0.05, seed=3)
    assert len(val) == 250 and len(train) == n - 250
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(n))
    again, other = split_validation(n, 0.05, seed=3), split_validation(n, 0.05, seed=4)
    assert torch.equal(again[1], val) and not torch.equal(other[1], val)


def collect(batches):
    return [(x.clone(), y.clone()) for x, y in batches]


def test_same_seed_same_batches_different_seed_different_order(sample):
    x, y = sample.train_images, sample.train_labels
    a = collect(ShuffledBatches(x, y, 128, 80, seed=1))  # 39 batches an epoch: crosses 2 epochs
    b = collect(ShuffledBatches(x, y, 128, 80, seed=1))
    c = collect(ShuffledBatches(x, y, 128, 80, seed=2))
    assert len(a) == 80 and all(bx.shape == (128, 1, 28, 28) for bx, _ in a)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    # one epoch visits each example at most once; the next epoch reshuffles
    ids = collect(ShuffledBatches(torch.arange(len(x)), y, 128, 78, seed=1))
    first, second = torch.cat([i for i, _ in ids[:39]]), torch.cat([i for i, _ in ids[39:]])
    assert len(first.unique()) == 39 * 128 and len(second.unique()) == 39 * 128
    assert not torch.equal(first, second)


def test_crop_flip_moves_pixels_and_pads_with_zero():
    gen = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    same = random_crop_flip(images, gen, padding=0, flip=False)
    assert torch.equal(same, images)
    out = random_crop_flip(images, torch.Generator().manual_seed(5), padding=2, flip=False)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(2):  # each image is a window of its zero-padded self
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    flipped = random_crop_flip(images.repeat(50, 1, 1, 1), gen, padding=0, flip=True)
    is_flipped = [torch.equal(f, i.flip(2)) for f, i in zip(flipped, images.repeat(50, 1, 1, 1))]
    assert 25 <= sum(is_flipped) <= 75


def test_augmented_stream_is_reproducible_and_resumable(sample):
    x, y = sample.train_images[:512], sample.train_labels[:512]
    full = collect(ShuffledBatches(x, y, 64, 12, seed=9, augment=random_crop_flip))
    again = collect(ShuffledBatches(x, y, 64, 12, seed=9, augment=random_crop_flip))
    resumed = collect(ShuffledBatches(x, y, 64, 12, seed=9, start=7, augment=random_crop_flip))
    plain = collect(ShuffledBatches(x, y, 64, 12, seed=9))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(full, again))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(full[7:], resumed))
    assert all(torch.equal(p[1], q[1]) for p, q in zip(full, plain))  # same order, same labels
    assert not torch.equal(full[0][0], plain[0][0])


def test_a_window_is_those_steps_of_the_stream_augmentation_included(sample):
    x, y = sample.train_images[:512], sample.train_labels[:512]
    stream = ShuffledBatches(x, y, 64, 20, seed=9, augment=random_crop_flip)  # 8 per epoch
    full = collect(stream)
    window = collect(stream.window(6, 11))  # crosses the epoch boundary at step 8
    assert len(window) == 5
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1])
               for p, q in zip(full[6:11], window))
    backwards = [collect(stream.window(t, t + 1))[0] for t in reversed(range(20))]
    assert all(torch.equal(p[0], q[0]) for p, q in zip(reversed(full), backwards))
    with pytest.raises(IndexError, match=r"window \[18, 21\) is outside the stream's 20"):
        stream.window(18, 21)

"""Seeded minibatch streams over in-memory tensors, and held-out validation splits.

No per-sample work happens in the inner loop: a batch is one ``index_select`` on tensors that
already live on the target device.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch

from .augment import Augment

#: Mixed into the seed of the per-step augmentation generator (so it differs from the order's).
AUGMENT_SALT = 0x9E3779B97F4A7C15


def split_validation(num_examples: int, fraction: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train_index, val_index) with round(fraction * N) validation examples.

    The permutation comes from ``torch.Generator().manual_seed(seed)``, so the split is a
    function of (N, fraction, seed) alone.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    num_val = round(fraction * num_examples)
    if num_val < 1 or num_val >= num_examples:
        raise ValueError(
            f"a validation fraction of {fraction} of {num_examples} examples leaves an empty "
            "split; use a larger dataset or another fraction")
    perm = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))
    return perm[num_val:].sort().values, perm[:num_val].sort().values


class ShuffledBatches:
    """Exactly ``num_steps`` minibatches of ``batch_size``, reshuffled every epoch.

    Epoch e uses the permutation drawn from ``torch.Generator().manual_seed(seed + e)``; the last
    incomplete batch of an epoch is dropped, so every batch has ``batch_size`` examples. Iterating
    twice gives the same batches. ``start`` skips the first steps (for resuming a run);
    :meth:`window` gives the batches of a range of steps (what reverse mode replays).

    ``augment(images, generator)`` (e.g. :func:`~fdshpo.data.augment.random_crop_flip`) is
    applied to each batch's inputs with a generator seeded from (seed, step) alone, so augmented
    batches are reproducible too, resumed runs included.

    ``shard=(rank, world_size)`` yields only that rank's contiguous shard of every batch (the
    near-equal split of :func:`shard_bounds`), for a data-parallel inner run: the shards of all
    ranks, joined in rank order, are the batches of the unsharded stream.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                 num_steps: int, seed: int, start: int = 0, augment: Augment | None = None,
                 shard: tuple[int, int] | None = None) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if not 1 <= batch_size <= len(inputs):
            raise ValueError(
                f"batch_size must be between 1 and the number of examples ({len(inputs)}), "
                f"got {batch_size}")
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.num_steps, self.seed, self.start = batch_size, num_steps, seed, start
        self.augment = augment
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, "
                             f"got {shard!r}")
        self.shard = shard
        self.batches_per_epoch = len(inputs) // batch_size
        self._permutations: dict[int, torch.Tensor] = {}  # shared with windows

    def __len__(self) -> int:
        return self.num_steps - self.start

    def window(self, start: int, stop: int) -> ShuffledBatches:
        """The batches of steps ``start .. stop - 1`` of this stream (counted from its first
        batch; the same batches, augmentation included)."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"window [{start}, {stop}) is outside the stream's {len(self)} "
                             "batches")
        window = copy.copy(self)
        window.start, window.num_steps = self.start + start, self.start + stop
        return window

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(self.start, self.num_steps):
            yield self._batch(step)

    def _permutation(self, epoch: int) -> torch.Tensor:
        """The permutation of ``epoch``; the two newest are kept (shared with this stream's
        windows), so reading batches again one by one draws each permutation about once."""
        if epoch not in self._permutations:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            if len(self._permutations) >= 2:
                del self._permutations[next(iter(self._permutations))]
            self._permutations[epoch] = torch.randperm(len(self.inputs), generator=gen).to(
                self.inputs.device)
        return self._permutations[epoch]

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.batches_per_epoch)
        index = self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        mine = slice(None) if self.shard is None else slice(*shard_bounds(len(index),
                                                                            *self.shard))
        if self.augment is None:
            index = index[mine]
        inputs = self.inputs.index_select(0, index)
        if self.augment is not None:  # augmented as the whole batch, then this rank's shard
            seed = (self.seed * 1_000_003 + step) ^ AUGMENT_SALT
            inputs = self.augment(inputs, torch.Generator().manual_seed(seed % 2**63))[mine]
            index = index[mine]
        return inputs, self.targets.index_select(0, index)


def shard_bounds(examples: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s contiguous shard of a batch of ``examples``: near-equal
    sizes, the first ``examples % world_size`` ranks one example more."""
    base, extra = divmod(examples, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def eval_batches(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                 shard: tuple[int, int] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole set in order, in batches of at most ``batch_size`` (views, no copies);
    ``shard=(rank, world_size)``: that rank's shard of each (:func:`shard_bounds`)."""
    out = []
    for i in range(0, len(inputs), batch_size):
        x, y = inputs[i:i + batch_size], targets[i:i + batch_size]
        if shard is not None:
            start, stop = shard_bounds(len(y), *shard)
            x, y = x[start:stop], y[start:stop]
        out.append((x, y))
    return out

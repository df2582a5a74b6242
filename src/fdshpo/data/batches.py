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
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                 num_steps: int, seed: int, start: int = 0, augment: Augment | None = None
                 ) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if not 1 <= batch_size <= len(inputs):
            raise ValueError(
                f"batch_size must be between 1 and the number of examples ({len(inputs)}), "
                f"got {batch_size}")
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.num_steps, self.seed, self.start = batch_size, num_steps, seed, start
        self.augment = augment
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
        inputs = self.inputs.index_select(0, index)
        if self.augment is not None:
            seed = (self.seed * 1_000_003 + step) ^ AUGMENT_SALT
            inputs = self.augment(inputs, torch.Generator().manual_seed(seed % 2**63))
        return inputs, self.targets.index_select(0, index)


def eval_batches(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole set in order, in batches of at most ``batch_size`` (views, no copies)."""
    return [(inputs[i:i + batch_size], targets[i:i + batch_size])
            for i in range(0, len(inputs), batch_size)]

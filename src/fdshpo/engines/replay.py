"""Reading the training batches again: from a step on (resuming), or batch t on its own
(reverse mode's backward sweep, which visits the steps backwards).

What each kind of ``train_batches`` allows:

    a sequence (list, tuple)       batch t is ``batches[t]``
    ShuffledBatches                batch t is drawn again from (seed, t) (``window``)
    another re-iterable            iterated again from the start (batch t costs t batches)
    a one-shot iterator            read once: no replay (a generator, ``iter(...)``)

Reverse mode records a fingerprint of every batch on its forward sweep and compares the batches
it reads again with it, so a stream that does not repeat itself (e.g. a shuffling DataLoader) is
an error, never a silently wrong hypergradient.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

import torch

from ..data.batches import ShuffledBatches
from .objective import Batch


def stream_from(batches: Iterable[Batch], start: int) -> Iterable[Batch]:
    """The batches of steps ``start``, ``start + 1``, ... (those of earlier steps are skipped)."""
    if start == 0:
        return batches
    if isinstance(batches, ShuffledBatches):
        return batches.window(min(start, len(batches)), len(batches))
    if isinstance(batches, Sequence):
        return batches[start:]
    return itertools.islice(iter(batches), start, None)


def is_one_shot(batches: Iterable[Batch]) -> bool:
    """True when iterating ``batches`` consumes it: an iterator (a generator, ``iter(...)``)."""
    return isinstance(batches, Iterator)


def is_indexable(batches: Iterable[Batch]) -> bool:
    """True for sources whose batch t costs O(1) to read again: sequences and ShuffledBatches."""
    return isinstance(batches, (Sequence, ShuffledBatches))


class ReplayError(ValueError):
    """The training batches cannot be read again, or came back different."""


def fingerprint(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(3,) float64 summary of a batch: sum of inputs, of the first example (0 for an empty
    batch: a rank's empty shard), of the targets weighted by position (no device sync)."""
    weights = torch.arange(1, len(targets) + 1, device=targets.device, dtype=torch.float64)
    first = inputs[0] if len(inputs) else inputs
    labels = targets.to(torch.float64)
    per_example = labels.reshape(len(labels), -1).sum(1) if len(labels) else labels.reshape(0)
    return torch.stack([inputs.sum(dtype=torch.float64), first.sum(dtype=torch.float64),
                        (per_example * weights).sum()])


class BatchReplay:
    """Random access to the batches of steps 0 .. T-1 of ``batches`` (see module docstring).

    Raises ReplayError for a one-shot iterator (the message says what to pass instead).
    """

    def __init__(self, batches: Iterable[Batch], num_steps: int) -> None:
        if is_one_shot(batches):
            raise ReplayError(
                "engine='reverse' reads the training batches a second time, backwards, but "
                "train_batches is a one-shot iterator (a generator or iter(...)); pass a list "
                "of batches, a fdshpo.data.ShuffledBatches, or any iterable that yields the same "
                "batches each time it is iterated, or use engine='forward' (or 'auto')")
        self.batches, self.num_steps = batches, num_steps

    def stream(self, start: int = 0) -> Iterator[Batch]:
        """The batches of steps ``start`` .. (to the end of ``batches``)."""
        return iter(stream_from(self.batches, start))

    def window(self, start: int, stop: int) -> Iterator[Batch]:
        """The batches of steps ``start .. stop - 1``; ReplayError when there are fewer."""
        if isinstance(self.batches, ShuffledBatches):
            if stop > len(self.batches):
                raise self._ran_out(len(self.batches))
            return iter(self.batches.window(start, stop))
        if isinstance(self.batches, Sequence):
            if stop > len(self.batches):
                raise self._ran_out(len(self.batches))
            return iter(self.batches[start:stop])
        return self._checked(itertools.islice(iter(self.batches), start, stop), stop - start,
                             start)

    def _checked(self, iterator: Iterator[Batch], count: int, start: int) -> Iterator[Batch]:
        seen = 0
        for batch in iterator:
            seen += 1
            yield batch
        if seen < count:
            raise self._ran_out(start + seen)

    def _ran_out(self, step: int) -> ReplayError:
        return ReplayError(f"train_batches ran out before step {step} when read again for the "
                           f"backward sweep; the run used {self.num_steps} batches: give an "
                           "iterable that yields the same batches each time")


def mismatch_error(step: int) -> ReplayError:
    return ReplayError(
        f"train_batches gave a different batch for step {step} when read again for reverse "
        "mode's backward sweep (a stream that reshuffles, e.g. a DataLoader with shuffle=True?); "
        "pass a fixed list of batches or a fdshpo.data.ShuffledBatches, or use engine='forward'")

"""Data-parallel inner runs: every batch split into shards across the ranks of a process group.

Rank r holds n_r of a batch's N = sum_r n_r examples and computes, on its shard alone, the mean
loss f_r, its gradient g_r and the Hessian-vector products H_r W. Because ``loss_fn`` is a mean
over examples, the whole batch's are the example-weighted sums

    f = sum_r n_r f_r / N,   g = sum_r n_r g_r / N,   H W = sum_r n_r (H_r W) / N

(exact by linearity; shards may be uneven, and an empty shard contributes nothing), so every
rank that applies the same update to the reduced values follows the trajectory of one process
given the whole batches, to rounding. :meth:`ShardGroup.mean` forms these sums with one
``torch.distributed.all_reduce`` of a flat detached tensor [n g, n f, n H W, n], outside the
``torch.func`` transforms (DDP does not compose with ``jvp``/``vmap``). The validation objective
is reduced once, at the end: [sum_b n_b grad L_b, sum_b n_b L_b, sum_b n_b].

What could differ between ranks is decided by rank 0 and broadcast (:meth:`ShardGroup.decide`):
the engine choice (free memory and measured prices differ), the training losses a divergence
check reads, and the final validation loss and hypergradients, so every rank returns the same
bits. A check that can fail on one rank alone (reverse mode's batch replay check) is gathered
from every rank (:meth:`ShardGroup.errors`), so every rank raises the same error naming the
rank it failed on.

BatchNorm in train mode normalises each rank's shard with the shard's own statistics: the
objective is that of one process that applies the model to each shard separately and takes the
example-weighted mean of the shards' losses, not that of the whole batch (per-rank statistics,
as ``torch.nn.parallel.DistributedDataParallel`` without ``SyncBatchNorm``). For a network
without BatchNorm (or any other layer that mixes examples) the two are the same.

A collective that fails (another rank died, or did not arrive within the process group's
timeout, set by ``torch.distributed.init_process_group(timeout=...)``) raises
:class:`RankFailed`, naming this rank, the step and the collective.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..data.batches import shard_bounds


class RankFailed(RuntimeError):
    """A collective of a data-parallel inner run failed on this rank: another rank died or
    missed the process group's timeout. ``rank``, ``world_size`` and ``where`` say which."""

    def __init__(self, message: str, rank: int, world_size: int, where: str) -> None:
        super().__init__(message)
        self.rank, self.world_size, self.where = rank, world_size, where


class ShardGroup:
    """The ranks of ``group`` (a ``torch.distributed`` process group; None: the default group)
    as seen by one engine: sums of shard contributions and rank 0's decisions.

    Attributes: ``rank`` and ``world_size`` within the group. Raises ValueError when
    ``torch.distributed`` is not initialised.
    """

    def __init__(self, group: Any = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("group= needs torch.distributed initialised in every rank "
                             "(torch.distributed.init_process_group, e.g. under torchrun)")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._src = dist.get_global_rank(group, 0) if group is not None else 0
        self.collectives = 0  # how many went by (a benchmark reads them)
        self.bytes_reduced = 0

    def _failed(self, where: str, error: Exception) -> RankFailed:
        return RankFailed(
            f"rank {self.rank} of {self.world_size}: the {where} collective of the data-"
            f"parallel inner run failed: another rank died or did not reach it within the "
            f"process group's timeout ({type(error).__name__}: {error})",
            self.rank, self.world_size, where)

    def _all_reduce(self, flat: torch.Tensor, where: str) -> torch.Tensor:
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        except RuntimeError as error:  # torch.distributed.DistError is one
            raise self._failed(where, error) from error
        self.collectives += 1
        self.bytes_reduced += flat.numel() * flat.element_size()
        return flat

    def sums(self, tensors: list[torch.Tensor], where: str) -> list[torch.Tensor]:
        """sum over ranks of each tensor, in one all_reduce of their flat concatenation
        (detached; same dtype and device)."""
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        flat = self._all_reduce(flat, where)
        out, at = [], 0
        for t in tensors:
            out.append(flat[at:at + t.numel()].view(t.shape))
            at += t.numel()
        return out

    def mean(self, examples: int, tensors: list[torch.Tensor], where: str
             ) -> list[torch.Tensor]:
        """sum_r n_r x_r / sum_r n_r for each tensor x (this rank's shard mean over ``examples``
        = n_r examples), in one all_reduce; ValueError when every shard is empty."""
        ref = tensors[0]
        n = torch.tensor([float(examples)], dtype=ref.dtype, device=ref.device)
        *totals, count = self.sums([t.detach() * examples for t in tensors] + [n], where)
        total = float(count[0])
        if total == 0:
            raise ValueError(f"{where}: every rank's shard of the batch is empty")
        return [t.div_(total) for t in totals]

    def decide(self, value: Any, where: str) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object; an exception rank 0 hit is
        raised on every rank)."""
        box = [value if self.rank == 0 else None]
        try:
            dist.broadcast_object_list(box, src=self._src, group=self.group)
        except RuntimeError as error:  # torch.distributed.DistError is one
            raise self._failed(where, error) from error
        self.collectives += 1
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def errors(self, error: str | None, where: str) -> dict[int, str]:
        """{rank: error text} of every rank that passed an ``error`` (None: nothing failed on
        this rank), the same on every rank (one ``all_gather_object``): a check that fails on
        one rank is reported by every rank, naming it, instead of the others only seeing a
        collective fail when that rank dies."""
        box: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(box, error, group=self.group)
        except RuntimeError as failed:  # torch.distributed.DistError is one
            raise self._failed(where, failed) from failed
        self.collectives += 1
        return {rank: text for rank, text in enumerate(box) if text is not None}

    def agree(self, tensor: torch.Tensor, where: str) -> torch.Tensor:
        """``tensor`` overwritten in place with rank 0's values."""
        try:
            dist.broadcast(tensor, src=self._src, group=self.group)
        except RuntimeError as error:  # torch.distributed.DistError is one
            raise self._failed(where, error) from error
        self.collectives += 1
        self.bytes_reduced += tensor.numel() * tensor.element_size()
        return tensor


def shard_of(inputs: torch.Tensor, targets: torch.Tensor, rank: int, world_size: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s contiguous, near-equal shard of the batch
    (:func:`fdshpo.data.batches.shard_bounds`)."""
    start, stop = shard_bounds(len(targets), rank, world_size)
    return inputs[start:stop], targets[start:stop]

"""What both exact engines are built from: one model, loss and schedule, seen as functions of
the flat parameters, and the K learned columns. :class:`ExactEngine` holds it; the forward and
the reverse engine subclass it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..schedule import HYPERPARAMETERS, Schedule
from .base import TangentColumns, check_clamp, check_losses, checked_learn
from .inner import LossFn
from .objective import Batch, FlatObjective
from .shards import ShardGroup


class ExactEngine:
    """The setup both engines share.

    Args:
        model: the network; its parameters are theta_0. It is deep-copied, never modified.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, a mean over the batch.
        schedule: the hyperparameter schedule over the horizon.
        learn: names whose segment values get hypergradients.
        grad_clamp: clamp every gradient element to [-c, c] and differentiate through it (the
            paper's code uses 3; default off).
        check_every: steps between checks for a non-finite training loss (each check syncs).
        group: a ``torch.distributed`` process group whose ranks each hold a shard of every
            batch (:mod:`fdshpo.engines.shards`); None: this process holds the whole batches.

    Attributes: ``objective`` (:class:`~fdshpo.engines.objective.FlatObjective`), ``schedule``,
    ``learn``, ``layout``, ``device``, ``dtype``, ``columns``
    (:class:`~fdshpo.engines.base.TangentColumns`), ``grad_clamp``, ``check_every``, ``shards``
    (:class:`~fdshpo.engines.shards.ShardGroup`, or None without a group).
    Raises ValueError for an empty, unknown or repeated ``learn`` or a non-positive clamp.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, schedule: Schedule,
                 learn: Sequence[str] = HYPERPARAMETERS, grad_clamp: float | None = None,
                 check_every: int = 100, group: Any = None) -> None:
        self.learn = checked_learn(learn)
        check_clamp("grad_clamp", grad_clamp)
        self.objective = FlatObjective(model, loss_fn)
        self.schedule = schedule
        self.layout = self.objective.layout
        self.device, self.dtype = self.objective.device, self.objective.dtype
        self.columns = TangentColumns.of(schedule, self.learn)
        self.grad_clamp = grad_clamp
        self.check_every = max(1, int(check_every))
        self._column = self.columns.table()
        self.shards = None if group is None else ShardGroup(group)

    def _active(self, name: str, step: int) -> int:
        """The column of ``name``'s segment in force at ``step``."""
        return self._column[name][self.schedule.segment(name, step)]


    # -- what every rank of a data-parallel run shares (fdshpo.engines.shards) ------------------
    def grad_and_hvps(self, theta: torch.Tensor, vectors: torch.Tensor | None,
                      inputs: torch.Tensor, targets: torch.Tensor, step: int,
                      form: str = "reverse", clamp_mask: Callable | None = None,
                      products_only: bool = False):
        """(g, f, H W) of the whole batch of ``step`` (``vectors`` W: (K, P), (P,) or None for
        no products; ``clamp_mask(g) -> m`` makes them H (m * W) with m from the whole batch's
        g). Without a group: this process's batch. With one: the example-weighted means over
        the ranks' shards, one all_reduce (two with ``clamp_mask``: g first, for the mask).
        The returned g is the whole batch's, unclamped. ``products_only``: with a group, only
        H W is reduced (g and f come back as this shard's)."""
        objective = self.objective
        if self.shards is None:
            if vectors is None:
                grad, loss = objective.grad_and_loss(theta, inputs, targets)
                return grad, loss, None
            return objective.grad_and_hvps(theta, vectors, inputs, targets, form, clamp_mask)
        n, where = len(targets), f"inner step {step}"
        reduced = {}

        def whole_mask(grad):
            (reduced["grad"],) = self.shards.mean(n, [grad], where + " (gradient)")
            return clamp_mask(reduced["grad"])

        if n == 0:  # an empty shard: contributes nothing, joins every collective
            grad = torch.zeros_like(theta)
            loss = torch.zeros((), device=theta.device, dtype=theta.dtype)
            hvps = None if vectors is None else torch.zeros_like(vectors)
            if clamp_mask is not None:
                whole_mask(grad)
        elif vectors is None:
            (grad, loss), hvps = objective.grad_and_loss(theta, inputs, targets), None
        else:
            grad, loss, hvps = objective.grad_and_hvps(
                theta, vectors, inputs, targets, form,
                None if clamp_mask is None else whole_mask)
        if clamp_mask is not None:
            hvps, loss = self.shards.mean(n, [hvps, loss], where)
            return reduced["grad"], loss, hvps
        if products_only:
            (hvps,) = self.shards.mean(n, [hvps], where)
            return grad, loss, hvps
        if hvps is None:
            grad, loss = self.shards.mean(n, [grad, loss], where)
            return grad, loss, None
        return tuple(self.shards.mean(n, [grad, loss, hvps], where))

    def validation(self, theta: torch.Tensor, val_batches: Iterable[Batch]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L(theta), grad L(theta)) over the whole validation split: this process's batches,
        or every rank's shards of them (one all_reduce). ValueError when it is empty."""
        if self.shards is None:
            return self.objective.validation(theta, val_batches)
        loss, grad, examples = self.objective.validation_sums(theta, val_batches)
        count = torch.tensor([float(examples)], device=theta.device, dtype=theta.dtype)
        grad, loss, count = self.shards.sums([grad, loss, count], "validation")
        if float(count[0]) == 0:
            raise ValueError("val_batches is empty on every rank; give at least one "
                             "validation batch")
        return loss / count[0], grad / count[0]

    def check_losses(self, losses: torch.Tensor, since: int, upto: int) -> None:
        """:func:`~fdshpo.engines.base.check_losses` on ``losses[since:upto]``; with a group,
        on rank 0's values, which every rank's copy first takes (one broadcast)."""
        if self.shards is not None:
            self.shards.agree(losses[since:upto], f"training losses of steps {since}-{upto}")
        check_losses(losses, since, upto, self.schedule)

    def agreed(self, val_loss: torch.Tensor, hyper: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, hypergradients) as rank 0 has them, on every rank (one broadcast); unchanged
        without a group."""
        if self.shards is None:
            return val_loss, hyper
        flat = torch.cat([val_loss.detach().reshape(1).double(), hyper.detach().double()])
        flat = self.shards.agree(flat, "result")
        return flat[0].to(val_loss.dtype), flat[1:].to(hyper.dtype)

"""What both exact engines are built from: one model, loss and schedule, seen as functions of
the flat parameters, and the K learned columns. :class:`ExactEngine` holds it; the forward and
the reverse engine subclass it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..schedule import HYPERPARAMETERS, Schedule
from .base import TangentColumns, check_clamp, checked_learn
from .inner import LossFn
from .objective import FlatObjective


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

    Attributes: ``objective`` (:class:`~fdshpo.engines.objective.FlatObjective`), ``schedule``,
    ``learn``, ``layout``, ``device``, ``dtype``, ``columns``
    (:class:`~fdshpo.engines.base.TangentColumns`), ``grad_clamp``, ``check_every``.
    Raises ValueError for an empty, unknown or repeated ``learn`` or a non-positive clamp.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, schedule: Schedule,
                 learn: Sequence[str] = HYPERPARAMETERS, grad_clamp: float | None = None,
                 check_every: int = 100) -> None:
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

    def _active(self, name: str, step: int) -> int:
        """The column of ``name``'s segment in force at ``step``."""
        return self._column[name][self.schedule.segment(name, step)]


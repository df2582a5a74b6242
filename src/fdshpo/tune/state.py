"""The outer loop's state as plain data: what an inner task is, what one outer step recorded,
and the :class:`TuneState` that a checkpoint holds and a resumed loop continues from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from torch import nn

from ..schedule import Schedule
from .sign import SignState


@dataclass(frozen=True)
class InnerTask:
    """One replica's inner problem: the network at theta_0 and its batch streams."""

    model: nn.Module
    train_batches: Iterable
    val_batches: Iterable


#: ``make_task(outer_step, replica, num_steps) -> InnerTask``; seeds are the factory's to derive.
TaskFactory = Callable[[int, int, int], InnerTask]


@dataclass(frozen=True)
class OuterStepRecord:
    """What one outer step saw: the schedule it used, hypergradients, losses, step sizes after.

    ``seconds`` is the compute the step spent: the sum of its replicas' inner-run seconds.
    ``diverged_replicas`` lists the replicas whose inner run diverged; ``val_loss`` is then
    infinite and ``hypergradients`` what the divergence policy applied. ``engine``: the engine
    that computed the hypergradients and why (:meth:`fdshpo.engines.choose.EngineChoice.to_dict`),
    None
    when no replica finished.
    """

    outer_step: int
    schedule: dict
    hypergradients: dict[str, list[float]]
    replica_hypergradients: list[dict[str, list[float]]]
    val_loss: float
    replica_val_losses: list[float]
    step_sizes: dict[str, list[float]]
    seconds: float
    converged: bool
    diverged_replicas: list[int] = field(default_factory=list)
    engine: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping) -> OuterStepRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def record_horizon(record: OuterStepRecord) -> int:
    """The number of inner steps the outer step's schedule ran."""
    return int(record.schedule["num_steps"])


@dataclass(frozen=True)
class TuneState:
    """Everything needed to continue the outer loop: a checkpoint is ``to_dict()`` of this."""

    schedule: Schedule
    optimizer_state: SignState
    next_outer_step: int = 0
    converged: bool = False
    history: tuple[OuterStepRecord, ...] = field(default_factory=tuple)

    def best_record(self) -> OuterStepRecord | None:
        """The outer step whose schedule had the lowest validation loss (the latest of equals)
        on the longest horizon any finished step ran (a loop that continues on longer horizons,
        :class:`fdshpo.tune.step.OuterStep`'s ``continue_to``, compares only losses over the
        same number of steps), or None when no step finished an inner run."""
        finished = [r for r in self.history if math.isfinite(r.val_loss)]
        if not finished:
            return None
        horizon = max(record_horizon(r) for r in finished)
        return min(reversed([r for r in finished if record_horizon(r) == horizon]),
                   key=lambda r: r.val_loss)

    def to_dict(self) -> dict:
        return {"schedule": self.schedule.to_dict(),
                "optimizer_state": self.optimizer_state.to_dict(),
                "next_outer_step": self.next_outer_step, "converged": self.converged,
                "history": [r.to_dict() for r in self.history]}

    @classmethod
    def from_dict(cls, data: Mapping) -> TuneState:
        return cls(Schedule.from_dict(data["schedule"]),
                   SignState.from_dict(data["optimizer_state"]),
                   int(data["next_outer_step"]), bool(data["converged"]),
                   tuple(OuterStepRecord.from_dict(r) for r in data["history"]))

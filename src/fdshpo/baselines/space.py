"""The search space every method shares, the result every method returns, and trial scoring.

A :class:`SearchSpace` is FDS's own: the horizon T, the segment counts per hyperparameter (e.g.
(7, 1, 1)), finite bounds and the base shapes the segment values scale (e.g. a linear decay of
the learning rate, :mod:`fdshpo.shapes`; default constant), plus the horizon T_f of the final
training job. Methods search on T (which may be shorter than T_f) and their pick is stretched to
T_f when it is retrained (:meth:`fdshpo.Schedule.stretched`); a multi-fidelity search trains at
T_f itself. Every method (FDS, greedy, random search, TPE, fixed shapes, Hyperband) searches it
and returns a :class:`MethodResult`: the schedule it picked, its validation loss, the work it did
(a :class:`~fdshpo.baselines.budget.Ledger`), and its incumbents (the schedule it would have
returned at
each point of its spend), so accuracy can be plotted against budget.

Trials are scored with :func:`evaluate_schedule`: train the problem's network (replica 0) on
outer step 0's training split with the schedule, and take the validation objective FDS itself
differentiates (:func:`fdshpo.engines.objective.validation_loss`: the example-weighted mean
cross-entropy over that step's validation split, BatchNorm with each batch's statistics), so
every method's validation loss means the same thing. A run whose training loss or validation
loss is not finite scores ``DIVERGED_LOSS``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..engines.inner import load_state, train
from ..engines.objective import validation_loss
from ..schedule import HYPERPARAMETERS, Schedule, check_names
from ..tune.problem import ClassificationProblem
from .budget import Ledger, trial_ledger

#: Score of a trial whose training or validation loss became non-finite (worse than any real one).
DIVERGED_LOSS = 1e6


@dataclass(frozen=True)
class SearchSpace:
    """Horizon, segment counts and finite bounds shared by every method, and the final horizon
    (``final_steps``, default ``num_steps``).

    Raises ValueError for unknown names, a non-positive segment count or horizon, or a bound
    that is infinite or empty (random search and TPE need finite ranges).
    """

    num_steps: int
    segments: Mapping[str, int]
    bounds: Mapping[str, tuple[float, float]]
    shapes: Mapping[str, str] = field(default_factory=dict)
    final_steps: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"the horizon must be a positive int, got {self.num_steps!r}")
        final = self.num_steps if self.final_steps is None else self.final_steps
        if not isinstance(final, int) or final < 1:
            raise ValueError(f"the final horizon must be a positive int, got {final!r}")
        object.__setattr__(self, "final_steps", final)
        check_names(list(self.segments), "segment")
        check_names(list(self.bounds), "bound")
        segments = {n: int(self.segments.get(n, 1)) for n in HYPERPARAMETERS}
        bounds = {}
        for name in HYPERPARAMETERS:
            if segments[name] < 1 or segments[name] > self.num_steps:
                raise ValueError(f"segments[{name!r}] must be in [1, {self.num_steps}], "
                                 f"got {segments[name]}")
            if name not in self.bounds:
                raise ValueError(f"the search space needs bounds for {name!r}, e.g. "
                                 f"{name}: [0, 1]; give all of {list(HYPERPARAMETERS)}")
            lower, upper = (float(b) for b in self.bounds[name])
            if not (math.isfinite(lower) and math.isfinite(upper) and lower <= upper):
                raise ValueError(f"bounds for {name!r} must be finite with lower <= upper, got "
                                 f"[{lower}, {upper}]; random search and TPE sample inside them")
            bounds[name] = (lower, upper)
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "bounds", bounds)
        object.__setattr__(self, "shapes", Schedule(1, {n: [0.0] for n in HYPERPARAMETERS},
                                                    shapes=self.shapes).shapes)

    def schedule(self, values: Mapping[str, object]) -> Schedule:
        """A schedule over this space's horizon and bounds; a scalar fills all segments."""
        full = {}
        for name in HYPERPARAMETERS:
            v = torch.as_tensor(values[name], dtype=torch.float64).reshape(-1)
            full[name] = v.expand(self.segments[name]).clone() if v.numel() == 1 else v
        return Schedule(self.num_steps, full, self.bounds, self.shapes)

    def constant(self, lr: float, momentum: float, weight_decay: float) -> Schedule:
        return self.schedule({"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def contains(self, schedule: Schedule) -> bool:
        """True when every value of ``schedule`` lies inside this space's bounds."""
        return all(bool(((v >= self.bounds[n][0]) & (v <= self.bounds[n][1])).all())
                   for n, v in schedule.values.items())

    def to_dict(self) -> dict:
        return {"num_steps": self.num_steps, "final_steps": self.final_steps,
                "segments": dict(self.segments),
                "bounds": {n: list(b) for n, b in self.bounds.items()},
                "shapes": dict(self.shapes)}


@dataclass(frozen=True)
class Incumbent:
    """The schedule a method would return after spending ``cost`` plain-step equivalents."""

    cost: float
    seconds: float
    val_loss: float
    schedule: Schedule


@dataclass(frozen=True)
class MethodResult:
    """What a method returns: its pick, its validation loss, its work and its incumbents."""

    method: str
    schedule: Schedule
    val_loss: float
    ledger: Ledger
    cost: float
    budget: float
    incumbents: tuple[Incumbent, ...]
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "schedule": self.schedule.to_dict(),
                "val_loss": self.val_loss, "ledger": self.ledger.to_dict(), "cost": self.cost,
                "budget": self.budget, "details": dict(self.details),
                "incumbents": [{"cost": i.cost, "seconds": i.seconds, "val_loss": i.val_loss,
                                "schedule": i.schedule.to_dict()} for i in self.incumbents]}


def validation_examples(problem: ClassificationProblem) -> int:
    """Size of the problem's validation split (the same for every outer step)."""
    return round(problem.val_fraction * len(problem.dataset.train_images))


def score_model(model: nn.Module, val_batches) -> float:
    """The validation objective of ``model`` over the validation batches (see the module
    docstring), or ``DIVERGED_LOSS`` when it is not finite."""
    loss = validation_loss(model, val_batches)
    return loss if math.isfinite(loss) else DIVERGED_LOSS


def evaluate_schedule(problem: ClassificationProblem, schedule: Schedule
                      ) -> tuple[float, Ledger]:
    """(validation loss, work) of one training run with ``schedule`` (see module docstring)."""
    started = time.perf_counter()
    task = problem(0, 0, schedule.num_steps)
    try:
        state = train(task.model, nn.functional.cross_entropy, task.train_batches, schedule)
        loss = score_model(load_state(task.model, state), task.val_batches)
    except FloatingPointError:
        loss = DIVERGED_LOSS
    ledger = trial_ledger(schedule.num_steps, validation_examples(problem))
    return loss, ledger.with_seconds(time.perf_counter() - started)


def affordable(budget: float, unit_cost: float, what: str) -> int:
    """floor(budget / unit_cost), or a ValueError saying the budget cannot buy one ``what``."""
    if not unit_cost > 0:
        raise ValueError(f"the cost of one {what} must be positive, got {unit_cost}")
    count = int(budget // unit_cost)
    if count < 1:
        raise ValueError(f"a budget of {budget:.0f} plain-step equivalents cannot pay for one "
                         f"{what} ({unit_cost:.0f}); raise the budget or shorten the horizon")
    return count

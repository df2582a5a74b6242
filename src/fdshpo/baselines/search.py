"""Black-box searches through Optuna: random search, TPE, and tuned fixed shapes.

Every trial is one full training run over the horizon, scored by its validation loss (see
:func:`~fdshpo.baselines.space.evaluate_schedule`), and costs

    trial = T plain steps + one forward pass over the validation split

in plain-step equivalents. With a budget B a search runs floor(B / trial) trials (so it never
spends more than B) and returns the trial with the lowest validation loss.

    random   RandomSampler(seed) over every segment value of the space, uniform in its bounds
    tpe      TPESampler(seed) over the same values
    constant, step, cosine, linear
             TPESampler(seed) over (peak lr, momentum, weight decay) inside the bounds, the
             learning rate following the shape (:mod:`~fdshpo.shapes`) per step, or
             fitted to the space's lr segments with ``per_step=False``

Fair start: the first trial of every search is the initial schedule (``init``, default the
space's lower bounds: :func:`~fdshpo.baselines.fds.initial_schedule`, where FDS starts), enqueued
with ``study.enqueue_trial``. Its parameters: every segment value (``random``, ``tpe``); for the
shapes peak lr = the initial lr at step 0, momentum and weight decay = their initial values at
step 0 (a constant initial schedule is then exactly the ``constant`` shape's first trial).

Samplers are seeded explicitly, so with the same seed, problem and cost model a search repeats
its trials exactly. A search does not depend on its budget except for when it stops: its
incumbent after spending b of a budget B >= b is what the same search returns with budget b.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping

import optuna
import torch

from ..schedule import HYPERPARAMETERS, Schedule
from ..shapes import SHAPES, fit_segments, shape_values
from ..tune.problem import ClassificationProblem
from .budget import CostModel, Ledger, trial_ledger
from .fds import initial_schedule
from .space import (
    Incumbent,
    MethodResult,
    SearchSpace,
    affordable,
    evaluate_schedule,
    validation_examples,
)

#: ``run_trial(trial) -> (val_loss, ledger, schedule actually used)``
TrialRunner = Callable[[optuna.trial.BaseTrial], tuple[float, Ledger, Schedule]]


@contextlib.contextmanager
def quiet_optuna():
    """Silence Optuna's per-trial INFO lines for the duration, then restore the verbosity."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def trial_cost(problem: ClassificationProblem, space: SearchSpace, cost_model: CostModel) -> float:
    """Plain-step equivalents of one trial: T training steps and one validation pass."""
    return trial_ledger(space.num_steps, validation_examples(problem)).cost(cost_model)


def run_study(method: str, sampler: optuna.samplers.BaseSampler, run_trial: TrialRunner,
              budget: float, trial_cost: float, cost_model: CostModel,
              details: dict | None = None, first: dict | None = None) -> MethodResult:
    """Ask/tell ``floor(budget / trial_cost)`` trials, the first with the parameters ``first``
    (enqueued) when given; the best validation loss wins."""
    num_trials = affordable(budget, trial_cost, f"{method} trial")
    started = time.perf_counter()
    ledger = Ledger()
    best: tuple[float, Schedule] | None = None
    incumbents = []
    with quiet_optuna():
        study = optuna.create_study(study_name=method, direction="minimize", sampler=sampler)
        if first is not None:
            study.enqueue_trial(first)
        for _ in range(num_trials):
            trial = study.ask()
            loss, work, schedule = run_trial(trial)
            study.tell(trial, loss)
            ledger = ledger + work
            if best is None or loss < best[0]:
                best = (loss, schedule)
            incumbents.append(Incumbent(ledger.cost(cost_model), time.perf_counter() - started,
                                        best[0], best[1]))
    ledger = ledger.with_seconds(time.perf_counter() - started)
    return MethodResult(method, best[1], best[0], ledger, ledger.cost(cost_model), budget,
                        tuple(incumbents), {"trials": num_trials,
                                            "first_trial": study.trials[0].params,
                                            "sampled": [t.params for t in study.trials],
                                            **(details or {})})


def segment_values(trial: optuna.trial.BaseTrial, space: SearchSpace) -> Schedule:
    """One uniform suggestion per segment value, named ``lr_0``, ``lr_1``, ..., ``momentum_0``."""
    values = {name: [trial.suggest_float(f"{name}_{k}", *space.bounds[name])
                     for k in range(space.segments[name])] for name in HYPERPARAMETERS}
    return space.schedule(values)


def segment_params(schedule: Schedule) -> dict[str, float]:
    """Trial parameters (``lr_0``, ... as :func:`segment_values` names them) of ``schedule``."""
    return {f"{name}_{k}": float(v) for name in HYPERPARAMETERS
            for k, v in enumerate(schedule.values[name])}


def _segment_search(method: str, sampler, problem: ClassificationProblem, space: SearchSpace,
                    budget: float, cost_model: CostModel, init) -> MethodResult:
    def run_trial(trial):
        schedule = segment_values(trial, space)
        loss, work = evaluate_schedule(problem, schedule)
        return loss, work, schedule

    return run_study(method, sampler, run_trial, budget, trial_cost(problem, space, cost_model),
                     cost_model, first=segment_params(initial_schedule(space, init)))


def random_search(problem: ClassificationProblem, space: SearchSpace, budget: float,
                  cost_model: CostModel, seed: int = 0,
                  init: Mapping[str, object] | None = None) -> MethodResult:
    """Uniform random search over every segment value (Optuna's RandomSampler, seeded)."""
    return _segment_search("random", optuna.samplers.RandomSampler(seed=seed), problem, space,
                           budget, cost_model, init)


def tpe_search(problem: ClassificationProblem, space: SearchSpace, budget: float,
               cost_model: CostModel, seed: int = 0,
               init: Mapping[str, object] | None = None) -> MethodResult:
    """Tree-structured Parzen estimator over every segment value (Optuna's TPESampler, seeded)."""
    return _segment_search("tpe", optuna.samplers.TPESampler(seed=seed), problem, space,
                           budget, cost_model, init)


def shaped_schedule(space: SearchSpace, shape: str, peak: float, momentum: float,
                    weight_decay: float, per_step: bool = True) -> Schedule:
    """``shape``'s learning rates (per step, or fitted to the space's lr segments) and constant
    momentum and weight decay, inside the space's bounds."""
    lr = shape_values(shape, space.num_steps, peak)
    if not per_step:
        lr = fit_segments(lr, space.segments["lr"])
    lower, upper = space.bounds["lr"]
    lr = lr.clamp(lower, upper)
    values = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    if per_step:
        full = {n: torch.as_tensor(v, dtype=torch.float64).reshape(-1) for n, v in values.items()}
        for name in ("momentum", "weight_decay"):
            full[name] = full[name].expand(space.segments[name]).clone()
        return Schedule(space.num_steps, full, space.bounds)
    return space.schedule(values)


def shape_search(shape: str, problem: ClassificationProblem, space: SearchSpace, budget: float,
                 cost_model: CostModel, seed: int = 0, per_step: bool = True,
                 init: Mapping[str, object] | None = None) -> MethodResult:
    """TPE over (peak lr, momentum, weight decay) of a fixed ``shape`` (see module docstring)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown schedule shape {shape!r}; known shapes are {list(SHAPES)}")

    def run_trial(trial):
        schedule = shaped_schedule(
            space, shape, trial.suggest_float("lr", *space.bounds["lr"]),
            trial.suggest_float("momentum", *space.bounds["momentum"]),
            trial.suggest_float("weight_decay", *space.bounds["weight_decay"]), per_step)
        loss, work = evaluate_schedule(problem, schedule)
        return loss, work, schedule

    return run_study(shape, optuna.samplers.TPESampler(seed=seed), run_trial, budget,
                     trial_cost(problem, space, cost_model), cost_model, {"per_step": per_step},
                     first=constant_params(initial_schedule(space, init)))


def constant_params(schedule: Schedule) -> dict[str, float]:
    """{lr, momentum, weight_decay} of ``schedule`` at step 0: the shapes' fair start (peak lr
    = the initial lr)."""
    return {name: float(v) for name, v in schedule.at(0).items()}

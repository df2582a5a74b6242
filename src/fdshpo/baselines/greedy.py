"""Greedy FDS: hypergradients over one window at a time, updated online.

The horizon is cut into windows at every segment boundary of every hyperparameter, so inside a
window each name has one active segment value. Walking the windows in order, from the inner
state (theta, v) reached at the window's start:

    repeat m times:   an exact hypergradient run over the window only, for its active values
                      (the engine :func:`window_engines` picks: forward mode with tangents
                      starting at zero, or reverse mode), of the validation loss at the
                      window's end, then one sign step (a fresh SignOptimizer state per window)
    then              train through the window with the values found, and move on

A value shared by several windows (e.g. the single momentum segment of a (7, 1, 1) space) keeps
being updated in every window it spans; the returned schedule holds each value as last updated.
This is the short-horizon greedy approach the paper compares FDS against: each window's values
are chosen for the loss at that window's end, not at the end of training.

Cost: every pass over the windows costs sum_w (one run of the window's engine,
:func:`fdshpo.baselines.budget.fds_run_ledger`: forward mode with its K_w live columns, or reverse
mode's
two sweeps, + a validation gradient), and the final walk T plain steps; m = floor((B - T) /
pass).
A diverged window run lowers its learning rate (:func:`fdshpo.tune.step.diverged_hypergradient`,
the outer step's ``lower_lr`` policy).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from torch import nn

from ..data.batches import ShuffledBatches
from ..engines.base import EngineChoice, InnerRunDiverged
from ..engines.choose import make_engine
from ..engines.inner import InnerState, init_state, train
from ..schedule import HYPERPARAMETERS, Schedule, segment_index, segment_start
from ..tune.problem import ClassificationProblem
from ..tune.sign import SignOptimizer
from ..tune.step import diverged_hypergradient
from .budget import CostModel, Ledger, fds_engine, fds_run_ledger
from .fds import initial_schedule
from .space import (
    DIVERGED_LOSS,
    Incumbent,
    MethodResult,
    SearchSpace,
    affordable,
    validation_examples,
)


def windows(space: SearchSpace) -> list[tuple[int, int]]:
    """[start, end) of every window: the union of all names' segment boundaries."""
    T = space.num_steps
    cuts = sorted({segment_start(k, n, T) for n in space.segments.values() for k in range(n)}
                  | {T})
    return list(zip(cuts[:-1], cuts[1:]))


def _window_batches(batches, start: int, end: int):
    if isinstance(batches, ShuffledBatches):
        return batches.window(start, end)  # augmentation included
    raise TypeError("greedy FDS needs the problem's ShuffledBatches to replay a window")


def window_engines(model: nn.Module, problem: ClassificationProblem, space: SearchSpace, learn,
                   cost_model: CostModel, engine: str = "auto"
                   ) -> tuple[list[EngineChoice], list[Ledger]]:
    """Per window: the engine its runs use on ``model``
    (:func:`fdshpo.baselines.budget.fds_engine`) and
    the work of one run of it."""
    n_val = validation_examples(problem)
    choices, work = [], []
    for a, b in windows(space):
        window = Schedule.constant(b - a, 0.0)
        choice = fds_engine(model, window, learn, cost_model, engine)
        choices.append(choice)
        work.append(fds_run_ledger(window, learn, n_val, choice.engine, choice.recompute_every))
    return choices, work


def greedy_fds(problem: ClassificationProblem, space: SearchSpace, budget: float,
               cost_model: CostModel, seed: int = 0,
               step_sizes: Mapping[str, float] | None = None,
               init: Mapping[str, float] | None = None, decay: float = 0.5,
               tol: float = 0.05, engine: str = "auto") -> MethodResult:
    """Greedy FDS at a budget (see module docstring). ``seed`` is unused (deterministic).
    ``engine``: the hypergradient engine of each window's runs (charged for the one it runs,
    :func:`fdshpo.baselines.budget.fds_engine`)."""
    del seed
    optimizer = SignOptimizer(step_sizes, decay, tol)
    learn = optimizer.learn
    T = space.num_steps
    spans = windows(space)
    task = problem(0, 0, T)
    model, loss_fn = task.model, nn.functional.cross_entropy
    choices, window_work = window_engines(model, problem, space, learn, cost_model, engine)
    per_pass = sum(window_work, Ledger())
    walk = Ledger(plain_steps=T)
    passes = affordable(budget - walk.cost(cost_model), per_pass.cost(cost_model),
                        "greedy pass over the windows (plus the final walk)")
    values = {n: v.clone() for n, v in initial_schedule(space, init).values.items()}
    inner = init_state(model)
    started = time.perf_counter()
    ledger, val_loss, diverged = Ledger(), DIVERGED_LOSS, 0
    for (a, b), work, choice in zip(spans, window_work, choices):
        active = {n: segment_index(a, space.segments[n], T) for n in HYPERPARAMETERS}
        window = Schedule(b - a, {n: values[n][active[n]:active[n] + 1] for n in HYPERPARAMETERS},
                          space.bounds)
        opt_state = optimizer.init(window)
        for _ in range(passes):
            runner = make_engine(choice.engine, model, loss_fn, window, learn,
                                 recompute_every=choice.recompute_every)
            try:
                result = runner.run(runner.init(inner.params, inner.velocity),
                                    _window_batches(task.train_batches, a, b), task.val_batches,
                                    choice=choice)
                grads, val_loss = result.grads, result.val_loss
            except InnerRunDiverged:
                diverged += 1
                grads = diverged_hypergradient(window, learn)
            window, opt_state = optimizer.update(window, grads, opt_state)
            ledger = ledger + work
        for n in HYPERPARAMETERS:
            values[n][active[n]] = window.values[n][0]
        try:
            inner = train(model, loss_fn, _window_batches(task.train_batches, a, b), window,
                          InnerState(inner.params, inner.velocity, inner.buffers, 0))
        except FloatingPointError:
            diverged += 1
            val_loss = DIVERGED_LOSS
            ledger = ledger + Ledger(plain_steps=T - a)
            break
        ledger = ledger + Ledger(plain_steps=b - a)
    schedule = space.schedule(values)
    ledger = ledger.with_seconds(time.perf_counter() - started)
    cost = ledger.cost(cost_model)
    return MethodResult("greedy", schedule, val_loss, ledger, cost, budget,
                        (Incumbent(cost, ledger.seconds, val_loss, schedule),),
                        {"windows": len(spans), "passes": passes, "diverged_runs": diverged,
                         "engines": [c.engine for c in choices]})

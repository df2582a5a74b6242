"""FDS itself as a budgeted method, so the comparison runs it through the same contract.

One outer step costs ``replicas`` FDS inner runs over the horizon,

    outer = replicas * (sum_t fds_step(live columns at t) + validation gradient)

and with a budget B the method runs at most min(outer_steps, floor(B / outer)) outer steps of
:func:`fdshpo.tune.run_replica` / :func:`fdshpo.tune.apply_outer_update` (the tune loop's own
steps), stopping earlier when every learned value has converged. The initial schedule is the
space's lower bounds (the paper starts from 0) unless ``init`` is given.

A diverged inner run (:class:`~fdshpo.InnerRunDiverged`) gives no hypergradient; it is taken as a
hypergradient of +1 on every learning-rate segment and 0 elsewhere, so the sign step lowers the
learning rate everywhere, and the outer step is still paid for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch
from torch import nn

from ..budget import CostModel, Ledger, fds_run_ledger
from ..forward import InnerRunDiverged
from ..outer import SignOptimizer
from ..problem import ClassificationProblem
from ..schedule import HYPERPARAMETERS
from ..tune import OuterStepRecord, TuneState, apply_outer_update, run_replica
from .space import Incumbent, MethodResult, SearchSpace, affordable, validation_examples


def initial_schedule(space: SearchSpace, init: Mapping[str, float] | None = None):
    """The space's lower bounds, or ``init``'s values (scalars or per-segment lists)."""
    values = {n: space.bounds[n][0] for n in HYPERPARAMETERS}
    values.update(dict(init or {}))
    return space.schedule(values)


def lower_lr_step(optimizer: SignOptimizer, state: TuneState, seconds: float) -> TuneState:
    """The outer step taken after a diverged inner run: +1 hypergradient on every lr value."""
    if "lr" not in optimizer.learn:
        raise InnerRunDiverged("the inner run diverged and the learning rate is not learned; "
                               "lower the learning rate", None, None)
    grads = {n: torch.zeros_like(state.schedule.values[n]) for n in optimizer.learn}
    grads["lr"] = torch.ones_like(state.schedule.values["lr"])
    schedule, opt_state = optimizer.update(state.schedule, grads, state.optimizer_state)
    record = OuterStepRecord(
        outer_step=state.next_outer_step, schedule=state.schedule.to_dict(),
        hypergradients={n: g.tolist() for n, g in grads.items()}, replica_hypergradients=[],
        val_loss=math.inf, replica_val_losses=[],
        step_sizes={n: v.tolist() for n, v in opt_state.step_sizes.items()}, seconds=seconds,
        converged=False)
    return TuneState(schedule, opt_state, state.next_outer_step + 1, False,
                     state.history + (record,))


def fds_method(problem: ClassificationProblem, space: SearchSpace, budget: float,
               cost_model: CostModel, seed: int = 0, outer_steps: int = 10,
               step_sizes: Mapping[str, float] | None = None, replicas: int = 1,
               init: Mapping[str, float] | None = None, decay: float = 0.5,
               tol: float = 0.05) -> MethodResult:
    """Budgeted FDS (see module docstring). ``seed`` is unused: FDS is deterministic given the
    problem, whose own seed fixes splits, initialisation and batch order."""
    del seed
    optimizer = SignOptimizer(step_sizes, decay, tol)
    schedule = initial_schedule(space, init)
    per_outer = Ledger()
    for _ in range(replicas):
        per_outer = per_outer + fds_run_ledger(schedule, optimizer.learn,
                                               validation_examples(problem))
    steps = min(outer_steps, affordable(budget, per_outer.cost(cost_model), "FDS outer step"))
    state = TuneState(schedule, optimizer.init(schedule))
    ledger, incumbents, diverged = Ledger(), [], 0
    started = time.perf_counter()
    while state.next_outer_step < steps and not state.converged:
        step_started = time.perf_counter()
        try:
            results = [run_replica(problem, state.schedule, optimizer.learn,
                                   state.next_outer_step, r, nn.functional.cross_entropy)
                       for r in range(replicas)]
            state = apply_outer_update(optimizer, state, results,
                                       time.perf_counter() - step_started)
        except InnerRunDiverged:
            diverged += 1
            state = lower_lr_step(optimizer, state, time.perf_counter() - step_started)
        ledger = ledger + per_outer
        incumbents.append(Incumbent(ledger.cost(cost_model), time.perf_counter() - started,
                                    state.history[-1].val_loss, state.schedule))
    ledger = ledger.with_seconds(time.perf_counter() - started)
    return MethodResult(
        "fds", state.schedule, state.history[-1].val_loss, ledger, ledger.cost(cost_model),
        budget, tuple(incumbents),
        {"outer_steps": state.next_outer_step, "converged": state.converged,
         "diverged_steps": diverged, "replicas": replicas,
         "val_losses": [r.val_loss for r in state.history]})

"""Multi-fidelity search: Optuna's TPE sampler with its Hyperband pruner (Optuna's BOHB analogue).

The space is ``tpe``'s: one uniform parameter per segment value (``lr_0``, ..., ``momentum_0``,
``weight_decay_0``), sampled by ``TPESampler(seed)``. Each trial trains over the *final* horizon
T_f (``space.final_steps``) with those values and measures its validation loss (as every trial
does: :func:`~fdshpo.baselines.space.score_model`) at the rungs

    step r_k = ceil(T_f * eta^k / R)     k = 0 .. log_eta(R) - 1
             (default eta = 3, R = 27: T_f/27, T_f/9, T_f/3)

reporting it as resource eta^k to ``HyperbandPruner(min_resource=1, max_resource=R,
reduction_factor=eta)``: a pruned trial stops there; one that survives every rung trains to T_f
and its final validation loss is its value. The early rungs are the cheap fidelities, so this
search needs no stretching shortcut (its trials already run at the final horizon).

Every trial is charged for what it ran, in plain-step equivalents:

    trial = steps trained + (validation passes made) * (validation examples)

A trial whose training diverges stops there (charged for the steps it ran, value
``DIVERGED_LOSS``). The search stops when the budget cannot pay for the next stretch of training
and its measurement; a trial cut there is not a candidate. The pick is the completed trial with
the lowest final validation loss, returned over the search horizon ``space.num_steps`` with the
same segment values: stretched to T_f it is exactly the schedule that trial trained with.

Fair start: the first trial is the initial schedule (enqueued, as in ``tpe``). The first trial is
never pruned (a rung's first entrant is promoted), so the smallest budget is one full trial. The
study's name is fixed (Hyperband assigns a trial's bracket from a hash of the study name and the
trial number), so a seeded search repeats itself, and it does not depend on its budget except for
when it stops: its incumbent after spending b of B >= b is what it returns with budget b.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import optuna
import torch
from torch import nn

from ..engines.inner import init_state, load_state, train
from ..schedule import Schedule, segment_index
from ..tune.problem import ClassificationProblem
from .budget import CostModel, Ledger
from .fds import initial_schedule
from .search import quiet_optuna, segment_params, segment_values
from .space import (
    DIVERGED_LOSS,
    Incumbent,
    MethodResult,
    SearchSpace,
    affordable,
    score_model,
    validation_examples,
)


def rungs(final_steps: int, reduction_factor: int = 3, max_resource: int = 27
          ) -> list[tuple[int, int]]:
    """(step r_k, resource eta^k) of every rung below T_f (module docstring), steps increasing;
    when short horizons round two rungs to one step, it reports the larger resource.

    Raises ValueError unless eta >= 2 and R is a power of eta (R >= eta).
    """
    if reduction_factor < 2:
        raise ValueError(f"the reduction factor must be at least 2, got {reduction_factor}")
    levels = round(math.log(max_resource, reduction_factor))
    if levels < 1 or reduction_factor ** levels != max_resource:
        raise ValueError(f"max_resource must be a power of the reduction factor "
                         f"{reduction_factor} (e.g. {reduction_factor ** 3}), got {max_resource}")
    found: dict[int, int] = {}
    for k in range(levels):
        step = -(-final_steps * reduction_factor ** k // max_resource)
        if step < final_steps:
            found[step] = reduction_factor ** k
    return sorted(found.items())


def rung_steps(final_steps: int, reduction_factor: int = 3, max_resource: int = 27) -> list[int]:
    """The steps of :func:`rungs`."""
    return [step for step, _ in rungs(final_steps, reduction_factor, max_resource)]


def window(schedule: Schedule, start: int, stop: int) -> Schedule:
    """Steps [start, stop) of ``schedule`` as a schedule of their own (one segment per step):
    training with it from the state reached at ``start`` continues the run exactly."""
    t = torch.arange(start, stop)
    values = {n: v[segment_index(t, v.numel(), schedule.num_steps)]
              for n, v in schedule.values.items()}
    return Schedule(stop - start, values, schedule.bounds)


def full_trial(space: SearchSpace, val_examples: int, reduction_factor: int = 3,
               max_resource: int = 27) -> Ledger:
    """The work of a trial that is never pruned: T_f steps and a measurement at every rung
    and at the end (the smallest budget this search accepts)."""
    measurements = len(rung_steps(space.final_steps, reduction_factor, max_resource)) + 1
    return Ledger(plain_steps=space.final_steps, eval_examples=measurements * val_examples)


def hyperband_search(problem: ClassificationProblem, space: SearchSpace, budget: float,
                     cost_model: CostModel, seed: int = 0,
                     init: Mapping[str, object] | None = None, reduction_factor: int = 3,
                     max_resource: int = 27) -> MethodResult:
    """TPE + Hyperband over the space's segment values at the final horizon (module docstring).

    Raises ValueError when the budget cannot pay for one full trial (it names that cost).
    """
    T = space.final_steps
    n_val = validation_examples(problem)
    measured = rungs(T, reduction_factor, max_resource)
    stops, resources = [step for step, _ in measured] + [T], [r for _, r in measured]
    affordable(budget, full_trial(space, n_val, reduction_factor, max_resource).cost(cost_model),
               "hyperband trial at the final horizon (with its rung measurements)")
    started = time.perf_counter()
    ledger, best, incumbents, trials = Ledger(), None, [], []

    def stretch(done: int, stop: int) -> Ledger:
        return Ledger(plain_steps=stop - done, eval_examples=n_val)

    with quiet_optuna():
        study = optuna.create_study(
            study_name=f"hyperband-{seed}", direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.HyperbandPruner(1, max_resource, reduction_factor))
        study.enqueue_trial(segment_params(initial_schedule(space, init)))
        while (ledger + stretch(0, stops[0])).cost(cost_model) <= budget:
            trial = study.ask()
            pick = segment_values(trial, space)
            schedule = pick.stretched(T)
            task = problem(0, 0, T)
            batches = iter(task.train_batches)
            state, done, outcome, loss = init_state(task.model), 0, "complete", DIVERGED_LOSS
            for k, stop in enumerate(stops):
                work = stretch(done, stop)
                if (ledger + work).cost(cost_model) > budget:
                    outcome = "cut"
                    break
                ran = [0]
                try:
                    state = train(task.model, nn.functional.cross_entropy, batches,
                                  window(schedule, done, stop), state._replace(step=0),
                                  on_step=lambda t, _, ran=ran: ran.__setitem__(0, t + 1))
                except FloatingPointError:  # the failing step was computed: charge it too
                    ledger = ledger + Ledger(plain_steps=ran[0] + 1)
                    done, outcome, loss = done + ran[0] + 1, "diverged", DIVERGED_LOSS
                    break
                ledger, done = ledger + work, stop
                loss = score_model(load_state(task.model, state), task.val_batches)
                if stop < T:
                    trial.report(loss, resources[k])
                    if trial.should_prune():
                        outcome = "pruned"
                        break
            trials.append({"number": trial.number, "outcome": outcome, "steps": done,
                           "val_loss": loss})
            if outcome == "cut":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
            if outcome == "pruned":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, loss)
                if best is None or loss < best[0]:
                    best = (loss, pick)
            incumbents.append(Incumbent(ledger.cost(cost_model), time.perf_counter() - started,
                                        best[0], best[1]))
    ledger = ledger.with_seconds(time.perf_counter() - started)
    outcomes = [t["outcome"] for t in trials]
    return MethodResult(
        "hyperband", best[1], best[0], ledger, ledger.cost(cost_model), budget,
        tuple(incumbents),
        {"trials": len(trials), **{o: outcomes.count(o) for o in
                                   ("complete", "pruned", "diverged", "cut")},
         "final_steps": T, "rung_steps": stops[:-1], "reduction_factor": reduction_factor,
         "max_resource": max_resource, "first_trial": study.trials[0].params,
         "trial_log": trials})

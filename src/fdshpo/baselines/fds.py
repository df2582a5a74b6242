"""FDS itself as a budgeted method, so the comparison runs it through the same contract.

One outer step costs ``replicas`` inner runs of the hypergradient engine over the horizon,

    outer = replicas * (one engine run + validation gradient)
    (fdshpo.baselines.budget.fds_run_ledger:
            forward mode sum_t engines.forward_step(live columns at t); reverse mode both sweeps)

charged for the engine that runs it (``engine="auto"``: the cheaper by the cost model's own
prices, :func:`fdshpo.baselines.budget.fds_engine`; the run then uses that engine), and with a
budget B
the method runs outer steps of :class:`fdshpo.tune.step.OuterStep` (the same step the library's
tune loop and the pipeline take) while the next one is affordable and at most ``outer_steps`` in
all, stopping earlier when every learned value has converged (with ``continue_to``, when it has
converged on that horizon: the loop goes on over doubled horizons, each outer step priced for its
own horizon). A diverged inner run lowers
every learning rate (``on_diverged="lower_lr"``) and is still paid for. The pick is chosen by
``select`` (:func:`fdshpo.tune.step.select_schedule`); the incumbent after each outer step is
what the same rule picks from the steps so far, so a run at a smaller budget returns exactly the
incumbent at that budget. The initial schedule is the space's lower bounds (the paper starts
from 0) unless ``init`` is given.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ..engines.base import EngineChoice
from ..schedule import HYPERPARAMETERS, Schedule
from ..tune.problem import ClassificationProblem
from ..tune.sign import DEFAULT_GROW, SignOptimizer
from ..tune.step import OuterStep, check_selection_rule, select_schedule, selected_record
from .budget import CostModel, Ledger, fds_engine, fds_run_ledger
from .space import Incumbent, MethodResult, SearchSpace, affordable, validation_examples


def initial_schedule(space: SearchSpace, init: Mapping[str, float] | None = None):
    """The space's lower bounds, or ``init``'s values (scalars or per-segment lists)."""
    values = {n: space.bounds[n][0] for n in HYPERPARAMETERS}
    values.update(dict(init or {}))
    return space.schedule(values)


def fds_outer_work(problem: ClassificationProblem, schedule: Schedule, learn,
                   cost_model: CostModel, engine: str = "auto", replicas: int = 1
                   ) -> tuple[Ledger, EngineChoice]:
    """(the work of one outer step from ``schedule``, the engine that does it): ``replicas``
    inner runs of the engine :func:`~fdshpo.baselines.budget.fds_engine` picks for ``problem``."""
    choice = fds_engine(problem.model(0), schedule, learn, cost_model, engine)
    run = fds_run_ledger(schedule, learn, validation_examples(problem), choice.engine,
                         choice.recompute_every)
    return sum([run] * replicas, Ledger()), choice


def fds_method(problem: ClassificationProblem, space: SearchSpace, budget: float,
               cost_model: CostModel, seed: int = 0, outer_steps: int = 10,
               step_sizes: Mapping[str, float] | None = None, replicas: int = 1,
               init: Mapping[str, float] | None = None, decay: float = 0.5,
               tol: float = 0.05, multiplicative: Sequence[str] = (),
               backtrack: bool = False, select: str = "best", engine: str = "auto",
               grow: float = DEFAULT_GROW, continue_to: int | None = None) -> MethodResult:
    """Budgeted FDS (see module docstring). ``seed`` is unused: FDS is deterministic given the
    problem, whose own seed fixes splits, initialisation and batch order. ``engine``: the
    hypergradient engine ("auto", "forward" or "reverse"); the one chosen is in the details.
    ``grow``: :class:`~fdshpo.tune.sign.SignOptimizer`'s; ``continue_to``:
    :class:`~fdshpo.tune.step.OuterStep`'s."""
    del seed
    optimizer = SignOptimizer(step_sizes, decay, tol, multiplicative, backtrack, grow)
    schedule = initial_schedule(space, init)
    check_selection_rule(select)  # before any work
    per_outer, choice = fds_outer_work(problem, schedule, optimizer.learn, cost_model, engine,
                                       replicas)
    affordable(budget, per_outer.cost(cost_model), "FDS outer step")  # at least one, or say so
    work = {schedule.num_steps: (per_outer, choice)}
    ledger, incumbents = Ledger(), []
    state = OuterStep(optimizer).init(schedule)
    started = time.perf_counter()
    while state.next_outer_step < outer_steps and not state.converged:
        horizon = state.schedule.num_steps
        if horizon not in work:  # a continued loop: the longer horizon's price and engine
            work[horizon] = fds_outer_work(problem, state.schedule, optimizer.learn, cost_model,
                                           engine, replicas)
        per_outer, choice = work[horizon]
        if (ledger + per_outer).cost(cost_model) > budget * (1 + 1e-9):
            break
        outer = OuterStep(optimizer, replicas, continue_to=continue_to, engine_options={
            "engine": choice.engine, "recompute_every": choice.recompute_every})
        state = outer.step(problem, state)
        ledger = ledger + per_outer
        scored = selected_record(state, select) or state.history[-1]
        incumbents.append(Incumbent(ledger.cost(cost_model), time.perf_counter() - started,
                                    scored.val_loss, select_schedule(state, select)))
    ledger = ledger.with_seconds(time.perf_counter() - started)
    history = state.history
    return MethodResult(
        "fds", select_schedule(state, select), incumbents[-1].val_loss, ledger,
        ledger.cost(cost_model), budget, tuple(incumbents),
        {"outer_steps": state.next_outer_step, "converged": state.converged,
         "diverged_steps": sum(bool(r.diverged_replicas) for r in history),
         "replicas": replicas, "select": select, "engine": work[schedule.num_steps][1].to_dict(),
         "horizons": [r.schedule["num_steps"] for r in history],
         "val_losses": [r.val_loss for r in history]})

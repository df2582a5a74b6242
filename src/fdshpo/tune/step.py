"""One FDS outer step, written once.

From a :class:`~fdshpo.tune.state.TuneState` with schedule lambda_s:

    for each replica r:    result_r = run_replica(make_task, state, r)
                           (one inner run with tangents: validation loss and hypergradients,
                            or the divergence it hit, and the seconds it took)
    apply(state, results):
        if every replica finished:  h = mean_r h_r                    (only its sign is used)
        else, by ``on_diverged``:
            "lower_lr"  h = +1 on every learning-rate segment, 0 elsewhere, so the sign step
                        lowers every learning rate by its step size (the step is still paid for)
            "raise"     InnerRunDiverged naming the replica, the inner step and the values
        lambda_{s+1}, sign state = optimizer.update(lambda_s, h, sign state, mean loss)
        with ``continue_to`` = T_max, once every value has converged on a horizon T < T_max:
            lambda_{s+1} = the best-validated schedule on T, stretched to min(2 T, T_max) steps,
            with a fresh sign state (the initial step sizes): the loop goes on over the longer
            horizon (the paper's runs also grow it: 1 epoch, then 10-epoch outer steps)
        record: the schedule used, h, each replica's h and loss, the step sizes after, the
                compute spent (the sum of the replicas' seconds, however they ran), and the
                engine that computed the hypergradients and why (``engine="auto"``'s choice,
                :class:`fdshpo.engines.choose.EngineChoice`, of the first replica that finished)

Every path runs these two methods: the library's :func:`fdshpo.tune.loop.tune` (``step`` runs the
replicas one after another, then ``apply``), the FDS baseline, the inline runner, and the KFP
pipeline (one inner component per replica calls ``run_replica``; the outer component calls
``apply`` on their collected results). So their records and their choices are the same.

A replica whose inner run diverges returns a result saying so rather than raising: a component
that diverged has nothing to retry, and the policy is applied once, in ``apply``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..engines.base import HypergradientResult, InnerRunDiverged
from ..engines.choose import hypergradient
from ..engines.forward import ForwardState
from ..engines.inner import LossFn
from ..engines.reverse import ReverseState
from ..schedule import Schedule
from .sign import SignOptimizer
from .state import InnerTask, OuterStepRecord, TaskFactory, TuneState

#: What ``apply`` does when a replica's inner run diverged (module docstring).
DIVERGENCE_POLICIES = ("lower_lr", "raise")


class ResumableInnerRun(Protocol):
    """What runs one replica's inner training resumably: the tracking layer's
    :class:`fdshpo.tracking.checkpoint.InnerCheckpointer` is one.

    ``run`` must return exactly what :func:`~fdshpo.hypergradient` returns for the same task.
    """

    def run(self, task: InnerTask, schedule: Schedule, learn: Sequence[str], loss_fn: LossFn,
            outer_step: int, replica: int,
            on_step: Callable[[ForwardState | ReverseState], None] | None = None,
            **engine_options) -> HypergradientResult: ...


@dataclass(frozen=True)
class ReplicaResult:
    """One replica's inner run of one outer step, as plain data (it crosses KFP tasks as JSON).

    ``grads`` is None and ``val_loss`` infinite when the run diverged; ``diverged`` then says
    where (``{"step", "hyperparameters", "message"}``). ``engine``: which engine ran and why
    (:meth:`fdshpo.engines.choose.EngineChoice.to_dict`; None when the run diverged).
    """

    outer_step: int
    replica: int
    val_loss: float
    grads: dict[str, list[float]] | None
    seconds: float
    diverged: dict | None = None
    engine: dict | None = None

    @classmethod
    def of(cls, outer_step: int, replica: int, result: HypergradientResult, seconds: float
           ) -> ReplicaResult:
        return cls(outer_step, replica, float(result.val_loss),
                   {n: torch.as_tensor(g, dtype=torch.float64).tolist()
                    for n, g in result.grads.items()}, float(seconds), None,
                   None if result.engine is None else result.engine.to_dict())

    @classmethod
    def of_divergence(cls, outer_step: int, replica: int, error: InnerRunDiverged,
                      seconds: float) -> ReplicaResult:
        return cls(outer_step, replica, math.inf, None, float(seconds), error.to_dict())

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping) -> ReplicaResult:
        grads = data.get("grads")
        return cls(int(float(data["outer_step"])), int(float(data["replica"])),
                   float(data["val_loss"]),
                   None if grads is None else {n: [float(x) for x in g]
                                               for n, g in grads.items()},
                   float(data.get("seconds", 0.0)), data.get("diverged"), data.get("engine"))


def mean_hypergradient(results: Sequence[ReplicaResult]) -> dict[str, torch.Tensor]:
    """Mean over replicas of each learned name's hypergradient vector (float64)."""
    if not results:
        raise ValueError("no replica hypergradients to combine")
    names = list(results[0].grads)
    return {n: torch.tensor([r.grads[n] for r in results], dtype=torch.float64).mean(0)
            for n in names}


def diverged_hypergradient(schedule: Schedule, learn: Sequence[str]) -> dict[str, torch.Tensor]:
    """The ``lower_lr`` policy's hypergradient: +1 on every learning-rate value, 0 elsewhere.

    Raises InnerRunDiverged when the learning rate is not learned (nothing to lower).
    """
    if "lr" not in learn:
        raise InnerRunDiverged("the inner run diverged and the learning rate is not learned; "
                               "lower the learning rate or its upper bound", None, None)
    grads = {n: torch.zeros_like(schedule.values[n]) for n in learn}
    grads["lr"] = torch.ones_like(schedule.values["lr"])
    return grads


@dataclass(frozen=True)
class OuterStep:
    """The outer step's settings; ``run_replica``, ``apply`` and ``step`` do the work.

    Args:
        optimizer: the sign optimiser; its step sizes name the learned hyperparameters.
        replicas: inner runs per outer step whose hypergradients are averaged.
        on_diverged: ``"lower_lr"`` or ``"raise"`` (module docstring).
        loss_fn: the training and validation loss.
        continue_to: None (stop once converged), or the longest horizon the loop goes on to
            after converging: each convergence on a shorter one doubles the horizon (module
            docstring); e.g. the final job's number of steps.
        engine_options: passed to :func:`~fdshpo.hypergradient`: ``engine`` ("auto",
            "forward", "reverse"), ``recompute_every`` (reverse mode's interval between stored
            trajectory states), clamps, HVP form, ``prices``/``memory_limit`` (what "auto"
            decides by). With ``prices="measure"`` the first inner run of a loop measures them
            and later outer steps reuse them (:meth:`engine_options_for`).
    """

    optimizer: SignOptimizer = field(default_factory=SignOptimizer)
    replicas: int = 1
    on_diverged: str = "lower_lr"
    loss_fn: LossFn = nn.functional.cross_entropy
    engine_options: Mapping = field(default_factory=dict)
    continue_to: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"replicas must be a positive int, got {self.replicas!r}")
        if self.continue_to is not None and not (
                isinstance(self.continue_to, int) and self.continue_to >= 1):
            raise ValueError(f"continue_to must be None or a positive number of inner steps, "
                             f"got {self.continue_to!r}")
        if self.on_diverged not in DIVERGENCE_POLICIES:
            raise ValueError(f"on_diverged must be one of {list(DIVERGENCE_POLICIES)}, got "
                             f"{self.on_diverged!r}")

    @property
    def learn(self) -> tuple[str, ...]:
        return self.optimizer.learn

    def init(self, schedule: Schedule) -> TuneState:
        """The state before the first outer step."""
        return TuneState(schedule, self.optimizer.init(schedule))

    def engine_options_for(self, state: TuneState) -> dict:
        """``engine_options``, where ``prices="measure"`` becomes the prices an earlier outer
        step of this loop measured (a loop measures once, and resumes with the same prices)."""
        options = dict(self.engine_options)
        if options.get("prices") == "measure":
            measured = [r.engine["prices"] for r in state.history
                        if r.engine and r.engine.get("prices")]
            if measured:
                options["prices"] = measured[-1]
        return options

    def run_replica(self, make_task: TaskFactory, state: TuneState, replica: int,
                    checkpointer: ResumableInnerRun | None = None,
                    on_step: Callable[[ForwardState | ReverseState], None] | None = None
                    ) -> ReplicaResult:
        """Replica ``replica``'s inner run on ``state.schedule`` (resumable with a
        ``checkpointer``, which resumes from its newest valid checkpoint and saves new ones)."""
        s, schedule = state.next_outer_step, state.schedule
        options = self.engine_options_for(state)
        started = time.perf_counter()
        task = make_task(s, replica, schedule.num_steps)
        try:
            if checkpointer is not None:
                result = checkpointer.run(task, schedule, self.learn, self.loss_fn, s, replica,
                                          on_step=on_step, **options)
            else:
                result = hypergradient(task.model, self.loss_fn, task.train_batches,
                                       task.val_batches, schedule, self.learn, on_step=on_step,
                                       **options)
        except InnerRunDiverged as error:
            return ReplicaResult.of_divergence(s, replica, error,
                                               time.perf_counter() - started)
        return ReplicaResult.of(s, replica, result, time.perf_counter() - started)

    def apply(self, state: TuneState, results: Sequence[ReplicaResult]) -> TuneState:
        """Combine the replicas' results, take one sign step, and record the outer step.

        Raises ValueError when a result belongs to another outer step or a replica is missing
        or repeated; InnerRunDiverged under ``on_diverged="raise"``.
        """
        s = state.next_outer_step
        results = sorted(results, key=lambda r: r.replica)
        if [r.replica for r in results] != list(range(self.replicas)) or any(
                r.outer_step != s for r in results):
            raise ValueError(
                f"outer step {s} needs the results of replicas 0..{self.replicas - 1} of that "
                f"step, got (outer step, replica) {[(r.outer_step, r.replica) for r in results]}")
        diverged = [r for r in results if r.diverged is not None]
        if diverged and self.on_diverged == "raise":
            first = diverged[0].diverged
            raise InnerRunDiverged(f"replica {diverged[0].replica} of outer step {s}: "
                                   f"{first['message']}", first["step"],
                                   first["hyperparameters"])
        h = (diverged_hypergradient(state.schedule, self.learn) if diverged
             else mean_hypergradient(results))
        losses = [r.val_loss for r in results]
        val_loss = math.fsum(losses) / len(losses)
        schedule, opt_state = self.optimizer.update(state.schedule, h, state.optimizer_state,
                                                    val_loss)
        converged = self.optimizer.converged(schedule, opt_state)
        record = OuterStepRecord(
            outer_step=s, schedule=state.schedule.to_dict(),
            hypergradients={n: g.tolist() for n, g in h.items()},
            replica_hypergradients=[r.grads for r in results if r.grads is not None],
            val_loss=val_loss, replica_val_losses=losses,
            step_sizes={n: v.tolist() for n, v in opt_state.step_sizes.items()},
            seconds=math.fsum(r.seconds for r in results), converged=converged,
            diverged_replicas=[r.replica for r in diverged],
            engine=next((r.engine for r in results if r.engine is not None), None))
        after = TuneState(schedule, opt_state, s + 1, converged, state.history + (record,))
        return self.continued(after) if converged else after

    def continued(self, state: TuneState) -> TuneState:
        """``state`` (converged) continued over a longer horizon, when ``continue_to`` has one
        left: the best-validated schedule so far stretched to min(2 T, continue_to) steps, with
        a fresh sign state (module docstring); else ``state`` itself."""
        horizon = state.schedule.num_steps
        if self.continue_to is None or horizon >= self.continue_to:
            return state
        best = state.best_record()
        start = state.schedule if best is None else Schedule.from_dict(best.schedule)
        longer = start.stretched(min(2 * horizon, self.continue_to))
        return TuneState(longer, self.optimizer.init(longer), state.next_outer_step, False,
                         state.history)

    def step(self, make_task: TaskFactory, state: TuneState,
             checkpointer: ResumableInnerRun | None = None,
             on_step: Callable[[int, ForwardState | ReverseState], None] | None = None
             ) -> TuneState:
        """Every replica in turn, then ``apply``. ``on_step(replica, inner state)`` after every
        inner step."""
        results = []
        for replica in range(self.replicas):
            hook = None if on_step is None else (lambda st, r=replica: on_step(r, st))
            results.append(self.run_replica(make_task, state, replica, checkpointer, hook))
        return self.apply(state, results)


#: How the tuned schedule is chosen from a finished loop (:func:`select_schedule`).
SELECTION_RULES = ("best", "last")


def check_selection_rule(rule: str) -> None:
    """ValueError naming the known rules when ``rule`` is not one of SELECTION_RULES."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"the selection rule must be one of {list(SELECTION_RULES)}, got "
                         f"{rule!r}")


def selected_record(state: TuneState, rule: str = "best") -> OuterStepRecord | None:
    """The outer step whose schedule ``rule`` picks: for ``"best"`` the one with the lowest
    validation loss (each outer step measures its schedule's loss anyway, so this costs
    nothing); None for ``"last"`` (the last iterate is never validated) and when no step
    finished an inner run."""
    check_selection_rule(rule)
    return state.best_record() if rule == "best" else None


def select_schedule(state: TuneState, rule: str = "best") -> Schedule:
    """The schedule a finished loop returns: that of :func:`selected_record`, else the last
    iterate ``state.schedule`` (after the last update)."""
    record = selected_record(state, rule)
    return state.schedule if record is None else Schedule.from_dict(record.schedule)

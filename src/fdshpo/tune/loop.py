"""The FDS outer loop as a library call.

For outer step s = 0, 1, ... until every learned value has converged or ``outer_steps`` is spent:

    state = OuterStep.step(make_task, state)       (the replicas' inner runs, then the sign step;
                                                    fdshpo.tune.step, shared by every path)

and at the end the tuned schedule is chosen from the history by ``select`` ("best": the schedule
with the lowest validation loss any outer step measured; "last": the last iterate).

The loop is a pure function of its inputs and the explicit :class:`TuneState`, which a callback
receives after every outer step (to checkpoint it) and which ``tune(..., resume=state)`` continues
from. It prints nothing: ``progress`` receives :class:`InnerProgress` after every inner step and
:class:`OuterProgress` after every outer step, for a caller to render
(:class:`fdshpo.tune.console.ConsoleProgress` draws a bar and one line per outer step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..engines.forward import ForwardState
from ..engines.inner import LossFn
from ..engines.reverse import ReverseState
from ..schedule import Schedule
from .sign import SignOptimizer
from .state import InnerTask, OuterStepRecord, TaskFactory, TuneState
from .step import (
    OuterStep,
    ReplicaResult,
    ResumableInnerRun,
    check_selection_rule,
    select_schedule,
)

__all__ = ["ResumableInnerRun", "InnerProgress", "InnerTask", "OuterProgress", "OuterStep",
           "OuterStepRecord", "ReplicaResult", "TaskFactory", "TuneResult", "TuneState",
           "tune"]


@dataclass(frozen=True)
class TuneResult:
    """The tuned schedule (by the ``select`` rule), whether the loop converged, its history."""

    schedule: Schedule
    converged: bool
    history: tuple[OuterStepRecord, ...]
    state: TuneState


@dataclass(frozen=True)
class InnerProgress:
    """Inner progress ``step`` (1-based) of ``num_steps`` done, in a replica of an outer step
    (``num_steps``: T for the forward engine; 2T for reverse mode, whose backward sweep
    counts too)."""

    outer_step: int
    outer_steps: int
    replica: int
    replicas: int
    step: int
    num_steps: int


@dataclass(frozen=True)
class OuterProgress:
    """Outer step ``record.outer_step`` done (of at most ``outer_steps``)."""

    record: OuterStepRecord
    outer_steps: int


Progress = Callable[[InnerProgress | OuterProgress], None]


def tune(
    make_task: TaskFactory,
    schedule: Schedule,
    optimizer: SignOptimizer | None = None,
    *,
    loss_fn: LossFn = nn.functional.cross_entropy,
    outer_steps: int = 10,
    replicas: int = 1,
    on_diverged: str = "lower_lr",
    select: str = "best",
    resume: TuneState | None = None,
    callback: Callable[[TuneState], None] | None = None,
    progress: Progress | None = None,
    checkpointer: ResumableInnerRun | None = None,
    **engine_options,
) -> TuneResult:
    """Learn ``schedule``'s values by sign descent on exact FDS hypergradients.

    Args:
        make_task: ``(outer_step, replica, num_steps) -> InnerTask`` (fresh batches each call).
        schedule: the initial schedule (horizon, segments, bounds).
        optimizer: the outer optimiser; its step sizes name the learned hyperparameters.
        outer_steps: the outer-step budget (the loop stops earlier once converged).
        replicas: inner runs per outer step whose hypergradients are averaged.
        on_diverged: what a diverged inner run does (:mod:`fdshpo.tune.step`): ``"lower_lr"``
            (lower every learning rate by its step) or ``"raise"``.
        select: ``"best"`` (the best-validated schedule) or ``"last"`` (the last iterate).
        resume: a :class:`TuneState` from an earlier call's callback to continue from.
        callback: called with the new :class:`TuneState` after every outer step.
        progress: called after every inner and every outer step (module docstring).
        checkpointer: resumable inner runs (:class:`ResumableInnerRun`); with ``resume`` and a
            checkpointing ``callback`` a killed run continues where it stopped.
        engine_options: :func:`~fdshpo.hypergradient`'s options: ``engine`` ("auto", the
            default, "forward" or "reverse"), ``recompute_every``, ``grad_clamp``,
            ``hvp_clamp``, ``hvp``, ``prices``, ``memory_limit``. With ``prices="measure"`` the
            first inner run measures them and the rest reuse them. Each outer step's record
            says which engine ran and why (``record.engine``).
    """
    if not isinstance(outer_steps, int) or outer_steps < 1:
        raise ValueError(f"outer_steps must be a positive int, got {outer_steps!r}")
    check_selection_rule(select)  # before any work
    outer = OuterStep(optimizer or SignOptimizer(), replicas, on_diverged, loss_fn,
                      engine_options)
    state = resume or outer.init(schedule)
    while state.next_outer_step < outer_steps and not state.converged:
        hook = None
        if progress is not None:
            def hook(replica: int, inner: ForwardState | ReverseState,
                     s=state.next_outer_step) -> None:
                progress(InnerProgress(s, outer_steps, replica, replicas, inner.step,
                                       inner.total_steps))
        state = outer.step(make_task, state, checkpointer, hook)
        if progress is not None:
            progress(OuterProgress(state.history[-1], outer_steps))
        if callback is not None:
            callback(state)
    return TuneResult(select_schedule(state, select), state.converged, state.history, state)

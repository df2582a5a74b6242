"""The FDS outer loop as a library call.

For outer step s = 0, 1, ... until every learned value has converged or ``outer_steps`` is spent:

    for each replica r:  (model_r, train_r, val_r) = make_task(s, r, T)
                         h_r = hypergradient(model_r, train_r, val_r, schedule)
    h = mean_r h_r                              (only its sign is used)
    schedule, opt_state = optimizer.update(schedule, h, opt_state)

The loop is a pure function of its inputs and the explicit :class:`TuneState`, which a callback
receives after every outer step (to checkpoint it) and which ``tune(..., resume=state)`` continues
from. The pipeline's components call the same :func:`run_replica` and :func:`apply_outer_update`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from .forward import Batch, ForwardState, HypergradientResult, hypergradient
from .inner import LossFn
from .outer import SignOptimizer, SignState
from .schedule import Schedule


@dataclass(frozen=True)
class InnerTask:
    """One replica's inner problem: the network at theta_0 and its batch streams."""

    model: nn.Module
    train_batches: Iterable[Batch]
    val_batches: Iterable[Batch]


#: ``make_task(outer_step, replica, num_steps) -> InnerTask``; seeds are the factory's to derive.
TaskFactory = Callable[[int, int, int], InnerTask]


class InnerCheckpointer(Protocol):
    """Runs one replica's inner training resumably (:class:`fdshpo.checkpoint.InnerCheckpointer`).

    ``run`` must return exactly what :func:`~fdshpo.hypergradient` returns for the same task.
    """

    def run(self, task: InnerTask, schedule: Schedule, learn: Sequence[str], loss_fn: LossFn,
            outer_step: int, replica: int,
            on_step: Callable[[ForwardState], None] | None = None,
            **engine_options) -> HypergradientResult: ...


@dataclass(frozen=True)
class OuterStepRecord:
    """What one outer step saw: the schedule it used, hypergradients, losses, step sizes after."""

    outer_step: int
    schedule: dict
    hypergradients: dict[str, list[float]]
    replica_hypergradients: list[dict[str, list[float]]]
    val_loss: float
    replica_val_losses: list[float]
    step_sizes: dict[str, list[float]]
    seconds: float
    converged: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping) -> OuterStepRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TuneState:
    """Everything needed to continue the outer loop: a checkpoint is ``to_dict()`` of this."""

    schedule: Schedule
    optimizer_state: SignState
    next_outer_step: int = 0
    converged: bool = False
    history: tuple[OuterStepRecord, ...] = field(default_factory=tuple)

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


@dataclass(frozen=True)
class TuneResult:
    """The learned schedule, whether it converged, and the per-outer-step history."""

    schedule: Schedule
    converged: bool
    history: tuple[OuterStepRecord, ...]
    state: TuneState


def _as_lists(grads: Mapping[str, torch.Tensor]) -> dict[str, list[float]]:
    return {n: torch.as_tensor(g, dtype=torch.float64).tolist() for n, g in grads.items()}


def combine_hypergradients(per_replica: Sequence[Mapping[str, Sequence[float]]]
                           ) -> dict[str, torch.Tensor]:
    """Mean over replicas of each learned name's hypergradient vector."""
    if not per_replica:
        raise ValueError("no replica hypergradients to combine")
    names = list(per_replica[0])
    return {n: torch.stack([torch.as_tensor(r[n], dtype=torch.float64) for r in per_replica]
                           ).mean(0) for n in names}


def run_replica(
    make_task: TaskFactory, schedule: Schedule, learn: Sequence[str], outer_step: int,
    replica: int, loss_fn: LossFn, on_step: Callable[[ForwardState], None] | None = None,
    checkpointer: InnerCheckpointer | None = None, **engine_options,
) -> HypergradientResult:
    """Hypergradients of one replica of one outer step (what the inner-training component runs).

    With a ``checkpointer`` the inner run is delegated to ``checkpointer.run(...)``, which
    resumes from its newest valid checkpoint and saves new ones as it goes.
    """
    task = make_task(outer_step, replica, schedule.num_steps)
    if checkpointer is not None:
        return checkpointer.run(task, schedule, learn, loss_fn, outer_step, replica,
                                on_step=on_step, **engine_options)
    return hypergradient(task.model, loss_fn, task.train_batches, task.val_batches, schedule,
                         learn, on_step=on_step, **engine_options)


def apply_outer_update(
    optimizer: SignOptimizer, state: TuneState, results: Sequence[HypergradientResult],
    seconds: float,
) -> TuneState:
    """Combine the replicas' hypergradients, take one sign step, and record the outer step."""
    replica_grads = [_as_lists(r.grads) for r in results]
    mean = combine_hypergradients(replica_grads)
    schedule, opt_state = optimizer.update(state.schedule, mean, state.optimizer_state)
    converged = optimizer.converged(schedule, opt_state)
    losses = [float(r.val_loss) for r in results]
    record = OuterStepRecord(
        outer_step=state.next_outer_step, schedule=state.schedule.to_dict(),
        hypergradients=_as_lists(mean), replica_hypergradients=replica_grads,
        val_loss=sum(losses) / len(losses), replica_val_losses=losses,
        step_sizes=_as_lists(opt_state.step_sizes), seconds=seconds, converged=converged)
    return TuneState(schedule, opt_state, state.next_outer_step + 1, converged,
                     state.history + (record,))


def tune(
    make_task: TaskFactory,
    schedule: Schedule,
    optimizer: SignOptimizer | None = None,
    *,
    loss_fn: LossFn = nn.functional.cross_entropy,
    outer_steps: int = 10,
    replicas: int = 1,
    resume: TuneState | None = None,
    callback: Callable[[TuneState], None] | None = None,
    progress: bool = False,
    checkpointer: InnerCheckpointer | None = None,
    **engine_options,
) -> TuneResult:
    """Learn ``schedule``'s values by sign descent on exact FDS hypergradients.

    Args:
        make_task: ``(outer_step, replica, num_steps) -> InnerTask`` (fresh batches each call).
        schedule: the initial schedule (horizon, segments, bounds).
        optimizer: the outer optimiser; its step sizes name the learned hyperparameters.
        outer_steps: the outer-step budget (the loop stops earlier once converged).
        replicas: inner runs per outer step whose hypergradients are averaged.
        resume: a :class:`TuneState` from an earlier call's callback to continue from.
        callback: called with the new :class:`TuneState` after every outer step.
        progress: print one summary line per outer step, and a progress bar over the inner
            steps when stderr is a terminal (tqdm).
        checkpointer: resumable inner runs (:class:`InnerCheckpointer`); with ``resume`` and a
            checkpointing ``callback`` a killed run continues where it stopped.
        engine_options: ``grad_clamp`` / ``hvp_clamp`` for :class:`~fdshpo.ForwardEngine`.
    """
    optimizer = optimizer or SignOptimizer()
    if not isinstance(outer_steps, int) or outer_steps < 1:
        raise ValueError(f"outer_steps must be a positive int, got {outer_steps!r}")
    if not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be a positive int, got {replicas!r}")
    state = resume or TuneState(schedule, optimizer.init(schedule))
    bar = _progress_bar(progress, state.schedule.num_steps)
    try:
        while state.next_outer_step < outer_steps and not state.converged:
            started = time.perf_counter()
            results = []
            for replica in range(replicas):
                if bar is not None:
                    bar.reset()
                    bar.set_description(
                        f"outer step {state.next_outer_step + 1}/{outer_steps}"
                        + (f" replica {replica + 1}/{replicas}" if replicas > 1 else ""))
                results.append(run_replica(
                    make_task, state.schedule, optimizer.learn, state.next_outer_step, replica,
                    loss_fn, on_step=None if bar is None else _bar_updater(bar),
                    checkpointer=checkpointer, **engine_options))
            state = apply_outer_update(optimizer, state, results,
                                       time.perf_counter() - started)
            if bar is not None:
                bar.write(_summary(state.history[-1]), file=sys.stderr)
            if callback is not None:
                callback(state)
    finally:
        if bar is not None:
            bar.close()
    return TuneResult(state.schedule, state.converged, state.history, state)


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: the bar itself only draws on a terminal; bar.write lines always print
    return tqdm(total=total, unit="step", leave=False, mininterval=0.5, disable=None)


def _bar_updater(bar) -> Callable[[ForwardState], None]:
    def update(state: ForwardState) -> None:
        bar.update(1)

    return update


def _summary(record: OuterStepRecord) -> str:
    signs = " ".join(f"{n}:{''.join('+' if g > 0 else '-' if g < 0 else '0' for g in gs)}"
                     for n, gs in record.hypergradients.items())
    return (f"outer step {record.outer_step + 1}: val loss {record.val_loss:.4f}, "
            f"hypergradient signs {signs}, {record.seconds:.1f}s"
            + (", converged" if record.converged else ""))

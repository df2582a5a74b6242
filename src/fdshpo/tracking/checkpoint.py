"""Checkpoint and resume: inner runs every N steps, the outer loop after every outer step.

Inner checkpoint (``layout.inner_checkpoint``): the engine's whole state
(:class:`~fdshpo.ForwardState`: theta, velocity, tangents Z and C, training losses, step; or
:class:`~fdshpo.ReverseState`: the same for the forward sweep plus the stored trajectory states,
adjoints and hypergradients so far of the backward sweep), which engine it belongs to and why it
was chosen, the torch CPU RNG state, and a fingerprint of what the run computes (schedule,
learned names, outer step, replica, engine options, sizes). A resumed run continues with the
engine of its checkpoint. The data order needs nothing more: a task's batch stream is a function
of its seed and the step (:class:`~fdshpo.data.batches.ShuffledBatches` restarts at any step;
any other iterable is advanced past the steps already done,
:func:`fdshpo.engines.replay.stream_from`).
Resuming therefore repeats exactly the computation an uninterrupted run does: the
hypergradients are bit-identical on the CPU, under either engine.

A finished replica's result goes to ``layout.replica_result`` and its inner checkpoints are
removed; a rerun of that replica returns the stored result without training.

A data-parallel inner run (``group=`` among the engine options, :mod:`fdshpo.engines.shards`)
is checkpointed the same way, by rank 0 alone: rank 0 reads the store and decides (the stored
result, else the newest intact checkpoint of this run, else a fresh start) and broadcasts that
decision (the result itself, or the checkpoint's key and sha256); every other rank reads that
very checkpoint (its sha256 checked against rank 0's), so all ranks resume from the same bytes
and RNG state; a rank that cannot read it fails every rank, naming it. Only rank 0 writes
checkpoints and the result. The ranks' engine states are bitwise equal at every step (each
applies the same update to the same all-reduced values; tests/test_ranks_resume.py compares
them), except the fields in :data:`RANK_OWN`: reverse mode's fingerprints of the batches each
rank read, which are its own shard's. Those are gathered from every rank when a checkpoint is
saved (one all_reduce), kept in it per rank, and each rank resumes with its own. So rank 0's
checkpoint holds every rank's state, and a resumed data-parallel run repeats the uninterrupted
one bit for bit on the CPU. A checkpoint resumes only a run with as many ranks (the number of
ranks is part of the fingerprint of the run).

Outer checkpoint (``layout.outer_checkpoint``): ``TuneState.to_dict()`` after each outer step.
:meth:`OuterCheckpointer.latest` returns the newest checkpoint that reads back intact (sha256
checked), so a checkpoint cut short by a crash is skipped, never trusted.

Only a *damaged* artifact (:class:`~fdshpo.store.IntegrityError`, or bytes that do not decode)
is skipped or replaced. Any other store error (an unreachable endpoint, refused credentials),
which the store has already retried for its deadline, is raised: a network blip must never
turn into an overwrite of a finished checkpoint or a silent resume from older state.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from ..engines.base import EngineChoice, HypergradientResult
from ..engines.choose import CHOICE_OPTIONS, make_engine, prepare_engine
from ..engines.flat import Footprint
from ..engines.forward import ForwardState
from ..engines.inner import LossFn
from ..engines.reverse import ReverseState
from ..engines.shards import ShardGroup
from ..schedule import Schedule
from ..store.base import ArtifactNotFound, ArtifactStore, IntegrityError, StoreError
from ..store.layout import RunLayout
from ..tune.state import InnerTask, TuneState

#: Default inner checkpoint interval in steps (bench/store.py: well under 5% of a step's time).
DEFAULT_EVERY = 200
STATES = {"forward": ForwardState, "reverse": ReverseState}
#: engine -> the state fields that differ between the ranks of a data-parallel run
RANK_OWN = {"forward": (), "reverse": ("fingerprints",)}
EngineState = ForwardState | ReverseState


def settings_digest(schedule: Schedule, learn: Sequence[str], outer_step: int, replica: int,
                    ranks: int = 1, **engine_options) -> str:
    """sha256 naming what an inner run computes; a checkpoint only resumes an equal run.

    ``prices`` and ``memory_limit`` only steer ``engine="auto"``'s choice, which a checkpoint
    records itself: they are left out. ``group`` is named by its number of ``ranks`` (> 1: a
    data-parallel run)."""
    options = {k: v for k, v in engine_options.items()
               if k not in CHOICE_OPTIONS and k != "group"}
    settings = {"schedule": schedule.to_dict(), "learn": list(learn),
                "outer_step": outer_step, "replica": replica,
                "engine": {k: options[k] for k in sorted(options)}}
    if ranks > 1:
        settings["ranks"] = ranks
    blob = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def encode_state(state: EngineState, meta: dict) -> bytes:
    """``torch.save`` bytes of the engine's state (CPU tensors), the RNG state and ``meta``."""
    buffer = io.BytesIO()
    torch.save({"engine": state.engine, "state": state.to_tensors(),
                "rng": torch.get_rng_state(), "meta": meta}, buffer)
    return buffer.getvalue()


def decode_state(data: bytes, device: torch.device | str = "cpu"
                 ) -> tuple[EngineState, torch.Tensor, dict]:
    """(state on ``device``, CPU RNG state, meta) from :func:`encode_state` bytes."""
    raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    state = STATES[raw["engine"]].from_tensors(raw["state"], device)
    return state, raw["rng"], raw["meta"]


def encode_result(result: HypergradientResult, fp: str, seconds: float) -> dict:
    return {"fingerprint": fp, "val_loss": result.val_loss,
            "grads": {n: g.tolist() for n, g in result.grads.items()},
            "train_losses": result.train_losses.to(torch.float64).tolist(),
            "seconds": seconds,
            "engine": None if result.engine is None else result.engine.to_dict()}


def decode_result(data: dict) -> HypergradientResult:
    """A stored replica result; ``params`` (theta_T) is not stored and comes back empty."""
    engine = data.get("engine")
    return HypergradientResult(float(data["val_loss"]),
                               {n: torch.tensor(g, dtype=torch.float64)
                                for n, g in data["grads"].items()},
                               torch.tensor(data["train_losses"], dtype=torch.float64), {},
                               None if engine is None else EngineChoice.from_dict(engine))


class InnerCheckpointer:
    """Resumable inner runs of one tracked run (pass it to ``tune``/``run_replica``).

    Args:
        store: where checkpoints and replica results go.
        layout: the run's keys (:class:`~fdshpo.store.layout.RunLayout`).
        every: save the state every ``every`` inner steps (0 disables inner checkpoints; the
            replica result is still stored and reused).
        keep: how many of a replica's newest inner checkpoints to keep while it runs.
    """

    def __init__(self, store: ArtifactStore, layout: RunLayout, every: int = DEFAULT_EVERY,
                 keep: int = 2) -> None:
        if not isinstance(every, int) or every < 0:
            raise ValueError(f"checkpoint interval must be a non-negative int, got {every!r}")
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.store, self.layout, self.every, self.keep = store, layout, every, keep
        self.saved_seconds = 0.0  # time spent writing inner checkpoints (for the benchmark)
        self.resumed: list[tuple[int, int, int]] = []  # (outer step, replica, step) resumed at

    # -- inner checkpoints ---------------------------------------------------------------------
    def checkpoints(self, outer_step: int, replica: int) -> list[str]:
        return self.store.list(self.layout.inner_checkpoints(outer_step, replica))

    def save(self, state: EngineState, outer_step: int, replica: int, fp: str,
             choice: EngineChoice | None = None, ranks: dict | None = None) -> str:
        """Write ``state`` (``ranks``: every rank's :data:`RANK_OWN` fields, (ranks, ...) each,
        of a data-parallel run) and keep the newest ``keep`` checkpoints; returns its key."""
        started = time.perf_counter()
        key = self.layout.inner_checkpoint(outer_step, replica, state.step)
        meta = {"fingerprint": fp, "choice": None if choice is None else choice.to_dict()}
        if ranks:
            meta["ranks"] = ranks
        self.store.put_bytes(key, encode_state(state, meta), overwrite=True)
        for old in self.checkpoints(outer_step, replica)[:-self.keep]:
            self.store.delete(old)
        self.saved_seconds += time.perf_counter() - started
        return key

    def newest(self, outer_step: int, replica: int, fp: str, device="cpu"
               ) -> tuple[str, bytes, EngineState, torch.Tensor, dict] | None:
        """(key, bytes, state, RNG state, meta) of the newest intact checkpoint of this run,
        or None (invalid ones are skipped with a warning)."""
        for key in reversed(self.checkpoints(outer_step, replica)):
            try:
                data = self.store.get_bytes(key)
                state, rng, meta = decode_state(data, device)
            except (IntegrityError, ArtifactNotFound, RuntimeError, KeyError, EOFError) as exc:
                warnings.warn(f"skipping unreadable checkpoint {key}: {exc}", stacklevel=3)
                continue
            if meta.get("fingerprint") != fp:
                warnings.warn(f"skipping checkpoint {key}: it belongs to a different run "
                              "configuration", stacklevel=3)
                continue
            return key, data, state, rng, meta
        return None

    def _resume(self, outer_step: int, replica: int, state: EngineState, rng: torch.Tensor,
                meta: dict, rank: int = 0) -> tuple[EngineState, EngineChoice | None]:
        """Restore the checkpoint's RNG state and note the resumption; rank ``rank`` of a
        data-parallel run takes its own :data:`RANK_OWN` fields."""
        own = meta.get("ranks") or {}
        if own:
            device = state.theta.device
            state = state._replace(**{k: v[rank].to(device) for k, v in own.items()})
        torch.set_rng_state(rng)
        self.resumed.append((outer_step, replica, state.step))
        choice = meta.get("choice")
        return state, None if choice is None else EngineChoice.from_dict(choice)

    def load(self, outer_step: int, replica: int, fp: str, device="cpu"
             ) -> tuple[EngineState, EngineChoice | None] | None:
        """(state, engine choice) of the newest intact checkpoint of this run, or None
        (invalid ones are skipped)."""
        found = self.newest(outer_step, replica, fp, device)
        return None if found is None else self._resume(outer_step, replica, *found[2:])

    def _agreed_start(self, shards: ShardGroup, outer_step: int, replica: int, fp: str,
                      device) -> tuple[HypergradientResult | None,
                                       tuple[EngineState, EngineChoice | None] | None]:
        """(stored result, resumed (state, choice)) as rank 0 decides them, on every rank of a
        data-parallel run (module docstring). Rank 0's store errors are raised on every rank;
        StoreError on every rank when some rank cannot read the checkpoint rank 0 chose."""
        mine = None
        decision: object = ("fresh",)
        if shards.rank == 0:
            try:
                done = self._stored(outer_step, replica, fp)
                if done is not None:
                    decision = ("done", done)
                elif self.every:
                    mine = self.newest(outer_step, replica, fp, device)
                    if mine is not None:
                        decision = ("resume", mine[0], hashlib.sha256(mine[1]).hexdigest())
            except Exception as error:  # every rank raises it
                decision = error
        decision = shards.decide(decision, "inner checkpoint decision")
        if decision[0] == "done":
            return decode_result(decision[1]), None
        if decision[0] == "fresh":
            return None, None
        _, key, sha = decision
        error = None
        if shards.rank != 0:
            try:
                data = self.store.get_bytes(key)
                if hashlib.sha256(data).hexdigest() != sha:
                    raise IntegrityError(f"{key} holds other bytes than rank 0 read")
                state, rng, meta = decode_state(data, device)
                mine = (key, data, state, rng, meta)
            except Exception as exc:  # every rank reports it below
                error = f"{type(exc).__name__}: {exc}"
        failed = shards.errors(error, "inner checkpoint read")
        if failed:
            raise StoreError("; ".join(
                f"rank {rank} of {shards.world_size} could not read the inner checkpoint {key} "
                f"that rank 0 resumes from ({text})" for rank, text in sorted(failed.items()))
                + "; every rank of a data-parallel run must reach the run's store")
        return None, self._resume(outer_step, replica, *mine[2:], rank=shards.rank)

    @staticmethod
    def _rank_own(shards: ShardGroup, state: EngineState) -> dict:
        """Every rank's :data:`RANK_OWN` fields of ``state``, stacked (ranks, ...) on the CPU,
        on every rank (one all_reduce of zero-padded copies)."""
        fields = RANK_OWN[state.engine]
        if not fields:
            return {}
        padded = []
        for name in fields:
            mine = getattr(state, name)
            rows = torch.zeros((shards.world_size, *mine.shape), dtype=mine.dtype,
                               device=mine.device)
            rows[shards.rank] = mine
            padded.append(rows)
        gathered = shards.sums(padded, "inner checkpoint (each rank's own state)")
        return {name: rows.cpu() for name, rows in zip(fields, gathered)}

    # -- the resumable replica -----------------------------------------------------------------
    def _stored(self, outer_step: int, replica: int, fp: str | None = None) -> dict | None:
        """The stored record of a finished replica, as stored (None when absent; StoreError
        when it belongs to another config)."""
        try:
            data = self.store.get_json(self.layout.replica_result(outer_step, replica))
        except ArtifactNotFound:
            return None
        if fp is not None and data.get("fingerprint") != fp:
            raise StoreError(
                f"replica {replica} of outer step {outer_step} in {self.layout.prefix} was "
                "computed with a different schedule or configuration; start a new run id")
        return data

    def result(self, outer_step: int, replica: int, fp: str | None = None
               ) -> HypergradientResult | None:
        """The stored result of a finished replica (None when absent or of another config)."""
        data = self._stored(outer_step, replica, fp)
        return None if data is None else decode_result(data)

    def run(self, task: InnerTask, schedule: Schedule, learn: Sequence[str], loss_fn: LossFn,
            outer_step: int, replica: int,
            on_step: Callable[[EngineState], None] | None = None,
            **engine_options) -> HypergradientResult:
        """``hypergradient(...)`` of the task, resumed from and checkpointed to the store (with
        the engine of the checkpoint it resumes from). With ``group`` among the engine options,
        rank 0 decides and alone writes (module docstring); every rank must call this."""
        group = engine_options.get("group")
        shards = None if group is None else ShardGroup(group)
        fp = settings_digest(schedule, learn, outer_step, replica,
                             1 if shards is None else shards.world_size, **engine_options)
        started = time.perf_counter()
        device = Footprint.of(task.model).device
        if shards is None:
            lead = True
            done = self.result(outer_step, replica, fp)
            resumed = None
            if done is None and self.every:
                resumed = self.load(outer_step, replica, fp, device)
        else:
            lead = shards.rank == 0
            done, resumed = self._agreed_start(shards, outer_step, replica, fp, device)
        if done is not None:
            return done
        if resumed is not None:
            state, choice = resumed
            engine = make_engine(state.engine, task.model, loss_fn, schedule, learn, choice,
                                 **engine_options)
        else:
            engine, choice = prepare_engine(task.model, loss_fn, task.train_batches, schedule,
                                            learn, **engine_options)
            state = engine.init()

        def step_hook(st: EngineState) -> None:
            if on_step is not None:
                on_step(st)
            if self.every and st.step % self.every == 0 and st.step < st.total_steps:
                ranks = None if shards is None else self._rank_own(shards, st)
                if lead:
                    self.save(st, outer_step, replica, fp, choice, ranks)

        result = engine.run(state, task.train_batches, task.val_batches, step_hook, choice)
        if lead:
            self.store.put_json(self.layout.replica_result(outer_step, replica),
                                encode_result(result, fp, time.perf_counter() - started))
            for key in self.checkpoints(outer_step, replica):
                self.store.delete(key)
        return result


class OuterCheckpointer:
    """``TuneState`` after every outer step; ``latest()`` for ``tune(..., resume=...)``."""

    def __init__(self, store: ArtifactStore, layout: RunLayout) -> None:
        self.store, self.layout = store, layout

    def save(self, state: TuneState) -> str:
        """Write the state after outer step ``next_outer_step - 1`` (write-once; a damaged
        checkpoint left by a crash is replaced)."""
        key = self.layout.outer_checkpoint(state.next_outer_step - 1)
        try:
            self.store.get_json(key)
        except ArtifactNotFound:
            pass
        except (IntegrityError, ValueError):  # damaged (not a transient error): replace it
            self.store.put_json(key, state.to_dict(), overwrite=True)
            return key
        self.store.put_json(key, state.to_dict())  # ArtifactExists if a different one is there
        return key

    def latest(self) -> TuneState | None:
        """The newest outer checkpoint that reads back intact, or None. Damaged ones are
        skipped with a warning; other store errors are raised."""
        for key in reversed(self.store.list(self.layout.outer_checkpoints)):
            try:
                return TuneState.from_dict(self.store.get_json(key))
            except (IntegrityError, ArtifactNotFound, ValueError, KeyError, TypeError) as exc:
                warnings.warn(f"skipping unreadable outer checkpoint {key}: {exc}",
                              stacklevel=2)
        return None

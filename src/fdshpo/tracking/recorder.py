"""Experiment tracking in an artifact store: record a run (reading is
:mod:`fdshpo.tracking.reader`).

A run is written through a :class:`RunRecorder` (layout in :mod:`fdshpo.store.layout`):

    with RunRecorder(store, "fmnist-lenet") as recorder:     # or run_id="..." to resume one
        resume = recorder.start(config)                     # newest outer checkpoint or None
        result = recorder.tune(problem, schedule, optimizer, outer_steps=10, resume=resume)
        recorder.finish(result.schedule, metrics={"test_accuracy": 0.91})

- ``start`` takes the run's lease (:mod:`fdshpo.store.lease`: one writer per run id; a second
  recorder is refused with the holder's name until the lease is released or expires, and a
  heartbeat renews it while this recorder lives), records the config once (a resumed run must
  bring the same one), and writes a ``started`` event and its index entry.
- Every write of the recorder (and of its checkpointers, inner checkpoints included) goes
  through :meth:`~fdshpo.store.lease.Lease.fence`: it is refused with
  :class:`~fdshpo.store.lease.LeaseLost` unless this recorder holds the lease at that moment.
- ``finish`` writes the final schedule, metrics, plots and HTML report, then the run record
  ``run.json`` (the sha256 of every artifact of the run, which outer step the schedule came
  from and its validation loss, the engine that ran: :mod:`fdshpo.tracking.selection`) last;
  then the run's index entry (:mod:`fdshpo.tracking.index`), then moves the experiment's
  ``latest.json`` pointer (the warm start of scheduled retuning, :func:`latest_schedule`)
  forward only (:func:`~fdshpo.store.layout.moves_forward`, by compare-and-write: a run that
  finished later is never replaced, even by a finish racing with it), and releases the lease.
  A retried ``finish`` (a step that died after ``run.json``) completes the steps after the
  record; it refuses another schedule or other metrics.
- ``fail`` records a failed attempt (an event and its index entry); leaving the ``with``
  block on an exception calls it. A run without ``run.json`` is ``incomplete`` (or ``failed``),
  whatever else it holds.

Pipeline components call the pieces directly: the prepare step :meth:`RunRecorder.start`; the
outer step's two halves (:class:`fdshpo.tune.step.OuterStep`): each inner component
``run_replica`` with the recorder's :attr:`RunRecorder.inner` checkpointer (resumable), the
outer component ``apply`` and then :meth:`RunRecorder.on_outer_step`; the report step
:meth:`RunRecorder.finish`. Every step holds the run's lease as ``kfp-job:<job id>`` (the
prepare step through ``start``, the others through :meth:`RunRecorder.hold`), so the job holds
it from prepare to report and another job's writes are refused.
Credentials never enter a record: :meth:`RunRecorder.start` refuses a config with a key that
looks like one.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import warnings
from collections.abc import Callable, Mapping

from ..schedule import Schedule
from ..store.base import (
    ArtifactExists,
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    StoreError,
    iso_utc,
)
from ..store.layout import RunLayout, latest_pointer, moves_forward
from ..store.lease import DEFAULT_TTL, Lease
from ..tune.loop import TuneResult, tune
from ..tune.sign import SignOptimizer
from ..tune.state import TaskFactory, TuneState
from .checkpoint import DEFAULT_EVERY, InnerCheckpointer, OuterCheckpointer
from .index import (
    complete_entry,
    config_sha256,
    event_entry,
    event_name,
    event_stamp,
    retrying,
    unique_entries,
    write_entry,
)
from .reader import (  # noqa: F401  (re-exported: the reading side of tracking)
    RunView,
    compare_runs,
    latest_run,
    list_runs,
    load_run,
    load_steps,
    resolve_run,
    run_names,
)
from .selection import engine_ran, selection_fields

RECORD_VERSION = 1
_CREDENTIAL_KEY = re.compile(r"secret|password|passwd|token|access_?key|credential",
                             re.IGNORECASE)
_UNRECORDED = ("/checkpoints/inner/", "/lease/")  # removed while the run goes on


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxxxx`` (UTC time plus 6 random hex digits)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _as_stored(obj):
    """``obj`` as it reads back from the store's JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(obj, sort_keys=True, allow_nan=True))


def check_no_credentials(obj, path: str = "config") -> None:
    """Raise ValueError when a mapping key anywhere in ``obj`` looks like a credential."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if _CREDENTIAL_KEY.search(str(key)):
                raise ValueError(
                    f"{path}.{key} looks like a credential; credentials never go into run "
                    "records: pass them through AWS_* environment variables or a mounted Secret")
            check_no_credentials(value, f"{path}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_no_credentials(value, f"{path}[{i}]")


class RunRecorder:
    """Writes one run's config, outer steps, checkpoints, results and record to a store.

    Args:
        store: the artifact store.
        experiment: the experiment name (runs of one experiment are compared and warm-started).
        run_id: a new id by default; pass an existing one to resume that run.
        checkpoint_every: inner checkpoint interval in steps (0: only replica results).
        owner: who writes, for the lease (default: this recorder in this process; a pipeline
            passes ``kfp-job:<job id>``: every step of the job, and a retry of it, holds it).
        lease_seconds: how long the lease outlives a writer that stopped renewing it (by the
            store's clock).
        clock: wall-clock seconds for the times recorded (tests shift it); lease expiry does
            not use it.
    """

    def __init__(self, store: ArtifactStore, experiment: str, run_id: str | None = None,
                 checkpoint_every: int = DEFAULT_EVERY, owner: str | None = None,
                 lease_seconds: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        self.layout = RunLayout(experiment, run_id or new_run_id())
        self.lease = Lease(store, self.layout.lease, f"run {self.layout.experiment}/"
                           f"{self.layout.run_id}", owner, lease_seconds)
        self.store = self.lease.fence(store)  # every write checks the lease first
        self.inner = InnerCheckpointer(self.store, self.layout, checkpoint_every)
        self.outer = OuterCheckpointer(self.store, self.layout)
        self.clock = clock
        self._config: dict | None = None

    @property
    def experiment(self) -> str:
        return self.layout.experiment

    @property
    def run_id(self) -> str:
        return self.layout.run_id

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None and not isinstance(exc, KeyboardInterrupt) and self.lease.held:
                self.fail(f"{type(exc).__name__}: {exc}")
        except StoreError as failed:
            warnings.warn(f"could not record the failure of run {self.experiment}/"
                          f"{self.run_id}: {failed}", stacklevel=2)
        finally:
            self.close()

    def close(self) -> None:
        """Release the lease (if held) and stop its heartbeat; the run can be resumed."""
        self.lease.release()

    # -- writing -------------------------------------------------------------------------------
    def start(self, config: Mapping, parent: str | None = None) -> TuneState | None:
        """Take the run's lease, record the config (once; a resumed run must bring the same
        one; ``parent``: the run a retune warm-starts from) and a start event, and return the
        newest valid outer checkpoint to resume from (None for a fresh run).

        Raises StoreError when the run is already complete or has another config,
        :class:`~fdshpo.store.lease.LeaseHeld` when another writer holds the run.
        """
        check_no_credentials(config)
        if self.store.exists(self.layout.record):
            raise StoreError(f"run {self.experiment}/{self.run_id} is already complete in "
                             f"{self.store.uri}; start a new run id")
        wanted = _as_stored(dict(config))
        existing = self._config_doc()
        if existing is not None and existing.get("config") != wanted:
            raise self._other_config()
        self.lease.acquire()
        try:
            if existing is None:
                try:
                    self.store.put_json(self.layout.config, {
                        "experiment": self.experiment, "run_id": self.run_id,
                        "config": wanted, "started": iso_utc(self.clock()), "parent": parent})
                except ArtifactExists:
                    if (self._config_doc() or {}).get("config") != wanted:
                        raise self._other_config() from None
            resume = self.outer.latest()
            self._event("incomplete", resume)
        except BaseException:
            self.lease.release()
            raise
        self.lease.keep_alive()
        return resume

    def hold(self) -> None:
        """Take the run's lease (or join it: a pipeline step, with the job's owner label) and
        keep it alive while this recorder lives, without recording anything; the lease is not
        released when the step ends (the report step's :meth:`finish` releases it).

        Raises :class:`~fdshpo.store.lease.LeaseHeld` when another writer holds the run."""
        self.lease.acquire()
        self.lease.keep_alive()

    def _other_config(self) -> StoreError:
        return StoreError(f"run {self.experiment}/{self.run_id} already exists in "
                          f"{self.store.uri} with a different config; resume it with the "
                          "same config or start a new run id")

    def _config_doc(self) -> dict | None:
        """The run's ``config.json`` (write-once, so it is read once and kept), or None."""
        if self._config is None:
            try:
                self._config = self.store.get_json(self.layout.config)
            except ArtifactNotFound:
                return None
        return self._config

    def _event(self, status: str, state: TuneState | None, error: str | None = None) -> None:
        """A start or failure event in the run folder, then its index entry."""
        history = state.history if state is not None else ()
        event = {"status": status, "at": event_stamp(self.clock),
                 "outer_steps": state.next_outer_step if state is not None else 0,
                 "final_val_loss": history[-1].val_loss if history else None,
                 "engine": engine_ran([r.to_dict() for r in history]), "error": error}
        self.store.put_json(self.layout.event(event_name(event)), event)
        write_entry(self.store, event_entry(self.experiment, self.run_id, event,
                                            self._config_doc() or {}))

    def fail(self, error: str) -> None:
        """Record that this attempt failed (``error``: what happened, any URL's user info
        redacted) and release the lease; the run stays resumable. Nothing happens once the run
        is complete."""
        from ..store.credentials import redact_userinfo

        if self.store.exists(self.layout.record):
            return
        try:
            self._event("failed", self.outer.latest(), redact_userinfo(str(error))[:2000])
        finally:
            self.lease.release()

    def on_outer_step(self, state: TuneState) -> None:
        """``tune``'s callback: the outer checkpoint, then any step record not yet written."""
        self.lease.check()
        self.outer.save(state)
        for record in state.history:
            key = self.layout.step(record.outer_step)
            if not self.store.exists(key):
                self.store.put_json(key, record.to_dict())

    def tune(self, make_task: TaskFactory, schedule: Schedule,
             optimizer: SignOptimizer | None = None, resume: TuneState | None = None,
             **tune_options) -> TuneResult:
        """``fdshpo.tune.loop.tune`` checkpointed to this run, resumed from its newest
        checkpoint."""
        resume = resume or self.outer.latest()
        return tune(make_task, schedule, optimizer, resume=resume, callback=self.on_outer_step,
                    checkpointer=self.inner, **tune_options)

    def finish(self, schedule: Schedule, metrics: Mapping | None = None, report: bool = True,
               converged: bool | None = None) -> dict:
        """Write the final schedule, metrics, plots and report, then the run record (last),
        then the run's index entry and the experiment's ``latest.json`` pointer, and release
        the lease. Returns the record. A retry after a finish that died past the record
        completes the rest; it raises StoreError when it brings another schedule or metrics.
        A recorder that does not hold the lease yet takes it first (:meth:`hold`).
        """
        if not self.lease.held and self.lease.lost is None:
            self.hold()
        self.lease.check()
        metrics = dict(metrics or {})
        check_no_credentials(metrics, "metrics")
        try:
            record = self.store.get_json(self.layout.record)
        except ArtifactNotFound:
            record = self._write_record(schedule, metrics, report, converged)
        else:
            if record.get("schedule") != _as_stored(schedule.to_dict()) \
                    or record.get("metrics") != _as_stored(metrics):
                raise StoreError(f"run {self.experiment}/{self.run_id} is already complete "
                                 "with another schedule or other metrics; record this result "
                                 "under a new run id")
        write_entry(self.store, complete_entry(record, self.store.checksum(self.layout.record),
                                               self._config_doc() or {}))
        self._move_latest(record)
        self.lease.release()
        return record

    def _write_record(self, schedule: Schedule, metrics: dict, report: bool,
                      converged: bool | None) -> dict:
        self.store.put_json(self.layout.schedule, schedule.to_dict())
        self.store.put_json(self.layout.metrics, metrics)
        steps = load_steps(self.store, self.layout)
        doc = self._config_doc() or {}
        last = steps[-1] if steps else {}
        summary = {"status": "complete", "outer_steps": len(steps),
                   "final_val_loss": last.get("val_loss"),
                   **selection_fields(steps, _as_stored(schedule.to_dict())),
                   "engine": engine_ran(steps)}
        if report:
            from ..report.run_page import build_report

            html, plots = build_report(name=f"{self.experiment}/{self.run_id}",
                                       status="complete", config=doc.get("config", {}),
                                       steps=steps, schedule=schedule.to_dict(),
                                       metrics=metrics, summary=summary)
            for name, png in plots.items():
                self._put_rendering(self.layout.plot(name), png)
            self._put_rendering(self.layout.report, html.encode())
        manifest = {key[len(self.layout.prefix) + 1:]: self.store.checksum(key)
                    for key in self.store.list(self.layout.prefix + "/")
                    if not any(part in key for part in _UNRECORDED)
                    and key != self.layout.record}
        record = {
            "version": RECORD_VERSION, "experiment": self.experiment, "run_id": self.run_id,
            **summary, "started": doc.get("started"), "parent": doc.get("parent"),
            "finished": iso_utc(self.clock()),
            "converged": bool(last.get("converged", False)) if converged is None else converged,
            "metrics": metrics, "schedule": schedule.to_dict(), "artifacts": manifest,
            "config_sha256": config_sha256(doc.get("config", {})),
        }
        self.store.put_json(self.layout.record, record)
        return _as_stored(record)

    def _put_rendering(self, key: str, data: bytes) -> None:
        """Plots and the report are renderings of the recorded data: a retried finish keeps
        the ones a first attempt already wrote."""
        try:
            self.store.put_bytes(key, data)
        except ArtifactExists:
            pass

    def _move_latest(self, record: Mapping) -> bool:
        """Point ``latest.json`` at this run only if that moves it forward
        (:func:`~fdshpo.store.layout.moves_forward`), by compare-and-write with retries
        (:meth:`~fdshpo.store.ArtifactStore.update_json`). True when it moved."""
        pointer = {"experiment": self.experiment, "run_id": self.run_id,
                   "schedule": record["schedule"], "metrics": record["metrics"],
                   "finished": record["finished"]}
        return self.store.update_json(
            latest_pointer(self.experiment),
            lambda current: pointer if moves_forward(current, pointer) else None)


def latest_finished(store: ArtifactStore, experiment: str) -> tuple[str, Schedule] | None:
    """(run id, learned schedule) of the experiment's newest complete run (the warm start of
    a retune), or None.

    Reads the ``latest.json`` pointer; when that is damaged (a crash mid-write), the newest
    complete run in the index instead.
    """
    try:
        pointer = latest_run(store, experiment)
    except (IntegrityError, ValueError) as exc:
        warnings.warn(f"{latest_pointer(experiment)} is damaged ({exc}); warm-starting from "
                      "the newest complete run record in the index instead", stacklevel=2)
        complete = retrying(lambda: [e for e in unique_entries(store, experiment)
                                     if e["status"] == "complete"])
        if not complete:
            return None
        newest = max(complete, key=lambda e: (e["finished"], e["run_id"]))
        pointer = store.get_json(RunLayout(experiment, newest["run_id"]).record)
    if not pointer:
        return None
    return pointer["run_id"], Schedule.from_dict(pointer["schedule"])


def latest_schedule(store: ArtifactStore, experiment: str) -> Schedule | None:
    """The schedule of :func:`latest_finished`, or None."""
    latest = latest_finished(store, experiment)
    return latest[1] if latest else None

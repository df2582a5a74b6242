"""Experiment tracking in an artifact store: record a run, list, show and compare runs.

A run is written through a :class:`RunRecorder` (layout in :mod:`fdshpo.store.layout`):

    recorder = RunRecorder(store, "fmnist-lenet")            # or run_id="..." to resume one
    resume = recorder.start(config)                         # newest outer checkpoint or None
    result = recorder.tune(problem, schedule, optimizer, outer_steps=10)   # checkpointed tune
    recorder.finish(result.schedule, metrics={"test_accuracy": 0.91})

``finish`` writes the final schedule, metrics, plots and HTML report, then the run record
``run.json`` (the sha256 of every artifact of the run) last, then moves the experiment's
``latest.json`` pointer (the warm start of scheduled retuning, :func:`latest_schedule`). A run
without ``run.json`` is listed as ``incomplete``, whatever else it holds.

Pipeline components run the outer step's two halves (:class:`fdshpo.outer_step.OuterStep`):
each inner component ``run_replica`` with the recorder's :attr:`RunRecorder.inner`
checkpointer (resumable), the outer component ``apply`` and then
:meth:`RunRecorder.on_outer_step`.
Credentials never enter a record: :meth:`RunRecorder.start` refuses a config with a key that
looks like one.
"""

from __future__ import annotations

import re
import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from .checkpoint import DEFAULT_EVERY, InnerCheckpointer, OuterCheckpointer
from .outer import SignOptimizer
from .schedule import Schedule
from .store.base import (
    ArtifactExists,
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    StoreError,
    check_name,
)
from .store.layout import EXPERIMENTS, RunLayout, latest_pointer, parse_run_key
from .tune import TuneResult, tune
from .tune_state import TaskFactory, TuneState

RECORD_VERSION = 1
_CREDENTIAL_KEY = re.compile(r"secret|password|passwd|token|access_?key|credential",
                             re.IGNORECASE)


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxxxx`` (UTC time plus 6 random hex digits)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


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
    """

    def __init__(self, store: ArtifactStore, experiment: str, run_id: str | None = None,
                 checkpoint_every: int = DEFAULT_EVERY) -> None:
        self.store = store
        self.layout = RunLayout(experiment, run_id or new_run_id())
        self.inner = InnerCheckpointer(store, self.layout, checkpoint_every)
        self.outer = OuterCheckpointer(store, self.layout)

    @property
    def experiment(self) -> str:
        return self.layout.experiment

    @property
    def run_id(self) -> str:
        return self.layout.run_id

    # -- writing -------------------------------------------------------------------------------
    def start(self, config: Mapping) -> TuneState | None:
        """Record the config (once; a resumed run must bring the same one) and return the
        newest valid outer checkpoint to resume from (None for a fresh run).

        Raises StoreError when the run is already complete or has another config.
        """
        check_no_credentials(config)
        if self.store.exists(self.layout.record):
            raise StoreError(f"run {self.experiment}/{self.run_id} is already complete in "
                             f"{self.store.uri}; start a new run id")
        try:
            self.store.put_json(self.layout.config, {"experiment": self.experiment,
                                                     "run_id": self.run_id,
                                                     "config": dict(config)})
        except ArtifactExists:
            raise StoreError(f"run {self.experiment}/{self.run_id} already exists in "
                             f"{self.store.uri} with a different config; resume it with the "
                             "same config or start a new run id") from None
        return self.outer.latest()

    def on_outer_step(self, state: TuneState) -> None:
        """``tune``'s callback: the outer checkpoint, then any step record not yet written."""
        self.outer.save(state)
        for record in state.history:
            key = self.layout.step(record.outer_step)
            if not self.store.exists(key):
                self.store.put_json(key, record.to_dict())

    def tune(self, make_task: TaskFactory, schedule: Schedule,
             optimizer: SignOptimizer | None = None, resume: TuneState | None = None,
             **tune_options) -> TuneResult:
        """``fdshpo.tune.tune`` checkpointed to this run, resumed from its newest checkpoint."""
        resume = resume or self.outer.latest()
        return tune(make_task, schedule, optimizer, resume=resume, callback=self.on_outer_step,
                    checkpointer=self.inner, **tune_options)

    def finish(self, schedule: Schedule, metrics: Mapping | None = None, report: bool = True,
               converged: bool | None = None) -> dict:
        """Write the final schedule, metrics, plots and report, then the run record (last),
        then the experiment's ``latest.json`` pointer. Returns the record."""
        metrics = dict(metrics or {})
        check_no_credentials(metrics, "metrics")
        self.store.put_json(self.layout.schedule, schedule.to_dict())
        self.store.put_json(self.layout.metrics, metrics)
        steps = load_steps(self.store, self.layout)
        if report:
            from .report import build_report

            run = RunView(self.experiment, self.run_id, "complete", self._config(), steps,
                          schedule.to_dict(), metrics, {})
            html, plots = build_report(run)
            for name, png in plots.items():
                self.store.put_bytes(self.layout.plot(name), png)
            self.store.put_bytes(self.layout.report, html.encode())
        manifest = {key[len(self.layout.prefix) + 1:]: self.store.checksum(key)
                    for key in self.store.list(self.layout.prefix + "/")
                    if "/checkpoints/inner/" not in key and key != self.layout.record}
        last = steps[-1] if steps else {}
        record = {
            "version": RECORD_VERSION, "experiment": self.experiment, "run_id": self.run_id,
            "status": "complete", "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "outer_steps": len(steps),
            "converged": bool(last.get("converged", False)) if converged is None else converged,
            "final_val_loss": last.get("val_loss"), "metrics": metrics,
            "schedule": schedule.to_dict(), "artifacts": manifest,
        }
        self.store.put_json(self.layout.record, record)
        self.store.put_json(latest_pointer(self.experiment),
                            {"experiment": self.experiment, "run_id": self.run_id,
                             "schedule": schedule.to_dict(), "metrics": metrics,
                             "finished": record["finished"]}, overwrite=True)
        return record

    def _config(self) -> dict:
        try:
            return self.store.get_json(self.layout.config).get("config", {})
        except ArtifactNotFound:
            return {}


# -- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunView:
    """Everything known about one run, complete or not."""

    experiment: str
    run_id: str
    status: str                      # "complete", "incomplete" or "corrupt"
    config: dict
    steps: list[dict]                # OuterStepRecord dicts, in order
    schedule: dict | None            # final schedule (complete runs), else the newest known
    metrics: dict
    record: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.run_id}"


def load_steps(store: ArtifactStore, layout: RunLayout) -> list[dict]:
    keys = [k for k in store.list(layout.key("steps/")) if k.endswith(".json")]
    return sorted((store.get_json(k) for k in keys), key=lambda s: s["outer_step"])


def run_names(store: ArtifactStore, experiment: str | None = None) -> list[tuple[str, str]]:
    """(experiment, run_id) of every run with any artifact, sorted."""
    prefix = f"{EXPERIMENTS}/{check_name(experiment, 'experiment name')}/" if experiment \
        else f"{EXPERIMENTS}/"
    return sorted({parsed for key in store.list(prefix) if (parsed := parse_run_key(key))})


@dataclass(frozen=True)
class RunSummary:
    experiment: str
    run_id: str
    status: str
    outer_steps: int
    final_val_loss: float | None
    metrics: dict

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def list_runs(store: ArtifactStore, experiment: str | None = None) -> list[RunSummary]:
    """One summary per run (complete ones from their record, others from their steps)."""
    keys = store.list(f"{EXPERIMENTS}/{experiment}/" if experiment else f"{EXPERIMENTS}/")
    runs: dict[tuple[str, str], list[str]] = {}
    for key in keys:
        parsed = parse_run_key(key)
        if parsed:
            runs.setdefault(parsed, []).append(key)
    out = []
    for (exp, run_id), run_keys in sorted(runs.items()):
        layout = RunLayout(exp, run_id)
        if layout.record in run_keys:
            try:
                rec = store.get_json(layout.record)
                out.append(RunSummary(exp, run_id, "complete", int(rec["outer_steps"]),
                                      rec.get("final_val_loss"), rec.get("metrics", {})))
                continue
            except StoreError:
                out.append(RunSummary(exp, run_id, "corrupt", 0, None, {}))
                continue
        step_keys = sorted(k for k in run_keys if k.startswith(layout.key("steps/")))
        last = None
        if step_keys:
            try:
                last = store.get_json(step_keys[-1]).get("val_loss")
            except StoreError:
                last = None
        out.append(RunSummary(exp, run_id, "incomplete", len(step_keys), last, {}))
    return out


def resolve_run(store: ArtifactStore, ref: str, experiment: str | None = None
                ) -> tuple[str, str]:
    """(experiment, run_id) for ``EXPERIMENT/RUN`` or a bare run id (unique prefix allowed).

    Raises StoreError when no run or several runs match.
    """
    if "/" in ref:
        exp, run_id = ref.split("/", 1)
        experiment = experiment or exp
        if exp != experiment:
            raise StoreError(f"run {ref!r} is not in experiment {experiment!r}")
        ref = run_id
    names = run_names(store, experiment)
    exact = [n for n in names if n[1] == ref]
    matches = exact or [n for n in names if n[1].startswith(ref)]
    if not matches:
        where = f"experiment {experiment!r} of " if experiment else ""
        raise StoreError(f"no run {ref!r} in {where}{store.uri}; see `fdshpo runs list`")
    if len(matches) > 1:
        raise StoreError(f"run {ref!r} is ambiguous in {store.uri}: "
                         + ", ".join(f"{e}/{r}" for e, r in matches)
                         + "; give EXPERIMENT/RUN or a longer id")
    return matches[0]


def load_run(store: ArtifactStore, ref: str, experiment: str | None = None,
             verify: bool = True) -> RunView:
    """Everything recorded for a run. With ``verify`` a complete run's artifacts are read back
    and checked against the sha256 in its record; a mismatch or a missing artifact makes it
    ``corrupt`` (listed in ``problems``)."""
    exp, run_id = resolve_run(store, ref, experiment)
    layout = RunLayout(exp, run_id)
    try:
        config = store.get_json(layout.config).get("config", {})
    except ArtifactNotFound:
        config = {}
    steps = load_steps(store, layout)
    try:
        record = store.get_json(layout.record)
    except ArtifactNotFound:
        schedule = _newest_schedule(store, layout, steps)
        return RunView(exp, run_id, "incomplete", config, steps, schedule, {})
    problems = []
    if verify:
        for rel, digest in record.get("artifacts", {}).items():
            try:
                actual = store.checksum(layout.key(rel))
                store.get_bytes(layout.key(rel))  # re-hashes the bytes themselves
            except ArtifactNotFound:
                problems.append(f"{rel}: missing")
                continue
            except StoreError as exc:
                problems.append(f"{rel}: {exc}")
                continue
            if actual != digest:
                problems.append(f"{rel}: sha256 {actual} != {digest} in the run record")
    return RunView(exp, run_id, "corrupt" if problems else "complete", config, steps,
                   record.get("schedule"), record.get("metrics", {}), record, problems)


def _newest_schedule(store: ArtifactStore, layout: RunLayout, steps: list[dict]) -> dict | None:
    state = OuterCheckpointer(store, layout).latest()
    if state is not None:
        return state.schedule.to_dict()
    return steps[-1]["schedule"] if steps else None


def latest_schedule(store: ArtifactStore, experiment: str) -> Schedule | None:
    """The schedule of the experiment's newest complete run (warm start), or None.

    It is read from ``latest.json``; when that pointer is damaged (IntegrityError) the
    newest intact run record (by its ``finished`` time) stands in, with a warning."""
    try:
        pointer = store.get_json(latest_pointer(experiment))
    except ArtifactNotFound:
        return None
    except (IntegrityError, ValueError) as exc:
        records = []
        for exp, run_id in run_names(store, experiment):
            try:
                records.append(store.get_json(RunLayout(exp, run_id).record))
            except (ArtifactNotFound, IntegrityError, ValueError):
                continue
        warnings.warn(f"{latest_pointer(experiment)} is damaged ({exc}); warm-starting from "
                      "the newest complete run record instead", stacklevel=2)
        if not records:
            return None
        pointer = max(records, key=lambda r: (r.get("finished", ""), r.get("run_id", "")))
    return Schedule.from_dict(pointer["schedule"])


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def compare_runs(a: RunView, b: RunView) -> dict:
    """Side by side: status, outer steps, final val loss, metrics, final schedule values, and
    the config keys whose values differ (``{key: (a, b)}``)."""
    def final_values(run: RunView) -> dict:
        return {n: v for n, v in ((run.schedule or {}).get("values") or {}).items()}

    fa, fb = _flatten(a.config), _flatten(b.config)
    config_diff = {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
                   if fa.get(k) != fb.get(k)}
    metric_names = sorted(set(a.metrics) | set(b.metrics))
    return {
        "runs": [a.name, b.name],
        "status": [a.status, b.status],
        "outer_steps": [len(a.steps), len(b.steps)],
        "final_val_loss": [a.steps[-1]["val_loss"] if a.steps else None,
                           b.steps[-1]["val_loss"] if b.steps else None],
        "metrics": {m: [a.metrics.get(m), b.metrics.get(m)] for m in metric_names},
        "schedule": {n: [final_values(a).get(n), final_values(b).get(n)]
                     for n in sorted(set(final_values(a)) | set(final_values(b)))},
        "config_diff": config_diff,
    }

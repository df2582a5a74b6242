"""Reading tracked runs: list and query them (from the index), show, compare, experiments.

Plain data in, plain data out, no torch: the CLI's read-only commands start fast.

    rows = list_runs(store, Query.from_options(experiment="demo", sort="-test_accuracy",
                                               limit=10))            # index entries (dicts)
    run = load_run(store, "demo/20261130-120000-ab12cd")            # everything about one run
    diff = compare_runs(run_a, run_b, ...)
    overview = experiments_overview(store)                          # one dict per experiment
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..store.base import (
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    StoreError,
    check_name,
)
from ..store.layout import (
    EXPERIMENTS,
    INDEX,
    RunLayout,
    experiment_prefix,
    latest_pointer,
    parse_run_key,
)
from .index import (
    IndexDamage,
    engine_of,
    experiment_names,
    retrying,
    unique_entries,
    winning_entries,
)
from .query import MISSING, Query, Reversed, check_keys, value_of
from .selection import engine_ran, selection_fields


@dataclass
class Listing:
    """The runs a query selected (sorted, at most ``limit``) and what was wrong on the way."""

    rows: list[dict]
    matched: int = 0                  # runs that passed the filters (before the limit)
    scanned: int = 0                  # runs in the part of the index that was read
    problems: list[IndexDamage] = field(default_factory=list)


class _Page:
    """The ``limit`` first rows in the query's order, kept in a bounded heap."""

    def __init__(self, query: Query) -> None:
        self.query, self.items, self.matched = query, [], 0

    def offer(self, row: dict) -> None:
        if not self.query.matches(row):
            return
        self.matched += 1
        key = self.query.sort_key(row)
        if self.query.limit is None:
            self.items.append((key, self.matched, row))
            return
        heapq.heappush(self.items, (Reversed(key), self.matched, row))
        if len(self.items) > self.query.limit:
            heapq.heappop(self.items)

    def rows(self) -> list[dict]:
        if self.query.limit is None:
            return [row for _, _, row in sorted(self.items, key=lambda item: item[:2])]
        return [row for _, _, row in sorted(self.items, key=lambda item: (item[0].value,
                                                                           item[1]))]


def list_runs(store: ArtifactStore, query: Query | None = None) -> Listing:
    """The runs of the index that ``query`` selects (all runs by default).

    Raises QueryError for a ``--where``/``--sort`` key that no run has (listing the known
    ones), StoreError when the store cannot be read.
    """
    query = query or Query()

    def read() -> Listing:
        problems: list[IndexDamage] = []
        metrics: set[str] = set()

        def seen(entry: dict) -> None:
            metrics.update(entry["metrics"])

        def check() -> None:
            if query.keys:
                check_keys(query.keys, metrics)

        page = _Page(query)
        if query.limit is None:  # the page holds every matching run: one pass
            rows, scanned = winning_entries(store, query.experiment, problems, seen,
                                            keep=query.matches)
            check()
            for row in rows:
                page.offer(row)
        else:  # a bounded page: rank every run first, then keep the page's rows
            scanned = 0
            for row in unique_entries(store, query.experiment, problems, seen, check):
                scanned += 1
                page.offer(row)
        return Listing(page.rows(), page.matched, scanned, problems)

    return retrying(read)


def has_unindexed_runs(store: ArtifactStore, experiment: str | None = None) -> bool:
    """True when the store holds runs but no index (it predates the index, or lost it)."""
    if store.list(f"{INDEX}/{experiment}/" if experiment else f"{INDEX}/"):
        return False
    prefix = f"{experiment_prefix(experiment)}/" if experiment else f"{EXPERIMENTS}/"
    return any(parse_run_key(k) for k in store.list(prefix))


# -- one run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunView:
    """Everything known about one run, complete or not."""

    experiment: str
    run_id: str
    status: str                      # "complete", "incomplete" or "corrupt"
    config: dict
    steps: list[dict]                # OuterStepRecord dicts, in order (may be left unread)
    schedule: dict | None            # final schedule (complete runs), else the newest known
    metrics: dict
    record: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.run_id}"

    @property
    def outer_steps(self) -> int:
        return int(self.record.get("outer_steps", len(self.steps)))

    @property
    def final_val_loss(self) -> float | None:
        if "final_val_loss" in self.record:
            return self.record["final_val_loss"]
        return self.steps[-1]["val_loss"] if self.steps else None

    @property
    def summary(self) -> dict:
        """What :func:`fdshpo.report.text.selection_text` reads, plus the engine that ran:
        from the record, else (a record written before these fields, or a run still going)
        from the outer steps when they were read."""
        out = {"status": self.status, "outer_steps": self.outer_steps,
               "final_val_loss": self.final_val_loss}
        if "selected_outer_step" in self.record:
            out.update({k: self.record.get(k)
                        for k in ("selected_outer_step", "selected_val_loss")})
        elif self.record and self.steps:
            out.update(selection_fields(self.steps, self.schedule))
        if "engine" in self.record:
            out["engine"] = self.record["engine"]
        else:
            out["engine"] = engine_ran(self.steps) or (engine_of(self.config) if self.record
                                                       else None)
        return out


def load_steps(store: ArtifactStore, layout: RunLayout) -> list[dict]:
    keys = [k for k in store.list(layout.key("steps/")) if k.endswith(".json")]
    return sorted((store.get_json(k) for k in keys), key=lambda s: s["outer_step"])


def run_names(store: ArtifactStore, experiment: str | None = None) -> list[tuple[str, str]]:
    """(experiment, run_id) of every run with any artifact, sorted: a full listing of the
    run folders (the slow path; the index answers most questions)."""
    prefix = f"{experiment_prefix(experiment)}/" if experiment else f"{EXPERIMENTS}/"
    return sorted({parsed for key in store.list(prefix) if (parsed := parse_run_key(key))})


def _matching(store: ArtifactStore, experiment: str, ref: str) -> set[tuple[str, str]]:
    """Runs of ``experiment`` whose id starts with ``ref`` (one prefix listing)."""
    prefix = f"{experiment_prefix(experiment)}/runs/{ref}"
    return {parsed for key in store.list(prefix) if (parsed := parse_run_key(key))}


def resolve_run(store: ArtifactStore, ref: str, experiment: str | None = None
                ) -> tuple[str, str]:
    """(experiment, run_id) for ``EXPERIMENT/RUN`` or a bare run id (unique prefix allowed).

    Looks in the indexed experiments first (one prefix listing each), then in every run
    folder. Raises StoreError when no run or several runs match.
    """
    if "/" in ref:
        exp, ref = ref.split("/", 1)
        if experiment and exp != experiment:
            raise StoreError(f"run {exp}/{ref} is not in experiment {experiment!r}")
        experiment = exp
    check_name(ref, "run id")
    if experiment:
        names = _matching(store, check_name(experiment, "experiment name"), ref)
    else:
        names = set().union(*(_matching(store, e, ref) for e in experiment_names(store)))
        if not names:
            names = {n for n in run_names(store) if n[1].startswith(ref)}
    exact = sorted(n for n in names if n[1] == ref)
    matches = exact or sorted(names)
    if not matches:
        where = f"experiment {experiment!r} of " if experiment else ""
        raise StoreError(f"no run {ref!r} in {where}{store.uri}; see `fdshpo runs list`")
    if len(matches) > 1:
        raise StoreError(f"run {ref!r} is ambiguous in {store.uri}: "
                         + ", ".join(f"{e}/{r}" for e, r in matches)
                         + "; give EXPERIMENT/RUN or a longer id")
    return matches[0]


def _newest_schedule(store: ArtifactStore, layout: RunLayout, steps: list[dict]) -> dict | None:
    for key in reversed(store.list(layout.outer_checkpoints)):
        try:
            return store.get_json(key)["schedule"]
        except (IntegrityError, ValueError, KeyError, TypeError):
            continue  # cut short by a crash (damage, not a store error): the one before it
    return steps[-1]["schedule"] if steps else None


def load_run(store: ArtifactStore, ref: str, experiment: str | None = None,
             verify: bool = True, steps: bool = True) -> RunView:
    """Everything recorded for a run. With ``verify`` a complete run's artifacts are read back
    and checked against the sha256 in its record; a mismatch or a missing artifact makes it
    ``corrupt`` (listed in ``problems``); any other store error is raised, never called
    corruption. ``steps=False`` skips the per-step records of a
    complete run (its record has the totals)."""
    exp, run_id = resolve_run(store, ref, experiment)
    layout = RunLayout(exp, run_id)
    try:
        config = store.get_json(layout.config).get("config", {})
    except ArtifactNotFound:
        config = {}
    try:
        record = store.get_json(layout.record)
    except ArtifactNotFound:
        run_steps = load_steps(store, layout)
        return RunView(exp, run_id, "incomplete", config, run_steps,
                       _newest_schedule(store, layout, run_steps), {})
    run_steps = load_steps(store, layout) if steps or verify else []
    problems = []
    if verify:
        for rel, digest in record.get("artifacts", {}).items():
            try:
                actual = store.checksum(layout.key(rel))
                store.get_bytes(layout.key(rel))  # re-hashes the bytes themselves
            except ArtifactNotFound:
                problems.append(f"{rel}: missing")
                continue
            except IntegrityError as exc:  # damage; any other store error is raised
                problems.append(f"{rel}: {exc}")
                continue
            if actual != digest:
                problems.append(f"{rel}: sha256 {actual} != {digest} in the run record")
    return RunView(exp, run_id, "corrupt" if problems else "complete", config, run_steps,
                   record.get("schedule"), record.get("metrics", {}), record, problems)


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def compare_runs(*runs: RunView) -> dict:
    """Side by side: status, outer steps, final val loss (the last outer step's), the selected
    outer step and its val loss, the engine that ran, metrics, final schedule values, and
    the config keys whose values differ (``{key: (value of each run)}``)."""
    def final_values(run: RunView) -> dict:
        return dict((run.schedule or {}).get("values") or {})

    configs = [_flatten(r.config) for r in runs]
    keys = sorted(set().union(*configs))
    metric_names = sorted(set().union(*(r.metrics for r in runs)))
    schedules = [final_values(r) for r in runs]
    return {
        "runs": [r.name for r in runs],
        "status": [r.status for r in runs],
        "outer_steps": [r.outer_steps for r in runs],
        "final_val_loss": [r.final_val_loss for r in runs],
        "selected_outer_step": [r.summary.get("selected_outer_step") for r in runs],
        "selected_val_loss": [r.summary.get("selected_val_loss") for r in runs],
        "engine": [r.summary["engine"] for r in runs],
        "metrics": {m: [r.metrics.get(m) for r in runs] for m in metric_names},
        "schedule": {n: [s.get(n) for s in schedules]
                     for n in sorted(set().union(*schedules))},
        "config_diff": {k: tuple(c.get(k) for c in configs) for k in keys
                        if len({repr(c.get(k)) for c in configs}) > 1},
    }


# -- experiments --------------------------------------------------------------------------------
def latest_run(store: ArtifactStore, experiment: str) -> dict | None:
    """The experiment's ``latest.json`` pointer (run id, schedule, metrics, finished) or None."""
    try:
        return store.get_json(latest_pointer(experiment))
    except ArtifactNotFound:
        return None


def experiments_overview(store: ArtifactStore, best: str = "-test_accuracy",
                         query: Query | None = None) -> tuple[list[dict], list[IndexDamage]]:
    """Per experiment of the index: run counts by status, the last started run, the best
    complete run under the sort key ``best`` (``-KEY``: highest), and the run the ``latest``
    pointer (the retune warm start) names. Returns (rows sorted by experiment, problems)."""
    query = query or Query()
    order = Query.from_options(sort=best)
    name = best.lstrip("-")

    def read():
        problems: list[IndexDamage] = []
        stats: dict[str, dict] = {}
        metrics: set[str] = set()

        def seen(entry: dict) -> None:
            metrics.update(entry["metrics"])

        def check() -> None:
            if metrics:
                check_keys((*query.keys, (name, "--best")), metrics)

        for row in unique_entries(store, query.experiment, problems, seen, check):
            if not query.matches(row):
                continue
            s = stats.setdefault(row["experiment"], {
                "experiment": row["experiment"], "runs": 0, "complete": 0, "incomplete": 0,
                "failed": 0, "last_run": None, "last_started": None, "best_run": None,
                "best_by": name, "best": None, "_best_key": None})
            s["runs"] += 1
            s[row["status"]] += 1
            started = row.get("started") or row.get("finished") or ""
            if s["last_run"] is None or (started, row["run_id"]) > (s["last_started"] or "",
                                                                    s["last_run"]):
                s["last_run"], s["last_started"] = row["run_id"], started or None
            value = value_of(row, name)
            if row["status"] == "complete" and value is not MISSING:
                key = order.sort_key(row)
                if s["_best_key"] is None or key < s["_best_key"]:
                    s["best_run"], s["best"], s["_best_key"] = row["run_id"], value, key
        return stats, problems

    stats, problems = retrying(read)
    rows = []
    for exp in sorted(stats):
        s = stats[exp]
        del s["_best_key"]
        pointer = latest_run(store, exp)
        s["latest"] = pointer.get("run_id") if pointer else None
        s["latest_finished"] = pointer.get("finished") if pointer else None
        rows.append(s)
    return rows, problems

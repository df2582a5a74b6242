"""Rebuilding the run index from the run folders, and checking index rows against them.

``reindex`` is for stores written before the index existed and for a damaged index: it walks
every run folder (one listing of ``experiments/``, then each run's ``run.json`` or newest
event and its ``config.json``), writes the entries it derives into segments, and then removes
the entries and segments that were there before it started (entries written while it runs are
kept). The entries are those the recorder writes incrementally, so the index after a reindex
lists exactly what it listed before, minus what was damaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..store.base import (
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    StoreError,
    check_name,
)
from ..store.layout import EXPERIMENTS, RunLayout, parse_run_key
from .index import (
    DAMAGE,
    MAX_SEGMENT,
    REINDEX_LEVEL,
    IndexDamage,
    complete_entry,
    event_entry,
    experiment_names,
    index_listing,
    put_segment,
)


@dataclass
class ReindexResult:
    experiments: int = 0
    runs: int = 0
    problems: list[IndexDamage] = field(default_factory=list)


class _Damaged(Exception):  # noqa: N818 (a record that is damaged, reported and passed over)
    pass


def _read(store: ArtifactStore, key: str):
    """The JSON under ``key``; raises _Damaged for :data:`~fdshpo.tracking.index.DAMAGE`
    (checksum, decoding), the StoreError itself for anything else (never damage)."""
    try:
        return store.get_json(key)
    except DAMAGE as exc:
        raise _Damaged(str(exc)) from None


def run_summary(store: ArtifactStore, layout: RunLayout, keys: set[str],
                problems: list[IndexDamage]) -> dict | None:
    """The entry a run's own folder supports (``keys``: the folder's keys), or None.

    Only damage (a checksum mismatch, bytes that do not decode, a record without the fields
    of one) is reported in ``problems`` and passed over; any other StoreError is raised, so
    a read that failed never demotes a complete run to incomplete."""
    config_doc = {}
    if layout.config in keys:
        try:
            config_doc = _read(store, layout.config)
            if not isinstance(config_doc, dict):
                config_doc = {}
                raise _Damaged("a run's config is a JSON object")
        except _Damaged as exc:
            problems.append(IndexDamage(layout.config, str(exc)))
    if layout.record in keys:
        try:
            record = _read(store, layout.record)
            digest = store.checksum(layout.record)
            try:
                return complete_entry(record, digest, config_doc)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _Damaged(f"missing or wrong field {exc}") from None
        except _Damaged as exc:
            problems.append(IndexDamage(layout.record, f"not a valid run record ({exc}); the run "
                                                   "is listed as incomplete"))
    events = sorted(k for k in keys if k.startswith(layout.events))
    for key in reversed(events):
        try:
            event = _read(store, key)
            try:
                return event_entry(layout.experiment, layout.run_id, event, config_doc)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _Damaged(f"not an event: missing or wrong field {exc}") from None
        except _Damaged as exc:
            problems.append(IndexDamage(key, str(exc)))
    if layout.config not in keys:
        return None
    steps = sorted(k for k in keys if k.startswith(layout.key("steps/")))
    last = None
    if steps:
        try:
            last = _read(store, steps[-1]).get("val_loss")
        except (_Damaged, AttributeError):
            last = None
    return event_entry(layout.experiment, layout.run_id,  # recorded before events existed
                       {"status": "incomplete", "at": "00000000T000000.000000Z-0000",
                        "outer_steps": len(steps), "final_val_loss": last}, config_doc)


def reindex(store: ArtifactStore, experiment: str | None = None) -> ReindexResult:
    """Rebuild the index of one experiment (or all) from the run folders, then remove the
    entries and segments it replaces. Entries written while it runs are kept.

    Damaged records are reported in the result; any other store error while reading the run
    folders raises StoreError before anything is written or removed."""
    result = ReindexResult()
    prefix = f"{EXPERIMENTS}/{check_name(experiment, 'experiment name')}/" if experiment \
        else f"{EXPERIMENTS}/"
    old = {exp: index_listing(store, exp) for exp in
           ([experiment] if experiment else experiment_names(store))}  # before the folders
    runs: dict[tuple[str, str], set[str]] = {}
    for key in store.list(prefix):
        parsed = parse_run_key(key)
        if parsed:
            runs.setdefault(parsed, set()).add(key)
    by_experiment: dict[str, list[dict]] = {}
    for (exp, run_id), keys in sorted(runs.items()):
        try:
            summary = run_summary(store, RunLayout(exp, run_id), keys, result.problems)
        except StoreError as exc:
            raise StoreError(f"reindex stopped at run {exp}/{run_id}: {exc}. The index was "
                             "left as it was (no run marked incomplete); run `fdshpo runs "
                             "reindex` again when the store answers") from None
        if summary is not None:
            by_experiment.setdefault(exp, []).append(summary)
    written = set()
    for exp, summaries in by_experiment.items():
        for start in range(0, len(summaries), MAX_SEGMENT):
            written.add(put_segment(store, exp, REINDEX_LEVEL,
                                     summaries[start:start + MAX_SEGMENT]))
        result.runs += len(summaries)
    for listing in old.values():
        for key in listing.entries + listing.segments:
            if key not in written:
                store.delete(key)
    result.experiments = len(by_experiment)
    return result


def verify(store: ArtifactStore, rows: list[dict]) -> tuple[list[dict], list[IndexDamage]]:
    """Check each row against its run folder (one stat per row): a complete run's record must
    exist with the sha256 its entry names; other runs need their config. Returns the rows that
    pass and the problems of the others; a store error that is not such a finding is raised."""
    good, problems = [], []
    for row in rows:
        layout = RunLayout(row["experiment"], row["run_id"])
        wrong = None
        if row["status"] == "complete":
            try:
                actual = store.checksum(layout.record)
            except (ArtifactNotFound, IntegrityError) as exc:
                wrong = str(exc)
            else:
                if actual != row["record_sha256"]:
                    wrong = (f"run.json has sha256 {actual}, the index entry "
                             f"{row['record_sha256']}")
        elif not store.exists(layout.config):
            wrong = "the run has no config.json"
        if wrong is not None:
            problems.append(IndexDamage(layout.prefix, f"{wrong}; not listed (`fdshpo runs "
                                                   "reindex` repairs the index)"))
            continue
        good.append(row)
    return good, problems

"""The run index: one summary per run, listed in a few reads however many runs a store holds.

Keys (:mod:`fdshpo.store.layout`)::

    index/<experiment>/entries/<run>.complete.json            written after the run's run.json
    index/<experiment>/entries/<run>.<stamp>-<status>.json    after each start / failure event
    index/<experiment>/segments/<level>-<digest>.json         many entries, compacted

An entry is a run summary (:mod:`fdshpo.tracking.query` lists its fields) derived from what the
run's
own folder already holds: ``run.json`` (a complete run; the entry carries its sha256) or the
newest ``events/`` object (``incomplete`` or ``failed``), plus ``config.json``. It is written
only after those, so an entry never claims a record that was not written first.

Nothing shared is ever rewritten:

- Every entry and segment is write-once (the store's ``put_bytes``). Entries of one run have
  distinct keys; a complete entry is a pure function of the record, so a retried finish
  writes the same bytes.
- A writer that sees :data:`COMPACT_AT` loose entries compacts them into a level-0 segment
  whose name is the digest of the entries it covers (two compactors of the same entries write
  the same bytes), then deletes those entries. :data:`MERGE_FAN_IN` level-0 (or level-1)
  segments are merged into one of the next level the same way, up to :data:`MAX_SEGMENT`
  entries; the merged ones are deleted after. A compaction lease keeps a crowd of writers
  from compacting the same entries at once; it saves work only, correctness does not need it.
- Readers take, per run, the highest-ranked entry (complete > the newest event), so a
  duplicate left by concurrent or interrupted compactions changes nothing. A listed object
  that vanishes before it is read was compacted meanwhile: the read starts over.

A damaged entry or segment (sha256 mismatch, not JSON, wrong fields, a name that does not
match its contents: :data:`DAMAGE`) is reported and skipped; ``fdshpo runs reindex`` rebuilds
the index from the run folders. Errors are not damage: any other store error (an unreachable
endpoint, refused keys) aborts the read with :func:`unreadable`'s message, so a listing is
whole or not given, and a writer's compaction merely waits for the next writer. Readers keep
one segment and, per run, its rank in memory (a few dozen bytes), plus the page they return.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..store.base import (
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    StoreError,
    check_name,
)
from ..store.credentials import redact_userinfo
from ..store.layout import (
    INDEX,
    compactor_lease,
    index_entry,
    index_prefix,
    index_segment,
)
from ..store.lease import Lease

VERSION = 1
COMPACT_AT = 32
MERGE_FAN_IN = 8
MAX_SEGMENT = 2500
REINDEX_LEVEL = 3
STATUSES = ("complete", "incomplete", "failed")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMPLETE = (2, "", False, "")
#: what counts as damage when reading a record: a checksum mismatch or bytes that do not
#: decode (not JSON, not UTF-8). Any other StoreError is an error, never damage.
DAMAGE = (IntegrityError, ValueError)


def unreadable(key: str, exc: StoreError) -> StoreError:
    """The error that aborts a read of the run index: ``key`` could not be read (``exc``,
    not damage), so nothing is listed rather than a listing with runs missing."""
    return StoreError(f"the run index could not be read at {key} ({exc}); nothing was "
                      "skipped or listed: retry when the store answers")


@dataclass(frozen=True)
class IndexDamage:
    """A damaged index object or run record: where, and what is wrong."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class _Vanished(Exception):  # noqa: N818 (a signal to start over, not a failure)
    """A listed index object was deleted (compacted) before it could be read."""


# -- entries -------------------------------------------------------------------------------------
def event_stamp(clock: Callable[[], float] = time.time) -> str:
    """A sortable, key-safe UTC time with microseconds plus 4 random hex digits."""
    now = clock()
    return (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z-"
            + secrets.token_hex(2))


def config_sha256(config: Mapping) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def engine_of(config: Mapping) -> str | None:
    """The configured engine's name (``engine: forward`` or ``engine: {name: ...}``)."""
    engine = config.get("engine")
    if isinstance(engine, Mapping):
        engine = engine.get("name") or engine.get("kind")
    return str(engine) if engine is not None else None


def _common(config_doc: Mapping, ran: Mapping) -> dict:
    """The fields every entry has; ``engine`` is the engine that ran (``ran``: the record or
    event; one written before it said so gives the configured engine)."""
    config = config_doc.get("config") or {}
    return {"version": VERSION, "started": config_doc.get("started"),
            "engine": ran["engine"] if "engine" in ran else engine_of(config),
            "config_sha256": config_sha256(config), "parent": config_doc.get("parent")}


def complete_entry(record: Mapping, record_sha256: str, config_doc: Mapping) -> dict:
    """The entry of a complete run: its record (read back verified) and config document."""
    return {**_common(config_doc, record), "experiment": record["experiment"],
            "run_id": record["run_id"], "status": "complete", "at": record["finished"],
            "started": record.get("started") or config_doc.get("started"),
            "finished": record["finished"], "outer_steps": int(record["outer_steps"]),
            "final_val_loss": record.get("final_val_loss"),
            **{k: record[k] for k in ("selected_outer_step", "selected_val_loss")
               if k in record},  # absent: recorded before fdshpo said which step it returned
            "metrics": dict(record.get("metrics") or {}), "record_sha256": record_sha256,
            "has_report": "report.html" in (record.get("artifacts") or {}), "error": None}


def event_entry(experiment: str, run_id: str, event: Mapping, config_doc: Mapping) -> dict:
    """The entry of a run's start or failure event (``events/<name>.json``)."""
    return {**_common(config_doc, event), "experiment": experiment, "run_id": run_id,
            "status": event["status"], "at": event["at"], "finished": None,
            "outer_steps": int(event.get("outer_steps", 0)),
            "final_val_loss": event.get("final_val_loss"), "metrics": {},
            "record_sha256": None, "error": _redacted(event.get("error"))}


def _redacted(error):
    """An event's error message with any URL's user info hidden (events written by an older
    fdshpo may hold one)."""
    return redact_userinfo(error) if isinstance(error, str) else error


def event_name(event: Mapping) -> str:
    """``<stamp>-started`` or ``<stamp>-failed``: an event's name in the run folder."""
    return f"{event['at']}-{'failed' if event['status'] == 'failed' else 'started'}"


def entry_name(entry: Mapping) -> str:
    """``<run>.complete.json`` or ``<run>.<event name>.json``."""
    kind = "complete" if entry["status"] == "complete" else event_name(entry)
    return f"{entry['run_id']}.{kind}.json"


def rank(entry: Mapping) -> tuple:
    """Which entry of a run wins: complete, else the newest event (a failure over a start)."""
    if entry["status"] == "complete":
        return _COMPLETE
    when = entry["at"].rsplit("-", 1)[0]  # the stamp's time; events in one microsecond: a
    return (1, when, entry["status"] == "failed", entry["at"])  # failure wins over a start


def _check_number(entry: Mapping, key: str) -> None:
    value = entry.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{key} is {value!r}, not a number")


def check_entry(entry, experiment: str, name: str | None = None) -> dict:
    """``entry`` if it is a well-formed entry of ``experiment`` (named ``name``), else raise
    ValueError saying what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError(f"an entry is a JSON object, got {type(entry).__name__}")
    missing = [k for k in ("version", "experiment", "run_id", "status", "at", "outer_steps",
                           "metrics") if k not in entry]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    if entry["version"] != VERSION:
        raise ValueError(f"version {entry['version']!r}, this fdshpo reads {VERSION}")
    if entry["experiment"] != experiment:
        raise ValueError(f"experiment {entry['experiment']!r} under {experiment!r}")
    check_name(entry["run_id"], "run id")
    if entry["status"] not in STATUSES:
        raise ValueError(f"status {entry['status']!r} is not one of {list(STATUSES)}")
    if not isinstance(entry["at"], str) or not entry["at"]:
        raise ValueError(f"at is {entry['at']!r}")
    if entry["status"] == "complete" and not _HEX64.match(str(entry.get("record_sha256"))):
        raise ValueError("a complete entry without the sha256 of its record")
    if isinstance(entry["outer_steps"], bool) or not isinstance(entry["outer_steps"], int) \
            or entry["outer_steps"] < 0:
        raise ValueError(f"outer_steps is {entry['outer_steps']!r}")
    _check_number(entry, "final_val_loss")
    _check_number(entry, "selected_val_loss")
    _check_number(entry, "selected_outer_step")
    if not isinstance(entry["metrics"], dict):
        raise ValueError("metrics is not an object")
    for key in ("started", "finished", "engine", "parent", "error"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise ValueError(f"{key} is {entry[key]!r}, not a string")
    if name is not None and name != entry_name(entry):
        raise ValueError(f"its name should be {entry_name(entry)!r} for its contents")
    return entry


def check_segment(segment) -> dict:
    """``segment`` if it has a segment's shape (an object whose ``entries`` is a list and
    whose ``covers`` / ``replaces`` are lists of names), else raise ValueError saying what is
    wrong. Its entries are checked one by one (:func:`check_entry`) where they are read."""
    if not isinstance(segment, dict):
        raise ValueError(f"a segment is a JSON object, got {type(segment).__name__}")
    if not isinstance(segment.get("entries"), list):
        raise ValueError("not a segment: its entries are not a list")
    for name in ("covers", "replaces"):
        names = segment.get(name) or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"not a segment: {name} is not a list of names")
    return segment


def write_entry(store: ArtifactStore, entry: dict) -> str:
    """Write a (checked) entry, write-once; then compact the experiment's entries if
    :data:`COMPACT_AT` or more are loose. A failed compaction only warns: the entry is
    written, and the next writer compacts."""
    experiment = entry["experiment"]
    check_entry(entry, experiment)
    key = index_entry(experiment, entry_name(entry))
    store.put_json(key, entry)
    try:
        compact(store, experiment)
    except StoreError as exc:
        warnings.warn(f"index compaction of {experiment!r} did not complete ({exc}); the "
                      "next writer retries it", stacklevel=2)
    return key


# -- reading -------------------------------------------------------------------------------------
#: index objects fetched at once by a reader (bounded: memory holds at most this many segments)
FETCH_WINDOW = 8


def _experiment_of(key: str) -> str:
    return key.split("/")[1]


def _segment_level(key: str) -> int:
    try:
        return int(key.rsplit("/", 1)[1].split("-", 1)[0])
    except ValueError:
        return -1


@dataclass
class IndexListing:
    """One listing of the index: loose entry keys and segment keys (highest level first)."""

    entries: list[str]
    segments: list[str]
    cache: dict[str, object] = field(default_factory=dict)  # loose entries read once


def index_listing(store: ArtifactStore, experiment: str | None) -> IndexListing:
    entries, segments = [], []
    for key in store.list(index_prefix(experiment)):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == "entries":
            entries.append(key)
        elif len(parts) == 4 and parts[2] == "segments":
            segments.append(key)
    segments.sort(key=lambda k: (-_segment_level(k), k))
    return IndexListing(entries, segments)


def _fetch(store: ArtifactStore, keys: list[str]) -> Iterator[tuple[str, object]]:
    """(key, parsed JSON or the :data:`DAMAGE` met) in order, up to FETCH_WINDOW requests in
    flight. Raises _Vanished for a key that no longer exists, and :func:`unreadable` for any
    other store error."""
    def get(key: str):
        try:
            return store.get_json(key)
        except ArtifactNotFound as exc:
            return _Vanished(key, exc)
        except DAMAGE as exc:
            return exc
        except StoreError as exc:
            return unreadable(key, exc)

    if len(keys) <= 1:
        results = ((k, get(k)) for k in keys)
    else:
        pool = ThreadPoolExecutor(min(FETCH_WINDOW, len(keys)))
        results = _windowed(pool, get, keys)
    try:
        for key, value in results:
            if isinstance(value, (_Vanished, StoreError)) and not isinstance(value, DAMAGE):
                raise value
            yield key, value
    finally:
        results.close()  # here, in this thread: not later, from the garbage collector


def _windowed(pool: ThreadPoolExecutor, get, keys: list[str]):
    """(key, get(key)) in order with up to FETCH_WINDOW gets in flight. Closing it early
    cancels the gets not started and does not wait for the running ones: a generator left
    unfinished is closed by the garbage collector in whatever thread it runs in, possibly one
    holding the S3 client's connection-pool lock that those gets wait for (a deadlock,
    seen when a listed key vanished mid-read under concurrent compaction)."""
    try:
        pending = deque((k, pool.submit(get, k)) for k in keys[:FETCH_WINDOW])
        upcoming = iter(keys[FETCH_WINDOW:])
        while pending:
            key, future = pending.popleft()
            following = next(upcoming, None)
            if following is not None:
                pending.append((following, pool.submit(get, following)))
            yield key, future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _raw_entries(store: ArtifactStore, listing: IndexListing,
                 problems: list[IndexDamage] | None) -> Iterator[dict]:
    """Every readable entry of ``listing`` (duplicates included): segments one window at a
    time, loose entries from the listing's cache once read. Damaged objects go to
    ``problems``; raises _Vanished when a listed object is gone."""
    def damaged(key: str, why: str) -> None:
        if problems is not None:
            problems.append(IndexDamage(key, f"damaged index object skipped ({why}); "
                                         "`fdshpo runs reindex` rebuilds it"))

    replaced, covered = set(), set()
    for key, segment in _fetch(store, listing.segments):
        if key.rsplit("/", 1)[1] in replaced:
            continue
        try:
            if isinstance(segment, Exception):
                raise segment
            check_segment(segment)
        except DAMAGE as exc:
            damaged(key, str(exc))
            continue
        replaced.update(segment.get("replaces") or ())
        covered.update(segment.get("covers") or ())
        experiment = _experiment_of(key)
        for i, entry in enumerate(segment["entries"]):
            try:
                yield check_entry(entry, experiment)
            except ValueError as exc:
                damaged(f"{key}#{i}", str(exc))
    loose = [k for k in listing.entries if k.rsplit("/", 1)[1] not in covered]
    missing = [k for k in loose if k not in listing.cache]
    listing.cache.update(_fetch(store, missing))
    for key in loose:
        value = listing.cache[key]
        try:
            if isinstance(value, Exception):
                raise value
            yield check_entry(value, _experiment_of(key), key.rsplit("/", 1)[1])
        except DAMAGE as exc:
            damaged(key, str(exc))


def unique_entries(store: ArtifactStore, experiment: str | None = None,
                   problems: list[IndexDamage] | None = None,
                   seen: Callable[[dict], None] | None = None,
                   between: Callable[[], None] | None = None) -> Iterator[dict]:
    """The winning entry of every run in the index (of one experiment, or all), in no
    particular order. Two passes over one listing: the first finds each run's rank (``seen``
    is called with every entry, then ``between`` once), the second yields the winners. Memory
    holds a window of segments, the loose entries (at most about COMPACT_AT per experiment)
    and one rank per run, never every entry. Raises _Vanished (callers retry)."""
    listing = index_listing(store, experiment)
    best: dict[str, tuple] = {}
    for entry in _raw_entries(store, listing, problems):
        run = f"{entry['experiment']}/{entry['run_id']}"
        r = rank(entry)
        if r == _COMPLETE:
            r = _COMPLETE  # one shared tuple for every complete run
        if run not in best or best[run] < r:
            best[run] = r
        if seen is not None:
            seen(entry)
    if between is not None:
        between()
    done = ()
    for entry in _raw_entries(store, listing, None):
        run = f"{entry['experiment']}/{entry['run_id']}"
        if best.get(run, done) == rank(entry):
            best[run] = done  # duplicates of the winner are skipped
            yield entry


def winning_entries(store: ArtifactStore, experiment: str | None = None,
                    problems: list[IndexDamage] | None = None,
                    seen: Callable[[dict], None] | None = None,
                    keep: Callable[[dict], bool] | None = None) -> tuple[list[dict], int]:
    """(the winning entries that ``keep`` accepts, the number of runs read), in one pass: for
    a page that holds every accepted run anyway (no limit), half the reads of
    :func:`unique_entries`. Memory: the accepted entries and one rank per run. Raises
    _Vanished (callers retry)."""
    best: dict[str, tuple] = {}
    kept: dict[str, dict] = {}
    for entry in _raw_entries(store, index_listing(store, experiment), problems):
        if seen is not None:
            seen(entry)
        run = f"{entry['experiment']}/{entry['run_id']}"
        r = rank(entry)
        if run in best and best[run] >= r:
            continue
        best[run] = _COMPLETE if r == _COMPLETE else r
        if keep is None or keep(entry):
            kept[run] = entry
        else:
            kept.pop(run, None)
    return list(kept.values()), len(best)


def retrying(read: Callable[[], object], attempts: int = 5):
    """``read()``, started over when the index changed under it (compaction)."""
    for _ in range(attempts):
        try:
            return read()
        except _Vanished:
            continue
    raise StoreError(f"the run index changed during {attempts} reads in a row (many runs "
                     "finishing at once); retry")


def experiment_names(store: ArtifactStore) -> list[str]:
    """Experiments with index objects."""
    return sorted({key.split("/")[1] for key in store.list(f"{INDEX}/")
                   if len(key.split("/")) == 4})


# -- compaction ----------------------------------------------------------------------------------
def put_segment(store: ArtifactStore, experiment: str, level: int, entries: list[dict],
                 covers: list[str] = (), replaces: list[str] = ()) -> str:
    """Write a segment named by its level and the digest of its contents (so compactors of
    the same inputs write the same object); returns its key."""
    body = {"version": VERSION, "experiment": experiment, "level": level,
            "covers": sorted(covers), "replaces": sorted(replaces), "entries": _winners(entries)}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    key = index_segment(experiment, f"{level}-{digest}.json")
    store.put_json(key, body)
    return key


def _winners(entries: list[dict]) -> list[dict]:
    best: dict[str, dict] = {}
    for entry in entries:
        current = best.get(entry["run_id"])
        if current is None or rank(current) < rank(entry):
            best[entry["run_id"]] = entry
    return [best[k] for k in sorted(best)]


def compact(store: ArtifactStore, experiment: str, force: bool = False) -> bool:
    """Fold loose entries into a segment and merge small segments (see the module
    docstring); True when anything was compacted. Skips when another compaction holds the
    experiment's compactor lease."""
    listing = index_listing(store, experiment)
    entries = listing.entries
    small = [k for k in listing.segments if _segment_level(k) in (0, 1)]
    threshold = 1 if force else COMPACT_AT
    if len(entries) < threshold and len(small) < MERGE_FAN_IN:
        return False
    lease = Lease(store, compactor_lease(experiment), f"index compaction of {experiment!r}",
                  ttl=120)
    if not lease.try_acquire():
        return False
    try:
        changed = False
        if len(entries) >= threshold:
            absorbed, names = [], []
            for key in entries:
                try:
                    absorbed.append(check_entry(store.get_json(key), experiment,
                                                key.rsplit("/", 1)[1]))
                    names.append(key.rsplit("/", 1)[1])
                except ArtifactNotFound:
                    continue  # compacted by another writer meanwhile
                except DAMAGE:
                    continue  # damaged: left for reindex, reported by readers
            if names:
                put_segment(store, experiment, 0, absorbed, covers=names)
                for name in names:
                    store.delete(index_entry(experiment, name))
                changed = True
        for level in (0, 1):
            changed |= _merge_level(store, experiment, level)
        return changed
    finally:
        lease.release()


def _merge_level(store: ArtifactStore, experiment: str, level: int) -> bool:
    group = sorted(k for k in index_listing(store, experiment).segments
                   if _segment_level(k) == level)
    if len(group) < MERGE_FAN_IN:
        return False
    merged, names = [], []
    for key in group:
        try:
            segment = check_segment(store.get_json(key))
        except ArtifactNotFound:
            continue
        except DAMAGE:
            continue  # damaged (also a checksummed object of the wrong shape): left in
            # place, reported by readers, never a failure of the writer that compacts
        if len(merged) + len(segment["entries"]) > MAX_SEGMENT and names:
            break
        good = []
        for entry in segment["entries"]:
            try:
                good.append(check_entry(entry, experiment))
            except ValueError:
                continue
        merged += good
        names.append(key.rsplit("/", 1)[1])
    if len(names) < 2:
        return False
    put_segment(store, experiment, level + 1, merged, replaces=names)
    for name in names:
        store.delete(index_segment(experiment, name))
    return True

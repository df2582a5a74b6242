"""The run index against the real S3 server and the local store: consistency while many runs
finish at once, reindex equals the incremental index, filters and sorting, damaged entries,
bad queries, and read-only commands that never import torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading

import pytest

from fdshpo import Schedule
from fdshpo.cli import main as cli
from fdshpo.store import StoreError, open_store
from fdshpo.store.layout import RunLayout, index_entry
from fdshpo.tracking import index
from fdshpo.tracking.query import Query
from fdshpo.tracking.reader import experiments_overview, list_runs
from fdshpo.tracking.recorder import RunRecorder
from fdshpo.tracking.reindex import reindex


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "store")
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/runs")


@pytest.fixture
def small_index(monkeypatch):
    """Compact after 4 loose entries and merge 3 segments: every path runs with few runs."""
    monkeypatch.setattr(index, "COMPACT_AT", 4)
    monkeypatch.setattr(index, "MERGE_FAN_IN", 3)


def _schedule(lr: float) -> Schedule:
    return Schedule.constant(8, lr=lr, momentum=0.5, segments={"lr": 2})


def _record(store, experiment, run_id, accuracy=None, status="complete", clock=None):
    kwargs = {"clock": clock} if clock else {}
    recorder = RunRecorder(store, experiment, run_id, **kwargs)
    recorder.start({"lr": accuracy, "engine": "forward"})
    if status == "complete":
        metrics = {} if accuracy is None else {"test_accuracy": accuracy}
        recorder.finish(_schedule(0.1), metrics, report=False)
    elif status == "failed":
        recorder.fail("diverged")
    else:
        recorder.close()
    return recorder


def _rows(store, **options):
    return list_runs(store, Query.from_options(**options)).rows


def _uri(store) -> str:
    """What a user passes as --store for ``store``."""
    return str(store.root) if hasattr(store, "root") else store.uri


def _tamper(store, key: str, data: bytes) -> None:
    """Rewrite an object behind fdshpo's back, keeping its recorded sha256 (bit rot)."""
    if hasattr(store, "root"):
        (store.root / key).write_bytes(data)
        return
    recorded = store.checksum(key)
    store._client.put_object(store.bucket, store._object(key), io.BytesIO(data), len(data),
                             metadata={"sha256": recorded})


def test_concurrent_finishes_keep_the_index_consistent(store, small_index):
    runs = [(f"exp{i % 2}", f"run{i:03d}") for i in range(24)]
    recorders = []
    for exp, run_id in runs:
        recorder = RunRecorder(store, exp, run_id)
        recorder.start({"i": run_id})
        recorders.append(recorder)
    barrier, done = threading.Barrier(len(runs)), threading.Event()
    errors, seen = [], []

    def finish(recorder, i):
        try:
            barrier.wait(30)
            recorder.finish(_schedule(0.1), {"test_accuracy": i / 100}, report=False)
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    def read():  # while runs finish and compactions delete entries, never lose a run
        try:
            while not done.is_set():
                listing = list_runs(store)
                seen.append([(r["experiment"], r["run_id"], r["status"]) for r in listing.rows])
                assert listing.problems == []
                for r in listing.rows:  # a run listed complete has its record, already
                    if r["status"] == "complete":
                        assert store.exists(RunLayout(r["experiment"], r["run_id"]).record)
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    reader = threading.Thread(target=read)
    threads = [threading.Thread(target=finish, args=(r, i)) for i, r in enumerate(recorders)]
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    reader.join(120)
    assert errors == []
    assert seen and all(sorted((e, r) for e, r, _ in rows) == sorted(runs) for rows in seen)
    for before, after in zip(seen, seen[1:]):  # a run once listed complete stays complete
        assert {(e, r) for e, r, s in before if s == "complete"} <= {
            (e, r) for e, r, s in after if s == "complete"}
    final = list_runs(store)
    assert [(r["experiment"], r["run_id"], r["status"], r["metrics"]["test_accuracy"])
            for r in final.rows] == [(e, r, "complete", i / 100) for i, (e, r) in
                                     sorted(enumerate(runs), key=lambda x: x[1])]
    keys = store.list("index/")
    assert any("/segments/" in k for k in keys), "compaction never ran"
    reindex(store)
    assert list_runs(store).rows == final.rows


def test_reindex_equals_the_incremental_index(store, small_index, capsys):
    for i in range(7):
        _record(store, "a", f"done{i}", accuracy=0.5 + i / 10)
    _record(store, "a", "failed", accuracy=0.1, status="failed")
    _record(store, "b", "running", accuracy=0.2, status="incomplete")
    resumed = _record(store, "b", "resumed", accuracy=0.3, status="failed")
    RunRecorder(store, "b", "resumed").start({"lr": 0.3, "engine": "forward"})
    del resumed
    incremental = list_runs(store)
    assert [r["status"] for r in incremental.rows] == ["complete"] * 7 + ["failed"] + [
        "incomplete"] * 2
    result = reindex(store)
    assert (result.runs, result.experiments, result.problems) == (10, 2, [])
    assert list_runs(store).rows == incremental.rows
    # a store without its index (written before it): list says how to get it back
    for key in store.list("index/"):
        store.delete(key)
    assert cli(["runs", "list", "--store", _uri(store)]) == 0
    out = capsys.readouterr().out
    assert "no runs in" in out and "`fdshpo runs reindex` once to list them" in out
    reindex(store)
    assert list_runs(store).rows == incremental.rows


def test_filters_and_sorting(store, capsys):
    at = {"t": 1_800_000_000.0}
    for i, (exp, acc, status) in enumerate([("a", 0.91, "complete"), ("a", 0.85, "complete"),
                                            ("b", 0.95, "complete"), ("b", None, "complete"),
                                            ("a", 0.5, "failed"), ("b", 0.7, "incomplete")]):
        at["t"] += 86400  # one run a day
        _record(store, exp, f"r{i}", accuracy=acc, status=status,
                clock=lambda t=at["t"]: t)
    ids = lambda rows: [r["run_id"] for r in rows]  # noqa: E731
    assert ids(_rows(store)) == ["r0", "r1", "r4", "r2", "r3", "r5"]  # experiment, run
    # runs without the key come last, in the default order
    assert ids(_rows(store, sort="-test_accuracy")) == ["r2", "r0", "r1", "r4", "r3", "r5"]
    assert ids(_rows(store, sort="test_accuracy", limit=2)) == ["r1", "r0"]
    assert ids(_rows(store, where=["test_accuracy>=0.9"])) == ["r0", "r2"]
    assert ids(_rows(store, where=["test_accuracy>0.8 and experiment=a"])) == ["r0", "r1"]
    assert ids(_rows(store, where=["status!=complete", "experiment==b"])) == ["r5"]
    assert ids(_rows(store, status="failed")) == ["r4"]
    assert ids(_rows(store, experiment="b", sort="-started")) == ["r5", "r3", "r2"]
    assert ids(_rows(store, since="2027-01-20")) == ["r4", "r5"]  # r0 started 2027-01-16
    assert ids(_rows(store, where=["started<2027-01-19T00:00"])) == ["r0", "r1", "r2"]
    listing = list_runs(store, Query.from_options(sort="-test_accuracy", limit=1))
    assert (listing.matched, listing.scanned) == (6, 6)
    uri = _uri(store)
    assert cli(["runs", "list", "--store", uri, "--sort", "-test_accuracy", "--limit", "2",
                "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["run_id"], r["metrics"]) for r in rows] == [("r2", {"test_accuracy": 0.95}),
                                                           ("r0", {"test_accuracy": 0.91})]
    assert cli(["runs", "list", "--store", uri, "--where", "test_accuracy>0.8", "--limit",
                "2"]) == 0
    out = capsys.readouterr().out
    assert "(2 of 3 matching runs; --limit to see more)" in out
    assert cli(["runs", "compare", "--store", uri, "--experiment", "a", "--status",
                "complete"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["a/r0", "a/r1"] and "metric test_accuracy" in out
    assert cli(["experiments", "list", "--store", uri, "--json"]) == 0
    a, b = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (a["runs"], a["complete"], a["failed"], a["best_run"], a["best"], a["latest"]) == (
        3, 2, 1, "r0", 0.91, "r1")
    assert (b["runs"], b["incomplete"], b["best_run"], b["last_run"], b["latest"]) == (
        3, 1, "r2", "r5", "r3")
    rows, _ = experiments_overview(store, best="test_accuracy")
    assert [r["best_run"] for r in rows] == ["r1", "r2"]


KNOWN = ("known keys: experiment, run_id, status, started, finished, outer_steps, "
         "final_val_loss, selected_outer_step, selected_val_loss, engine, config_sha256, "
         "parent, test_accuracy")


@pytest.mark.parametrize("args, message", [
    (["--where", "accuracy>0.9"], f"unknown key 'accuracy' in --where; {KNOWN}"),
    (["--sort", "-acc"], f"unknown key 'acc' in --sort; {KNOWN}"),
    (["--where", "test_accuracy>>0.9"],
     "cannot parse --where 'test_accuracy>>0.9' at character 15: expected a value after '>', "
     "found '>'\n  test_accuracy>>0.9\n                ^"),
    (["--where", "test_accuracy>0.9 status=complete"],
     "cannot parse --where 'test_accuracy>0.9 status=complete' at character 19: expected ',' "
     "or 'and' before the next condition, found 's'\n  test_accuracy>0.9 status=complete\n"
     "                    ^"),
    (["--where", "status=done"],
     "--where status=done: a status is one of complete, incomplete, failed"),
    (["--since", "last tuesday"], "cannot read --since 'last tuesday' as a date: use "
                                  "YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS (UTC)"),
    (["--limit", "0"], "--limit must be at least 1, got 0"),
])
def test_bad_queries_say_what_to_change(tmp_path, capsys, args, message):
    _record(open_store(tmp_path), "a", "r0", accuracy=0.5)
    assert cli(["runs", "list", "--store", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err == f"fdshpo: error: {message}\n"


def test_damaged_entries_are_reported_skipped_and_repaired_by_reindex(store, small_index,
                                                                       capsys):
    for i in range(6):
        _record(store, "a", f"r{i}", accuracy=i / 10)
    good = list_runs(store).rows
    segment = next(k for k in store.list("index/a/segments/"))
    _tamper(store, segment, b'{"entries": []}')  # bit rot: sha256 no longer matches
    entry = good[0]
    # a well-formed entry that lies: it claims a run that has no record at all
    forged = dict(entry, run_id="ghost", record_sha256="0" * 64)
    store.put_json(index_entry("a", "ghost.complete.json"), forged)
    # and one whose contents do not match its name
    store.put_json(index_entry("a", "r9.complete.json"), dict(entry))
    listing = list_runs(store)
    messages = [str(p) for p in listing.problems]
    assert any(segment in m and "damaged index object skipped" in m and "sha256" in m
               and "`fdshpo runs reindex` rebuilds it" in m for m in messages), messages
    assert any("r9.complete.json" in m and "its name should be" in m for m in messages)
    assert "ghost" in [r["run_id"] for r in listing.rows]
    assert cli(["runs", "list", "--store", _uri(store), "--verify"]) == 0
    captured = capsys.readouterr()
    assert "ghost" not in captured.out and "damaged index object skipped" in captured.err
    assert "experiments/a/runs/ghost: " in captured.err and "not listed" in captured.err
    assert cli(["runs", "reindex", "--store", _uri(store)]) == 0
    assert "indexed 6 run(s) of 1 experiment(s)" in capsys.readouterr().out
    repaired = list_runs(store)
    assert repaired.problems == [] and repaired.rows == good


def test_a_damaged_latest_pointer_falls_back_to_the_index(tmp_path):
    from fdshpo.tracking.recorder import latest_finished

    store = open_store(tmp_path)
    _record(store, "a", "r0", accuracy=0.5, clock=lambda: 1_800_000_000.0)
    _record(store, "a", "r1", accuracy=0.6, clock=lambda: 1_800_000_100.0)
    (tmp_path / "experiments/a/latest.json").write_text("{}")
    with pytest.warns(UserWarning, match="latest.json is damaged .* newest complete run record "
                                         "in the index"):
        assert latest_finished(store, "a") == ("r1", _schedule(0.1))


def test_show_and_compare_resolve_runs_through_the_index(store, capsys):
    _record(store, "a", "20261130-aaaa", accuracy=0.5)
    _record(store, "b", "20261130-bbbb", accuracy=0.6)
    uri = _uri(store)
    assert cli(["runs", "show", "--store", uri, "20261130-b"]) == 0
    assert "run b/20261130-bbbb: complete" in capsys.readouterr().out
    assert cli(["runs", "show", "--store", uri, "20261130"]) == 2
    assert "is ambiguous" in capsys.readouterr().err
    assert cli(["runs", "compare", "--store", uri, "20261130-a", "b/20261130-bbbb"]) == 0
    assert "config lr" in capsys.readouterr().out
    assert cli(["runs", "compare", "--store", uri, "--where", "test_accuracy>0.55"]) == 2
    assert "needs at least two runs, got 1" in capsys.readouterr().err


READ_ONLY = """
import sys
from fdshpo.cli import main
for argv in (["runs", "list"], ["runs", "list", "--json", "--sort", "-test_accuracy"],
             ["experiments", "list"], ["runs", "show", "r0"], ["runs", "compare", "r0", "r1"]):
    assert main([*argv, "--store", sys.argv[1]]) == 0, argv
assert "torch" not in sys.modules, "a read-only command imported torch"
print("ok")
"""


def test_read_only_commands_do_not_import_torch(tmp_path):
    store = open_store(tmp_path)
    _record(store, "a", "r0", accuracy=0.5)
    _record(store, "a", "r1", accuracy=0.6)
    proc = subprocess.run([sys.executable, "-c", READ_ONLY, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
    for argv in (["--version"], ["--help"], ["runs", "list", "--help"]):
        proc = subprocess.run([sys.executable, "-c", "import sys\nfrom fdshpo.cli import main\n"
                               "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
                               "assert 'torch' not in sys.modules", *argv],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (argv, proc.stderr)


def test_index_entries_are_written_after_what_they_claim(tmp_path):
    """An entry never names a record that was not written before it."""
    store = open_store(tmp_path)
    order = []
    real_put = store.put_bytes

    def observed(key, data, overwrite=False):
        order.append(key)
        return real_put(key, data, overwrite)

    real_swap = store.swap_bytes

    def observed_swap(key, data, expected):  # the latest.json pointer's compare-and-write
        order.append(key)
        return real_swap(key, data, expected)

    store.put_bytes, store.swap_bytes = observed, observed_swap
    _record(store, "a", "r0", accuracy=0.5)
    layout = RunLayout("a", "r0")
    started = next(i for i, k in enumerate(order) if k.startswith("index/") and "started" in k)
    complete = order.index(index_entry("a", "r0.complete.json"))
    assert order.index(layout.config) < started
    assert max(i for i, k in enumerate(order) if k.startswith(layout.events)) < started
    assert order.index(layout.record) < complete < order.index("experiments/a/latest.json")


def test_experiments_list_explains_an_unknown_best_key(tmp_path, capsys):
    _record(open_store(tmp_path), "a", "r0", accuracy=0.5)
    assert cli(["experiments", "list", "--store", str(tmp_path), "--best", "-acc"]) == 2
    assert capsys.readouterr().err == f"fdshpo: error: unknown key 'acc' in --best; {KNOWN}\n"


def test_an_abandoned_index_read_does_not_wait_for_its_fetches():
    """A read left unfinished (a listed key vanished under compaction) is closed by whoever
    drops it, possibly the garbage collector in a thread holding the S3 client's pool lock
    that the running fetches wait for: closing must never wait for them (it deadlocked)."""
    from concurrent.futures import ThreadPoolExecutor

    release = threading.Event()

    def get(key):
        if key != "a":
            release.wait(60)
        return key

    reads = index._windowed(ThreadPoolExecutor(2), get, ["a", "b", "c"])
    assert next(reads) == ("a", "a")
    closer = threading.Thread(target=reads.close)
    closer.start()
    closer.join(10)
    stuck = closer.is_alive()
    release.set()
    closer.join()
    assert not stuck, "closing an unfinished index read waited for its running fetches"


# -- errors are not damage -----------------------------------------------------------------------
@pytest.fixture
def s3_store(s3_bucket, s3_env):
    return open_store(f"s3://{s3_bucket}/runs")


def fail_reads_of(store, s3_bucket: str, part: str) -> list[str]:
    """Fault injector: every read of a key containing ``part`` goes to an endpoint where
    nothing listens (a real network error from the real client, after a 0.5 s deadline);
    returns the keys it failed."""
    unreachable = open_store(f"s3://{s3_bucket}", s3_endpoint="http://127.0.0.1:9",
                             deadline=0.5)
    real, failed = store.get_bytes, []

    def get_bytes(key):
        if part in key:
            failed.append(key)
            return unreachable.get_bytes(key)
        return real(key)

    store.get_bytes = get_bytes
    return failed


def test_a_failed_index_read_aborts_the_listing_instead_of_skipping_runs(s3_store, s3_bucket,
                                                                         small_index):
    for i in range(9):
        _record(s3_store, "a", f"r{i}", accuracy=i / 10)
    assert len(list_runs(s3_store).rows) == 9
    failed = fail_reads_of(s3_store, s3_bucket, "/segments/")
    with pytest.raises(StoreError) as info:
        list_runs(s3_store)
    message = str(info.value)
    assert message.startswith(f"the run index could not be read at {failed[0]} (cannot reach "
                              "S3 endpoint http://127.0.0.1:9")
    assert message.endswith("nothing was skipped or listed: retry when the store answers")
    with pytest.raises(StoreError, match="the run index could not be read"):
        experiments_overview(s3_store)


def test_reindex_under_a_read_error_marks_no_complete_run_incomplete(s3_store, s3_bucket):
    for i in range(3):
        _record(s3_store, "a", f"r{i}", accuracy=i / 10)
    before = list_runs(s3_store).rows
    fail_reads_of(s3_store, s3_bucket, "runs/r1/run.json")
    with pytest.raises(StoreError) as info:
        reindex(s3_store)
    assert str(info.value).startswith("reindex stopped at run a/r1: cannot reach S3 endpoint")
    assert str(info.value).endswith("The index was left as it was (no run marked incomplete); "
                                    "run `fdshpo runs reindex` again when the store answers")
    assert list_runs(s3_store).rows == before
    assert [r["status"] for r in before] == ["complete"] * 3


def test_a_failed_read_while_showing_a_run_is_an_error_not_corruption(s3_store, s3_bucket):
    from fdshpo.tracking.reader import load_run

    _record(s3_store, "a", "r0", accuracy=0.5)
    fail_reads_of(s3_store, s3_bucket, "runs/r0/metrics.json")
    with pytest.raises(StoreError, match="cannot reach S3 endpoint http://127.0.0.1:9"):
        load_run(s3_store, "a/r0")


@pytest.mark.parametrize("segment", [[], {"entries": 5}, {"entries": [], "replaces": 7},
                                     {"entries": [{"run_id": "x"}], "covers": "r0"}])
def test_a_malformed_checksummed_segment_never_fails_a_start_or_finish(store, small_index,
                                                                       segment):
    for name in ("0-bad1.json", "0-bad2.json", "0-bad3.json"):  # enough to merge
        store.put_json(f"index/a/segments/{name}", segment)
    for i in range(6):  # each start and finish compacts, and merges level-0 segments
        _record(store, "a", f"r{i}", accuracy=i / 10)
    listing = list_runs(store)
    assert [r["run_id"] for r in listing.rows] == [f"r{i}" for i in range(6)]
    assert all("damaged index object skipped" in str(p) for p in listing.problems)
    assert {p.key.split("#")[0] for p in listing.problems} == {
        f"index/a/segments/0-bad{i}.json" for i in (1, 2, 3)}
    reindex(store)
    repaired = list_runs(store)
    assert repaired.problems == [] and repaired.rows == listing.rows

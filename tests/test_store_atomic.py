"""Nothing lost, nothing half-visible: write-once under concurrency (local store and a real
SeaweedFS server), writers killed between the data and its checksum, and transient read errors
that must never turn into overwrites or silent fallbacks to older state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fdshpo import SignOptimizer
from fdshpo.schedule import Schedule
from fdshpo.store import ArtifactExists, LocalStore, StoreError, open_store
from fdshpo.store.layout import RunLayout, latest_pointer
from fdshpo.store.s3 import S3Store
from fdshpo.tracking.checkpoint import OuterCheckpointer
from fdshpo.tracking.recorder import RunRecorder, latest_schedule
from fdshpo.tune.loop import TuneState

WRITERS, ROUNDS = 8, 10


def stores_for(kind: str, tmp_path, request, count: int) -> list:
    """``count`` independent store objects (own client / own file handles) on one store."""
    if kind == "local":
        return [open_store(tmp_path / "store") for _ in range(count)]
    bucket = request.getfixturevalue("s3_bucket")
    return [open_store(f"s3://{bucket}/race") for _ in range(count)]


def race(stores: list, key: str, payloads: list[bytes]) -> list[str]:
    """Every store writes its payload to ``key`` at once; the outcome of each writer."""
    barrier = threading.Barrier(len(stores))
    outcomes = [""] * len(stores)

    def write(i: int) -> None:
        barrier.wait()
        try:
            stores[i].put_bytes(key, payloads[i])
            outcomes[i] = "written"
        except ArtifactExists:
            outcomes[i] = "exists"
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcomes[i] = f"error: {exc!r}"

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_of_concurrent_writers_of_one_key_exactly_one_wins(kind, tmp_path, request):
    stores = stores_for(kind, tmp_path, request, WRITERS)
    for round_ in range(ROUNDS):
        key = f"runs/r{round_}/schedule.json"
        payloads = [f"writer {i} of round {round_}".encode() for i in range(WRITERS)]
        outcomes = race(stores, key, payloads)
        winners = [i for i, o in enumerate(outcomes) if o == "written"]
        assert len(winners) == 1, f"round {round_}: {outcomes}"
        assert outcomes.count("exists") == WRITERS - 1, f"round {round_}: {outcomes}"
        assert stores[0].get_bytes(key) == payloads[winners[0]]


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_concurrent_writers_of_the_same_bytes_all_succeed(kind, tmp_path, request):
    stores = stores_for(kind, tmp_path, request, WRITERS)
    for round_ in range(3):
        outcomes = race(stores, f"same/{round_}.json", [b"identical"] * WRITERS)
        assert outcomes == ["written"] * WRITERS
    assert stores[0].list("") == [f"same/{r}.json" for r in range(3)]


def test_the_pinned_minio_client_sends_if_none_match(s3_bucket, s3_env):
    """The conditional PUT reaches the real server: a second create of one key is refused."""
    from minio.error import S3Error

    store = open_store(f"s3://{s3_bucket}")
    store._conditional_put("k", b"one", "0" * 64)
    with pytest.raises(S3Error) as info:
        store._conditional_put("k", b"two", "1" * 64)
    assert info.value.code == "PreconditionFailed"


class IgnoresConditionalWritesFake(S3Store):
    """Fault injection (no real server ignores the header here): the real SeaweedFS server,
    reached by plain PUTs, as a server that ignores ``If-None-Match`` would behave."""

    def _conditional_put(self, name, data, sha256, condition=None):
        import io

        self._client.put_object(self.bucket, name, io.BytesIO(data), len(data),
                                metadata={"sha256": sha256})


def test_a_store_that_ignores_conditional_writes_is_refused(s3_bucket, s3_env):
    real = open_store(f"s3://{s3_bucket}/p")
    fake = IgnoresConditionalWritesFake(real.bucket, real.prefix, real.endpoint,
                                        real._credentials)
    with pytest.raises(StoreError, match=r"does not support conditional writes "
                                         r"\(If-None-Match: \*\).*concurrent writers could "
                                         r"silently overwrite"):
        fake.put_json("a.json", {"x": 1})
    assert real.list("") == [] and not real.exists("a.json")  # nothing written, probe removed
    fake.put_json("b.json", {"x": 1}, overwrite=True)  # plain overwrites need no probe


def test_the_probe_runs_once_per_store(s3_bucket, s3_env, monkeypatch):
    store = open_store(f"s3://{s3_bucket}")
    calls = []
    real = store._conditional_put
    monkeypatch.setattr(store, "_conditional_put", lambda *a: calls.append(a[0]) or real(*a))
    for i in range(3):
        store.put_json(f"k{i}.json", {"i": i})
    probes = [c for c in calls if "/.fdshpo-probe/" in f"/{c}"]
    assert len(probes) == 2 and len(calls) == 5  # the probe's two PUTs, then one per key
    assert store.list("") == ["k0.json", "k1.json", "k2.json"]


# ---- compare-and-write and the store's clock ------------------------------------------------

@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "store")
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/cas")


def test_compare_and_write(store):
    assert store.swap_bytes("p.json", b"one", None)
    assert not store.swap_bytes("p.json", b"two", None)
    one = store.checksum("p.json")
    assert store.swap_bytes("p.json", b"two", one)
    assert not store.swap_bytes("p.json", b"three", one)  # stale: it holds "two" now
    assert not store.swap_bytes("absent.json", b"x", one)
    assert store.get_bytes("p.json") == b"two"


def test_the_store_tells_the_age_of_a_key_by_its_own_clock(store):
    started = time.monotonic()
    store.put_json("a.json", {"x": 1})
    # upper bounds from this process's own clock (+1: S3 dates are whole seconds), so a
    # loaded machine cannot fail it
    assert 0 <= store.age("a.json") <= time.monotonic() - started + 1
    time.sleep(1.2)
    assert 1 <= store.age("a.json") <= time.monotonic() - started + 1


class IgnoresIfMatchFake(S3Store):
    """Fault injection: the real server reached by plain PUTs whenever ``If-Match`` is asked
    for, as a server that ignores that header would behave."""

    def _conditional_put(self, name, data, sha256, condition=None):
        import io

        if condition and "If-Match" in condition:
            self._client.put_object(self.bucket, name, io.BytesIO(data), len(data),
                                    metadata={"sha256": sha256})
            return
        super()._conditional_put(name, data, sha256, condition)


def test_a_store_that_ignores_if_match_is_refused_for_compare_and_write(s3_bucket, s3_env):
    real = open_store(f"s3://{s3_bucket}/p")
    fake = IgnoresIfMatchFake(real.bucket, real.prefix, real.endpoint, real._credentials)
    fake.put_json("a.json", {"x": 1})  # create-only writes still work
    with pytest.raises(StoreError, match=r"does not support conditional writes \(If-Match\)"):
        fake.swap_bytes("a.json", b"{}", fake.checksum("a.json"))
    assert real.get_json("a.json") == {"x": 1}


# ---- a writer killed between the data and its checksum (local store) -----------------------

KILL_DRIVER = r"""
import os, signal, sys
from fdshpo.store import LocalStore
root, key, target = sys.argv[1:4]
store = LocalStore(root)
victim = os.fspath(store._path(key) if target == "data" else store._meta(key))
real_replace, real_link = os.replace, os.link
def replace(src, dst):
    if os.fspath(dst) == victim:
        os.kill(os.getpid(), signal.SIGKILL)   # the signalled point: just before this rename
    return real_replace(src, dst)
os.replace = replace
store.put_json(key, {"version": 2}, overwrite=True)
"""


@pytest.mark.parametrize("target,expected", [("data", 1), ("meta", 2)])
def test_a_writer_killed_mid_write_leaves_a_readable_artifact(tmp_path, target, expected):
    """Killed just before the data is renamed into place: the old version, intact. Killed
    between the data and its checksum: the new version, completed by the next reader."""
    store = LocalStore(tmp_path)
    key = latest_pointer("exp")
    store.put_json(key, {"version": 1}, overwrite=True)
    proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, str(tmp_path), key, target],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert LocalStore(tmp_path).get_json(key) == {"version": expected}
    assert LocalStore(tmp_path).checksum(key) == store.checksum(key)
    assert [p for p in (tmp_path / ".pending").rglob("*") if p.is_file()] == []  # cleaned up


def finished_run(store, run_id: str, lr: float) -> Schedule:
    schedule = Schedule.constant(10, lr=lr, momentum=0.0, weight_decay=0.0)
    recorder = RunRecorder(store, "exp", run_id)
    recorder.start({"experiment": "exp"})
    recorder.finish(schedule, report=False)
    return schedule


def test_latest_schedule_survives_a_damaged_pointer(tmp_path):
    store = LocalStore(tmp_path)
    finished_run(store, "run-a", 0.1)
    newest = finished_run(store, "run-b", 0.2)
    (tmp_path / latest_pointer("exp")).write_text('{"schedule": "cut sho')
    with pytest.warns(UserWarning, match="latest.json is damaged.*newest complete run record"):
        schedule = latest_schedule(store, "exp")
    assert schedule.values["lr"].tolist() == newest.values["lr"].tolist()


# ---- transient read errors are raised, never treated as damage ------------------------------

def first_read_fails(store, unreachable):
    """The store's first read goes to a real unreachable endpoint (a network blip); later
    reads are the store's own."""
    real = store.get_bytes
    calls = []

    def get_bytes(key):
        calls.append(key)
        return unreachable.get_bytes(key) if len(calls) == 1 else real(key)

    store.get_bytes = get_bytes
    return calls


def states() -> tuple[TuneState, TuneState]:
    schedule = Schedule.constant(10, lr=0.1, momentum=0.0, weight_decay=0.0)
    state = SignOptimizer().init(schedule)
    a = TuneState(schedule, state, next_outer_step=1)
    b = TuneState(schedule.with_values({"lr": [0.2]}), state, next_outer_step=1)
    return a, b


@pytest.fixture
def s3_run(s3_bucket, s3_env):
    store = open_store(f"s3://{s3_bucket}/team")
    unreachable = open_store(f"s3://{s3_bucket}", s3_endpoint="http://127.0.0.1:9",
                             deadline=0.5)
    return store, unreachable, RunLayout("exp", "run-1")


def test_a_blip_while_checking_a_finished_checkpoint_does_not_replace_it(s3_run):
    store, unreachable, layout = s3_run
    finished, retried = states()
    OuterCheckpointer(store, layout).save(finished)
    first_read_fails(store, unreachable)
    with pytest.raises(StoreError, match="cannot reach S3 endpoint http://127.0.0.1:9"):
        OuterCheckpointer(store, layout).save(retried)
    assert OuterCheckpointer(store, layout).latest().to_dict() == finished.to_dict()


def test_a_blip_while_resuming_is_raised_not_a_fallback_to_older_state(s3_run):
    store, unreachable, layout = s3_run
    older, newer = states()
    checkpointer = OuterCheckpointer(store, layout)
    checkpointer.save(older)
    checkpointer.save(TuneState(newer.schedule, newer.optimizer_state, next_outer_step=2))
    first_read_fails(store, unreachable)
    with pytest.raises(StoreError, match="cannot reach"):
        checkpointer.latest()
    assert checkpointer.latest().next_outer_step == 2


def test_a_damaged_checkpoint_is_still_replaced_and_skipped(tmp_path):
    store = LocalStore(tmp_path)
    layout = RunLayout("exp", "run-1")
    older, newer = states()
    checkpointer = OuterCheckpointer(store, layout)
    checkpointer.save(older)
    path = tmp_path / layout.outer_checkpoint(0)
    path.write_bytes(path.read_bytes()[:10])  # cut short behind the store's back
    with pytest.warns(UserWarning, match="skipping unreadable outer checkpoint"):
        assert checkpointer.latest() is None
    checkpointer.save(newer)
    assert checkpointer.latest().to_dict() == newer.to_dict()
    assert os.path.exists(path)

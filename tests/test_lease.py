"""Leases that fence (a local store and a real SeaweedFS server): store errors are not a free
lease, expiry by the store's clock, the dead-process shortcut only in this process space, a
pipeline job holding the run's lease, and writes refused once it is lost."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import torch

from fdshpo import SignOptimizer
from fdshpo.engines.forward import ForwardState
from fdshpo.schedule import Schedule
from fdshpo.store import StoreError, open_store
from fdshpo.store.layout import RunLayout
from fdshpo.store.lease import (
    Lease,
    LeaseHeld,
    LeaseLost,
    LeaseUnknown,
    process_gone,
    this_process,
)
from fdshpo.tracking.recorder import RunRecorder
from fdshpo.tune.state import TuneState

PREFIX = RunLayout("exp", "r1").lease


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "store")
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/lease")


def lease_reads_fail(store, times: int = 1) -> list:
    """The next ``times`` reads of a lease generation raise a store error that is not damage
    (what an unreachable endpoint gives after the store's retries)."""
    real, failed = store.get_bytes, []

    def get_bytes(key):
        if "/lease/" in key and len(failed) < times:
            failed.append(key)
            raise StoreError("cannot reach S3 endpoint (simulated blip)")
        return real(key)

    store.get_bytes = get_bytes
    return failed


def _schedule(lr: float = 0.1) -> Schedule:
    return Schedule.constant(10, lr=lr, momentum=0.0, weight_decay=0.0)


# ---- errors are not a free lease ------------------------------------------------------------

def test_a_failed_read_of_a_live_lease_makes_acquire_refuse(store):
    holder = Lease(store, PREFIX, "run exp/r1")
    holder.acquire()
    failed = lease_reads_fail(store)
    with pytest.raises(LeaseUnknown, match="cannot read its lease, so it is not taken.*"
                                           "simulated blip.*Retry when the store answers"):
        Lease(store, PREFIX, "run exp/r1").acquire()
    assert failed and not Lease(store, PREFIX, "run exp/r1").try_acquire()
    holder.check()  # still the holder


def test_a_failed_read_while_renewing_keeps_the_lease(store):
    holder = Lease(store, PREFIX, "run exp/r1")
    holder.acquire()
    lease_reads_fail(store)
    with pytest.raises(StoreError, match="simulated blip") as info:
        holder.renew()
    assert not isinstance(info.value, LeaseLost) and holder.held and holder.lost is None
    holder.renew()  # the retry succeeds
    holder.check()


def test_the_heartbeat_retries_after_store_errors(store, monkeypatch):
    import fdshpo.store.lease as lease_module

    monkeypatch.setattr(lease_module, "RETRY", 0.05)
    holder = Lease(store, PREFIX, "run exp/r1", ttl=30)
    holder.acquire()
    failed = lease_reads_fail(store, times=3)
    holder.keep_alive(interval=0.1)
    deadline = time.monotonic() + 20
    while len(store.list(PREFIX)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    holder.stop()
    assert len(failed) == 3 and holder.held and holder.lost is None
    holder.check()


def test_a_damaged_generation_frees_the_lease(tmp_path):
    store = open_store(tmp_path)
    Lease(store, PREFIX, "run exp/r1").acquire()
    (tmp_path / f"{PREFIX}00000000.json").write_text('{"owner": "cut sho')
    Lease(store, PREFIX, "run exp/r1").acquire()


# ---- expiry by the store's clock ------------------------------------------------------------

def test_a_writer_whose_clock_runs_ahead_cannot_take_a_live_lease(store):
    first = RunRecorder(store, "exp", "r1", lease_seconds=60)
    first.start({})
    ahead = RunRecorder(store, "exp", "r1", clock=lambda: time.time() + 3600)
    with pytest.raises(LeaseHeld, match=r"run exp/r1 is being written by .+ by the store's "
                                        r"clock, expires in \d+s unless renewed"):
        ahead.start({})
    first.close()


def test_a_lease_expires_by_the_store_clock_and_the_old_holder_is_fenced_off(store):
    first = RunRecorder(store, "exp", "r1", lease_seconds=3)
    first.start({})
    first.lease.stop()  # it stops renewing (stalled, or crashed)
    with pytest.raises(LeaseHeld):
        RunRecorder(store, "exp", "r1").start({})
    time.sleep(3.5)
    later = RunRecorder(store, "exp", "r1")
    assert later.start({}) is None
    state = SignOptimizer().init(_schedule())
    with pytest.raises(LeaseLost):  # every write of the stalled writer is refused ...
        first.store.put_json("experiments/exp/runs/r1/x.json", {})
    with pytest.raises(LeaseLost):
        first.on_outer_step(TuneState(_schedule(), state, next_outer_step=1))
    zeros = torch.zeros(3)
    inner = ForwardState(5, zeros, zeros, torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(10))
    with pytest.raises(LeaseLost):  # ... inner checkpoints included
        first.inner.save(inner, 0, 0, "fingerprint")
    assert not store.list(first.layout.inner_checkpoints(0, 0))
    later.close()


def test_a_holder_that_was_not_renewed_in_time_stops_writing(tmp_path):
    store = open_store(tmp_path)
    holder = Lease(store, PREFIX, "run exp/r1", ttl=4.5)  # margin 2 s: 2.5 s to write
    holder.acquire()
    holder.check()
    time.sleep(2.7)  # past the window whatever the acquire took (it started it)
    with pytest.raises(LeaseLost, match="not renewed within 4s less 2s, so another writer "
                                        "may hold it now; stop writing"):
        holder.check()


def test_a_fenced_store_checks_every_write_path_and_reads_through(tmp_path):
    """Whatever reaches a FencedStore's write primitives is checked like its public writes;
    reads go to the wrapped store."""
    store = open_store(tmp_path)
    holder = Lease(store, PREFIX, "run exp/r1", ttl=4.5)  # margin 2 s: 2.5 s to write
    holder.acquire()
    fenced = holder.fence(store)
    fenced.put_json("a.json", {"x": 1})
    assert fenced.get_json("a.json") == {"x": 1} and fenced.list("a") == ["a.json"]
    time.sleep(2.7)  # past the renewal margin: the holder may no longer write
    for write in (lambda: fenced.put_json("b.json", {}), lambda: fenced.delete("a.json"),
                  lambda: fenced._raw_put("b.json", b"{}", "0" * 64),
                  lambda: fenced._raw_create("b.json", b"{}", "0" * 64),
                  lambda: fenced._raw_replace("a.json", b"{}", "0" * 64, "0" * 64),
                  lambda: fenced._raw_delete("a.json")):
        with pytest.raises(LeaseLost):
            write()
    assert fenced._raw_get("a.json")[0] == store.get_bytes("a.json")
    assert store.list("b") == []


# ---- the dead-process shortcut --------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("differs", [None, "boot_id", "pid_ns", "host", "per_process"])
def test_a_dead_pid_frees_the_lease_only_in_this_process_space(tmp_path, differs):
    here = this_process()
    holder = {**here, "pid": _dead_pid(), "per_process": True, "owner": "h:1:abc",
              "token": "t", "ttl": 60.0, "expires": time.time() + 60, "released": False}
    if differs == "per_process":
        holder["per_process"] = False  # a label several processes share (a pipeline job)
    elif differs:
        holder[differs] = "elsewhere"
    assert process_gone(holder, here) is (differs is None)
    store = open_store(tmp_path)
    store.put_json(f"{PREFIX}00000000.json", holder)
    assert Lease(store, PREFIX, "run exp/r1").try_acquire() is (differs is None)


def test_unknown_boot_id_or_namespace_never_counts_as_the_same_machine():
    here = {**this_process(), "boot_id": None}
    holder = {**here, "pid": _dead_pid(), "per_process": True}
    assert not process_gone(holder, here)


# ---- a pipeline job holds the run's lease from prepare to report ----------------------------

def test_the_steps_of_one_job_share_the_lease_and_another_job_is_refused(store):
    prepare = RunRecorder(store, "exp", "r1", owner="kfp-job:A")
    prepare.start({})
    other = RunRecorder(store, "exp", "r1", owner="kfp-job:B")
    state = TuneState(_schedule(), SignOptimizer().init(_schedule()), next_outer_step=1)
    with pytest.raises(LeaseLost, match="does not hold the lease"):
        other.on_outer_step(state)  # a step of another job, without the lease: refused
    with pytest.raises(LeaseHeld, match="being written by kfp-job:A"):
        other.hold()
    assert not store.list(other.layout.outer_checkpoints)

    steps = [RunRecorder(store, "exp", "r1", owner="kfp-job:A") for _ in range(4)]
    barrier, errors = threading.Barrier(len(steps)), []

    def join(rec):
        barrier.wait()
        try:
            rec.hold()  # parallel inner replicas of the job join at once
        except StoreError as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(r,)) for r in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    steps[0].on_outer_step(state)
    report = RunRecorder(store, "exp", "r1", owner="kfp-job:A")
    report.finish(_schedule(), report=False)  # takes part in the lease, then releases it
    assert not report.lease.held and Lease(store, PREFIX, "x").holder() is None
    for rec in [prepare, *steps]:
        rec.lease.stop()

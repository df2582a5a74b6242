"""``latest.json`` moves only forward (a local store and a real SeaweedFS server): to a newer
(finished, run id), by compare-and-write, also when finishes race."""

from __future__ import annotations

import threading

import pytest

from fdshpo.schedule import Schedule
from fdshpo.store import open_store
from fdshpo.store.layout import latest_pointer, moves_forward
from fdshpo.tracking.recorder import RunRecorder, latest_finished


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "store")
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/latest")


def _schedule(lr: float = 0.1) -> Schedule:
    return Schedule.constant(10, lr=lr, momentum=0.0, weight_decay=0.0)


def test_the_pointer_rule():
    older = {"finished": "2026-12-01T00:00:00Z", "run_id": "b"}
    newer = {"finished": "2026-12-01T00:00:01Z", "run_id": "a"}
    assert moves_forward(None, older) and moves_forward([], older) and moves_forward({}, older)
    assert moves_forward(older, newer) and not moves_forward(newer, older)
    assert not moves_forward(newer, newer)


def _finisher(store, run_id: str, at: float, lr: float) -> RunRecorder:
    recorder = RunRecorder(store, "exp", run_id, clock=lambda: at)
    recorder.start({"lr": lr})
    return recorder


def test_a_finish_racing_a_newer_one_never_moves_latest_back(store):
    """The older run reads the pointer, the newer run finishes in between, then the older one
    writes: the pointer must stay on the newer run."""
    older = _finisher(store, "older", 1_800_000_000.0, 0.1)
    newer = _finisher(store, "newer", 1_800_000_100.0, 0.2)
    real, interleaved = store.get_bytes, []

    def get_bytes(key):
        try:
            return real(key)  # the older finish reads the pointer (or finds none) ...
        finally:
            if key == latest_pointer("exp") and not interleaved:
                interleaved.append(key)
                newer.finish(_schedule(0.2), report=False)  # ... and the newer one finishes

    store.get_bytes = get_bytes
    older.finish(_schedule(0.1), report=False)
    store.get_bytes = real
    assert interleaved
    assert latest_finished(store, "exp")[0] == "newer"


def test_concurrent_finishes_leave_latest_on_the_newest_run(store):
    runs = [_finisher(store, f"run{i}", 1_800_000_000.0 + 10 * i, 0.1 + i / 100)
            for i in range(5)]
    barrier, errors = threading.Barrier(len(runs)), []

    def finish(i: int) -> None:
        barrier.wait()
        try:
            runs[i].finish(_schedule(0.1 + i / 100), report=False)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(i,)) for i in reversed(range(5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert latest_finished(store, "exp")[0] == "run4"


"""Run tracking: records, listing, show/compare/report (library and CLI), crash safety, the
run lease (one writer per run id) and a retried finish."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from nets import sample_subset_problem

from fdshpo import Schedule, SignOptimizer
from fdshpo.cli import main as cli
from fdshpo.store import StoreError, open_store
from fdshpo.store.layout import RunLayout
from fdshpo.store.lease import LeaseHeld, LeaseLost
from fdshpo.tracking.recorder import (
    RunRecorder,
    compare_runs,
    latest_schedule,
    list_runs,
    load_run,
)
from fdshpo.tune.step import OuterStep, ReplicaResult

HORIZON = 8


@pytest.fixture(scope="module")
def problem():
    return sample_subset_problem(train=200, test=50, seed=2)


def _initial(lr=0.05):
    return Schedule.constant(HORIZON, lr=lr, momentum=0.5, segments={"lr": 2},
                             bounds={"lr": (0.0, 1.0)})


def _record_run(store, problem, experiment="exp", lr=0.05, outer_steps=2, finish=True):
    recorder = RunRecorder(store, experiment, checkpoint_every=3)
    assert recorder.start({"horizon": HORIZON, "lr": lr, "network": "mlp"}) is None
    result = recorder.tune(problem, _initial(lr), SignOptimizer(), outer_steps=outer_steps)
    if finish:
        recorder.finish(result.schedule, {"test_accuracy": 0.5 + lr})
    return recorder, result


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "store")
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/tracking")


def test_a_recorded_run_lists_shows_and_warm_starts(store, problem):
    recorder, result = _record_run(store, problem)
    [summary] = list_runs(store).rows
    assert (summary["experiment"], summary["run_id"], summary["status"]) == (
        "exp", recorder.run_id, "complete")
    assert summary["outer_steps"] == 2 and summary["metrics"] == {"test_accuracy": 0.55}
    assert summary["record_sha256"] == store.checksum(recorder.layout.record)
    assert summary["final_val_loss"] == result.history[-1].val_loss
    run = load_run(store, recorder.run_id[:12])
    assert run.status == "complete" and run.problems == []
    assert [s["outer_step"] for s in run.steps] == [0, 1]
    assert run.steps[1]["hypergradients"] == result.history[1].hypergradients
    assert Schedule.from_dict(run.schedule) == result.schedule
    assert latest_schedule(store, "exp") == result.schedule
    assert latest_schedule(store, "other") is None
    record = store.get_json(recorder.layout.record)
    assert {"config.json", "schedule.json", "metrics.json", "report.html", "steps/0001.json",
            "plots/schedule.png", "checkpoints/outer/0001.json"} <= set(record["artifacts"])
    html = store.get_bytes(recorder.layout.report).decode()
    assert html.count('src="data:image/png;base64,') == 3 and "http" not in html.lower().replace(
        "http-equiv", "")
    assert store.get_bytes(recorder.layout.plot("val_loss"))[:4] == b"\x89PNG"


def test_an_unfinished_run_is_incomplete_and_can_be_finished_after_resuming(tmp_path, problem):
    store = open_store(tmp_path)
    recorder, result = _record_run(store, problem, outer_steps=1, finish=False)
    assert [r["status"] for r in list_runs(store).rows] == ["incomplete"]
    assert load_run(store, recorder.run_id).status == "incomplete"
    assert latest_schedule(store, "exp") is None
    recorder.close()  # the first writer stops: its lease is released
    again = RunRecorder(store, "exp", recorder.run_id)
    resume = again.start({"horizon": HORIZON, "lr": 0.05, "network": "mlp"})
    assert resume.next_outer_step == 1 and resume.schedule == result.state.schedule
    final = again.tune(problem, _initial(), SignOptimizer(), resume=resume, outer_steps=2)
    again.finish(final.schedule)
    assert [(r["status"], r["outer_steps"]) for r in list_runs(store).rows] == [("complete", 2)]
    with pytest.raises(StoreError, match="already complete"):
        RunRecorder(store, "exp", recorder.run_id).start({"horizon": HORIZON})


def test_pipeline_pieces_replica_by_replica_equal_tune(tmp_path, problem):
    store = open_store(tmp_path)
    reference = RunRecorder(store, "ref", checkpoint_every=0)
    reference.start({})
    expected = reference.tune(problem, _initial(), SignOptimizer(), outer_steps=2, replicas=2)
    recorder = RunRecorder(store, "pipeline", "p1", checkpoint_every=3)
    recorder.start({})
    outer = OuterStep(SignOptimizer(), replicas=2)
    state = outer.init(_initial())
    for outer_step in range(2):  # what the inner and outer components do, one call each
        results = [outer.run_replica(problem, state, r, checkpointer=recorder.inner)
                   for r in range(2)]
        # through JSON, as KFP passes them, and in the order Collected happens to give
        state = outer.apply(state, [ReplicaResult.from_dict(json.loads(json.dumps(r.to_dict())))
                                    for r in reversed(results)])
        recorder.on_outer_step(state)
        assert state.next_outer_step == outer_step + 1
    assert state.schedule == expected.state.schedule
    assert [r.hypergradients for r in state.history] == [
        r.hypergradients for r in expected.history]
    assert recorder.outer.latest().to_dict() == state.to_dict()


def test_a_resumed_run_must_bring_its_config(tmp_path):
    store = open_store(tmp_path)
    RunRecorder(store, "exp", "r1").start({"horizon": 8})
    with pytest.raises(StoreError, match="with a different config"):
        RunRecorder(store, "exp", "r1").start({"horizon": 9})


def test_credentials_never_enter_a_record(tmp_path):
    recorder = RunRecorder(open_store(tmp_path), "exp")
    with pytest.raises(ValueError, match=r"config\.store\.secret_key looks like a credential"):
        recorder.start({"store": {"uri": "s3://b", "secret_key": "x"}})
    assert open_store(tmp_path).list("") == []


def test_a_tampered_artifact_makes_the_run_corrupt(tmp_path, problem):
    store = open_store(tmp_path)
    recorder, _ = _record_run(store, problem, outer_steps=1)
    (tmp_path / recorder.layout.metrics).write_text('{"test_accuracy": 0.99}')
    run = load_run(store, recorder.run_id)
    assert run.status == "corrupt" and run.problems and "metrics.json" in run.problems[0]


def test_runs_cli(tmp_path, problem, capsys):
    store = open_store(tmp_path)
    a, _ = _record_run(store, problem, lr=0.05, outer_steps=1)
    b, _ = _record_run(store, problem, experiment="exp2", lr=0.1, outer_steps=1)
    uri = str(tmp_path)
    assert cli(["runs", "list", "--store", uri]) == 0
    out = capsys.readouterr().out
    assert a.run_id in out and b.run_id in out and out.count("complete") == 2
    assert cli(["runs", "list", "--store", uri, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["run_id"] for line in lines] == [a.run_id, b.run_id]
    assert cli(["runs", "list", "--store", uri, "--experiment", "exp2"]) == 0
    assert a.run_id not in capsys.readouterr().out
    assert cli(["runs", "show", "--store", uri, f"exp/{a.run_id}"]) == 0
    out = capsys.readouterr().out
    assert f"run exp/{a.run_id}: complete, 1 outer step(s)" in out
    assert "final schedule:" in out and "test_accuracy: 0.55" in out
    assert cli(["runs", "compare", "--store", uri, a.run_id, b.run_id]) == 0
    out = capsys.readouterr().out
    assert re.search(r"config lr\s+0\.05\s+0\.1", out) and "metric test_accuracy" in out
    report = tmp_path / "out" / "report.html"
    assert cli(["runs", "report", "--store", uri, b.run_id, "-o", str(report)]) == 0
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert cli(["runs", "show", "--store", uri, "nope"]) == 2
    assert "fdshpo: error: no run 'nope'" in capsys.readouterr().err
    diff = compare_runs(load_run(store, a.run_id), load_run(store, b.run_id))
    assert diff["config_diff"] == {"lr": (0.05, 0.1)}


def test_server_killed_mid_write_leaves_no_run_that_looks_complete(s3_bucket, s3_env,
                                                                   problem):
    uri = f"s3://{s3_bucket}/crash"
    store = open_store(uri, deadline=2.0)
    recorder, result = _record_run(store, problem, outer_steps=1, finish=False)
    failure = []
    uploading, killed = threading.Event(), threading.Event()
    http = store._client._http
    real_urlopen = http.urlopen

    def signals_mid_upload(body: bytes):  # the real upload's bytes, observed; none changed
        for start in range(0, len(body), 2**20):
            if start > 16 * 2**20 and not uploading.is_set():
                uploading.set()
                assert killed.wait(60)  # the upload resumes only once the server is dead
            yield body[start:start + 2**20]

    def observed_urlopen(method, url, body=None, **options):
        if method == "PUT" and body is not None and len(body) > 32 * 2**20:
            body = signals_mid_upload(body)
        return real_urlopen(method, url, body=body, **options)

    http.urlopen = observed_urlopen

    def write_then_finish():
        try:  # a large artifact, then the record: the server dies during the upload
            store.put_bytes(recorder.layout.key("plots/huge.png"), os.urandom(96 * 2**20))
            recorder.finish(result.schedule)
        except StoreError as exc:
            failure.append(exc)

    writer = threading.Thread(target=write_then_finish)
    writer.start()
    assert uploading.wait(60), "the upload never got past its first 16 MiB"
    s3_env.kill()
    killed.set()
    writer.join(60)
    s3_env.start()  # same ports, keys and data directory
    assert failure and "cannot reach" in str(failure[0])
    store = open_store(uri)
    assert [r["status"] for r in list_runs(store).rows] == ["incomplete"]
    assert not store.exists(recorder.layout.record)
    assert not store.exists(recorder.layout.key("plots/huge.png"))
    recorder.close()  # the failed attempt ends (leaving its with block releases the lease)
    RunRecorder(store, "exp", recorder.run_id).finish(result.schedule)
    assert [r["status"] for r in list_runs(store).rows] == ["complete"]


def test_store_serve_prints_a_working_environment(tmp_path, monkeypatch):
    proc = subprocess.Popen([sys.executable, "-m", "fdshpo", "store", "serve", "--dir",
                             str(tmp_path / "s3"), "--bucket", "served"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        env, deadline = {}, time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-2000:]
            if line.startswith("export "):
                name, value = line[len("export "):].strip().split("=", 1)
                env[name] = value
            if line.startswith("Press Ctrl-C"):
                break
        assert env["FDSHPO_STORE"] == "s3://served"
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(name, env[name])
        store = open_store(env["FDSHPO_STORE"])
        store.put_json("hello.json", {"x": 1})
        assert store.get_json("hello.json") == {"x": 1}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "S3 server stopped." in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_writer_of_a_run_is_refused_until_the_lease_is_released_or_expires(store):
    first = RunRecorder(store, "exp", "r1", lease_seconds=3)
    assert first.start({"horizon": HORIZON}) is None
    second = RunRecorder(store, "exp", "r1")
    with pytest.raises(LeaseHeld, match=r"run exp/r1 is being written by .+ expires in \d+s "
                                        r"unless renewed\); let that writer finish, or if it "
                                        r"has died"):
        second.start({"horizon": HORIZON})
    # the first writer stops renewing (crashed); 3 s later (the store's clock) it has expired
    first.lease.stop()
    time.sleep(3.5)
    later = RunRecorder(store, "exp", "r1")
    assert later.start({"horizon": HORIZON}) is None
    with pytest.raises(LeaseLost, match="took it over"):  # the first writer finds out
        first.lease.renew()
    with pytest.raises(LeaseLost):
        first.on_outer_step(None)  # refuses to write before touching the store
    later.close()
    third = RunRecorder(store, "exp", "r1")  # released: no waiting
    assert third.start({"horizon": HORIZON}) is None
    third.close()


LEASE_HOLDER = """
import sys, time
from fdshpo.store.lease import Lease
from fdshpo.store import open_store
from fdshpo.store.layout import RunLayout
Lease(open_store(sys.argv[1]), RunLayout("exp", "r1").lease, "run exp/r1").acquire()
print("holding", flush=True)
time.sleep(120)
"""


def test_the_lease_of_a_killed_writer_on_this_host_is_free_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding", proc.stderr.read()
        store = open_store(tmp_path)
        with pytest.raises(LeaseHeld, match=f":{proc.pid}:"):
            RunRecorder(store, "exp", "r1").start({})
        proc.kill()
        proc.wait(30)
        recorder = RunRecorder(store, "exp", "r1")
        assert recorder.start({}) is None and recorder.lease.held
        recorder.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("dies_at", ["index/", "latest.json"])
def test_a_finish_that_died_after_the_run_record_completes_when_retried(tmp_path, dies_at):
    store = open_store(tmp_path)
    recorder = RunRecorder(store, "exp", "r1", owner="kfp-job:1")  # a pipeline job's report
    recorder.start({"horizon": HORIZON})
    schedule, metrics = _initial(), {"test_accuracy": 0.7}
    real_put = store.put_bytes

    def dies_after_the_record(key, data, overwrite=False):
        if key.startswith(dies_at) or key.endswith(dies_at):
            raise StoreError(f"simulated crash writing {key}")
        return real_put(key, data, overwrite)

    real_swap = store.swap_bytes

    def swap_dies_after_the_record(key, data, expected):  # the pointer's compare-and-write
        if key.endswith(dies_at):
            raise StoreError(f"simulated crash writing {key}")
        return real_swap(key, data, expected)

    store.put_bytes, store.swap_bytes = dies_after_the_record, swap_dies_after_the_record
    with pytest.raises(StoreError, match="simulated crash"):
        recorder.finish(schedule, metrics, report=False)
    store.put_bytes, store.swap_bytes = real_put, real_swap
    assert store.exists(recorder.layout.record) and latest_schedule(store, "exp") is None
    record = store.get_json(recorder.layout.record)
    # the retry of that job runs later (another "finished" time) in another process
    retry = RunRecorder(store, "exp", "r1", owner="kfp-job:1", clock=lambda: time.time() + 5)
    assert retry.finish(schedule, metrics, report=False) == record
    assert latest_schedule(store, "exp") == schedule
    assert [(r["status"], r["record_sha256"]) for r in list_runs(store).rows] == [
        ("complete", store.checksum(recorder.layout.record))]
    with pytest.raises(StoreError, match="already complete with another schedule or other "
                                         "metrics"):
        retry.finish(schedule, {"test_accuracy": 0.8}, report=False)


def test_a_retried_finish_does_not_move_the_latest_pointer_back(tmp_path):
    store = open_store(tmp_path)
    old, new = _initial(0.05), _initial(0.1)
    first = RunRecorder(store, "exp", "old")
    first.start({})
    first.finish(old, report=False)
    second = RunRecorder(store, "exp", "new", clock=lambda: time.time() + 10)
    second.start({"lr": 0.1})
    second.finish(new, report=False)
    RunRecorder(store, "exp", "old", clock=lambda: time.time() + 20).finish(old, report=False)
    assert latest_schedule(store, "exp") == new


def test_a_failed_attempt_is_recorded_and_the_run_stays_resumable(tmp_path):
    store = open_store(tmp_path)
    with pytest.raises(RuntimeError), RunRecorder(store, "exp", "r1") as recorder:
        recorder.start({"horizon": HORIZON})
        raise RuntimeError("out of memory")
    [row] = list_runs(store).rows
    assert (row["status"], row["error"]) == ("failed", "RuntimeError: out of memory")
    events = store.list(RunLayout("exp", "r1").events)
    assert [k.rsplit("-", 1)[1] for k in events] == ["started.json", "failed.json"]
    with RunRecorder(store, "exp", "r1") as again:  # the lease was released: resume now
        again.start({"horizon": HORIZON})
        assert list_runs(store).rows[0]["status"] == "incomplete"
        again.finish(_initial(), report=False)
    assert list_runs(store).rows[0]["status"] == "complete"


"""Checkpoint/resume: a resumed run equals an uninterrupted one, bit for bit on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from nets import sample_subset_problem

from fdshpo import EnginePrices, Schedule, hypergradient
from fdshpo.store import LocalStore
from fdshpo.store.layout import RunLayout
from fdshpo.tracking.checkpoint import InnerCheckpointer, OuterCheckpointer
from fdshpo.tune.loop import InnerTask

HORIZON = 12
LEARN = ("lr", "momentum", "weight_decay")
ENGINES = ("forward", "reverse")
DRIVER = Path(__file__).with_name("resume_driver.py")


@pytest.fixture(scope="module")
def problem():
    return sample_subset_problem(train=200, test=50, seed=11)


@pytest.fixture(scope="module")
def references(problem):
    """The uninterrupted run of ``_schedule()`` under each engine (computed once)."""
    return {engine: _reference(problem, _schedule(), engine) for engine in ENGINES}


def _schedule(lr=0.05):
    return Schedule.constant(HORIZON, lr=lr, momentum=0.5, weight_decay=1e-4,
                             segments={"lr": 3, "momentum": 2}, bounds={"lr": (0.0, 1.0)})


def _reference(problem, schedule, engine="forward"):
    task = problem(0, 0, HORIZON)
    return hypergradient(task.model, torch.nn.functional.cross_entropy, task.train_batches,
                         task.val_batches, schedule, LEARN, engine=engine)


def _assert_same(a, b):
    assert a.val_loss == b.val_loss
    assert set(a.grads) == set(b.grads)
    for name in a.grads:
        assert torch.equal(a.grads[name], b.grads[name]), name
    assert torch.equal(a.train_losses.to(torch.float64), b.train_losses.to(torch.float64))


class Crash(Exception):
    pass


def _crash_at(step):
    def hook(state):
        if state.step == step:
            raise Crash

    return hook


@pytest.mark.parametrize(("engine", "crash", "saved", "resumed_at"), [
    ("forward", 10, [4, 8], 8),
    ("reverse", 10, [4, 8], 8),  # in the forward sweep
    ("reverse", 19, [12, 16], 16),  # in the backward sweep (progress 12 + 4 backward steps)
])
@pytest.mark.parametrize("generic_iterable", [False, True])
def test_inner_run_resumed_after_a_crash_equals_an_uninterrupted_run(
        problem, references, tmp_path, generic_iterable, engine, crash, saved, resumed_at):
    schedule = _schedule()
    store = LocalStore(tmp_path)
    ckpt = InnerCheckpointer(store, RunLayout("e", "r"), every=4)

    class Reiterable:  # neither a Sequence nor ShuffledBatches: read again by iterating anew
        def __init__(self, batches):
            self.batches = list(batches)

        def __iter__(self):
            return iter(self.batches)

    def task():
        t = problem(0, 0, HORIZON)
        if generic_iterable:  # any re-iterable resumes too (its first steps are skipped)
            t = InnerTask(t.model, Reiterable(t.train_batches), t.val_batches)
        return t

    loss = torch.nn.functional.cross_entropy
    with pytest.raises(Crash):
        ckpt.run(task(), schedule, LEARN, loss, 0, 0, on_step=_crash_at(crash), engine=engine)
    assert [k.rsplit("/", 1)[1] for k in ckpt.checkpoints(0, 0)] == [f"{s:08d}.pt"
                                                                     for s in saved]
    resumed = ckpt.run(task(), schedule, LEARN, loss, 0, 0, engine=engine)
    assert ckpt.resumed == [(0, 0, resumed_at)]
    assert resumed.engine.engine == engine
    _assert_same(resumed, references[engine])
    assert ckpt.checkpoints(0, 0) == []  # removed once the replica's result is stored
    assert store.exists(RunLayout("e", "r").replica_result(0, 0))


def test_auto_resumes_with_the_engine_of_its_checkpoint(problem, references, tmp_path):
    """A resumed run keeps the engine its checkpoint was made with, whatever the prices say
    now, so it still equals the uninterrupted run bit for bit."""
    favour = {engine: EnginePrices(1.0, 1.0, 1e-3, 1e-3) if engine == "reverse"
              else EnginePrices(1e-3, 1e-3, 1.0, 1.0) for engine in ENGINES}
    ckpt = InnerCheckpointer(LocalStore(tmp_path), RunLayout("e", "r"), every=4)
    loss = torch.nn.functional.cross_entropy
    with pytest.raises(Crash):
        ckpt.run(problem(0, 0, HORIZON), _schedule(), LEARN, loss, 0, 0,
                 on_step=_crash_at(18), prices=favour["reverse"])
    resumed = ckpt.run(problem(0, 0, HORIZON), _schedule(), LEARN, loss, 0, 0,
                       prices=favour["forward"])
    assert ckpt.resumed == [(0, 0, 16)]
    assert resumed.engine.engine == "reverse" and resumed.engine.requested == "auto"
    _assert_same(resumed, references["reverse"])


def test_a_finished_replica_is_not_trained_again(problem, tmp_path):
    schedule = _schedule()
    ckpt = InnerCheckpointer(LocalStore(tmp_path), RunLayout("e", "r"), every=4)
    first = ckpt.run(problem(0, 0, HORIZON), schedule, LEARN,
                     torch.nn.functional.cross_entropy, 0, 0, engine="reverse")

    def untouchable():
        raise AssertionError("the stored result should have been used")
        yield

    task = problem(0, 0, HORIZON)
    again = ckpt.run(InnerTask(task.model, untouchable(), task.val_batches), schedule, LEARN,
                     torch.nn.functional.cross_entropy, 0, 0, engine="reverse")
    _assert_same(again, first)
    assert again.engine == first.engine  # the stored result says which engine computed it


def test_a_damaged_newest_checkpoint_is_skipped(problem, references, tmp_path):
    schedule = _schedule()
    store = LocalStore(tmp_path)
    ckpt = InnerCheckpointer(store, RunLayout("e", "r"), every=4)
    loss = torch.nn.functional.cross_entropy
    with pytest.raises(Crash):
        ckpt.run(problem(0, 0, HORIZON), schedule, LEARN, loss, 0, 0, on_step=_crash_at(10),
                 engine="forward")
    newest = tmp_path / ckpt.checkpoints(0, 0)[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # cut short, as by a crash mid-write
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        resumed = ckpt.run(problem(0, 0, HORIZON), schedule, LEARN, loss, 0, 0,
                           engine="forward")
    assert ckpt.resumed == [(0, 0, 4)]
    _assert_same(resumed, references["forward"])


def test_a_checkpoint_of_another_schedule_is_not_resumed(problem, tmp_path):
    store = LocalStore(tmp_path)
    ckpt = InnerCheckpointer(store, RunLayout("e", "r"), every=4)
    loss = torch.nn.functional.cross_entropy
    with pytest.raises(Crash):
        ckpt.run(problem(0, 0, HORIZON), _schedule(0.05), LEARN, loss, 0, 0,
                 on_step=_crash_at(6), engine="forward")
    other = _schedule(0.02)
    with pytest.warns(UserWarning, match="different run configuration"):
        result = ckpt.run(problem(0, 0, HORIZON), other, LEARN, loss, 0, 0, engine="forward")
    assert ckpt.resumed == []
    _assert_same(result, _reference(problem, other))


def test_outer_checkpoint_skips_a_damaged_newest_one(tmp_path):
    from fdshpo import SignOptimizer
    from fdshpo.tune.loop import TuneState

    store = LocalStore(tmp_path)
    outer = OuterCheckpointer(store, RunLayout("e", "r"))
    assert outer.latest() is None
    schedule = _schedule()
    state0 = TuneState(schedule, SignOptimizer().init(schedule), next_outer_step=1)
    state1 = TuneState(schedule, SignOptimizer().init(schedule), next_outer_step=2)
    outer.save(state0)
    key = outer.save(state1)
    (tmp_path / key).write_text("{\"trunc")
    with pytest.warns(UserWarning, match="skipping unreadable outer checkpoint"):
        assert outer.latest().next_outer_step == 1
    outer.save(state1)  # a damaged checkpoint is replaced, an intact one never is
    assert outer.latest().next_outer_step == 2


def _driver(store: Path, run_id: str, delay: float, engine: str, **popen):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    return subprocess.Popen([sys.executable, str(DRIVER), str(store), run_id, str(delay), engine],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **popen)


def _finish(proc) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_killed_mid_outer_step_and_resumed_equals_an_uninterrupted_run(tmp_path, engine):
    reference = _finish(_driver(tmp_path / "reference", "run", 0.0, engine))
    assert reference["resumed_outer"] is None

    store = tmp_path / "killed"
    victim = _driver(store, "run", 0.05, engine)
    # wait until outer step 0 is checkpointed and replica 0 of outer step 1 (the last) is
    # mid-way
    inner = store / "experiments/resume/runs/run/checkpoints/inner/0001/000"
    deadline = time.monotonic() + 120
    while not (inner.is_dir() and any(inner.glob("*.pt"))):
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached outer step 1"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert not (store / "experiments/resume/runs/run/run.json").exists()

    resumed = _finish(_driver(store, "run", 0.0, engine))
    assert resumed["resumed_outer"] == 1
    assert [tuple(r[:2]) for r in resumed["resumed_inner"]] == [(1, 0)]
    assert resumed["resumed_inner"][0][2] > 0
    assert resumed["state"] == reference["state"]  # schedule, hypergradients, losses: exact

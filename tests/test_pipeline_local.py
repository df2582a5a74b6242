"""The pipeline is the real algorithm: run through kfp.local (and inline) on the bundled sample,
its learned schedule equals fdshpo.tune.loop.tune on the same config and seeds; a killed inner
component resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from fdshpo.components.common import load_dataset, problem_for
from fdshpo.config.experiment import load_config
from fdshpo.tune.loop import tune

ROOT = Path(__file__).resolve().parents[1]


def small_config(tmp_path, **changes) -> Path:
    """2 outer steps x 2 replicas of an MLP on the bundled sample over a short horizon."""
    data = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    data["schedule"].update(horizon=30, segments={"lr": 2, "momentum": 1, "weight_decay": 1})
    data["outer"].update(max_steps=2, replicas=2)
    data["retrain"] = {"horizon": 30}
    data["data"]["batch_size"] = 64
    data["store"] = {"uri": str(tmp_path / "store")}
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def library_tune(config):
    torch.set_num_threads(1)
    problem = problem_for(config, load_dataset(config))
    return tune(problem, config.initial_schedule(), config.optimizer(),
                loss_fn=nn.functional.cross_entropy, outer_steps=config.outer.max_steps,
                replicas=config.outer.replicas, select=config.outer.select,
                on_diverged=config.outer.on_diverged, engine=config.engine)


def assert_same_run(summary, expected):
    assert summary.outer_steps == len(expected.history)
    for name, values in expected.schedule.values.items():
        assert torch.equal(summary.schedule.values[name], values), name


def test_kfp_local_pipeline_equals_library_tune(tmp_path):
    from fdshpo.pipelines.local import run_kfp_local
    from fdshpo.tracking.query import Query
    from fdshpo.tracking.recorder import list_runs, load_run

    config = load_config(small_config(tmp_path))
    summary = run_kfp_local(config, "e2e-kfp", pipeline_root=str(tmp_path / "kfp"))
    expected = library_tune(config)
    assert_same_run(summary, expected)
    # the run landed in the store, complete, with every outer step and replica recorded
    store_runs = list_runs(_store(config), Query(config.experiment)).rows
    assert [(r["run_id"], r["status"]) for r in store_runs] == [("e2e-kfp", "complete")]
    run = load_run(_store(config), "e2e-kfp", config.experiment)
    assert [s["outer_step"] for s in run.steps] == [0, 1]
    for got, want in zip(run.steps, expected.history):
        assert got["hypergradients"] == want.hypergradients
        assert got["replica_hypergradients"] == want.replica_hypergradients
        assert got["engine"] == want.engine and got["engine"]["requested"] == "auto"
        assert got["engine"]["reason"]  # auto's choice and why, in the run record
    assert 0.0 < summary.metrics["test_accuracy"] <= 1.0
    assert summary.report.endswith("experiments/demo/runs/e2e-kfp/report.html")
    # KFP artifacts: the report's HTML and Markdown and the replicas' hypergradients
    outputs = list((tmp_path / "kfp").rglob("*"))
    assert any(p.name == "page" and "<html" in p.read_text().lower() for p in outputs
               if p.is_file())
    assert sum(p.name == "hypergradients" for p in outputs if p.is_file()) == 4


def _store(config):
    from fdshpo.store import open_store

    return open_store(config.store.uri)


def test_inline_runner_equals_library_tune_and_stops_early(tmp_path):
    from fdshpo.pipelines.local import run_inline

    # a huge tol: converged after the first outer step, so the loop stops early
    path = small_config(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["outer"].update(tol=1e6, replicas=1, step_sizes={"lr": 0.1, "momentum": 0.3})
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    lines = []
    summary = run_inline(config, "e2e-inline", progress=lines.append)
    expected = library_tune(config)
    assert expected.converged and len(expected.history) == 1
    assert_same_run(summary, expected)
    assert summary.converged and lines == [lines[0]] and "converged" in lines[0]
    assert f"engine {expected.history[0].engine['engine']} (auto: " in lines[0]


INNER = """
import sys, torch
torch.set_num_threads(1)
from fdshpo.config.experiment import load_config
from fdshpo.components.inner import inner_step
from fdshpo.tune.loop import TuneState
if "--pause-after-first-checkpoint" in sys.argv:
    from fdshpo.tracking.checkpoint import InnerCheckpointer
    save = InnerCheckpointer.save
    def save_then_wait(self, state, *args, **kwargs):
        key = save(self, state, *args, **kwargs)
        print("checkpointed", state.step, flush=True)  # the signalled point
        sys.stdin.read()  # wait here to be killed
        return key
    InnerCheckpointer.save = save_then_wait
config = load_config(sys.argv[1])
state = TuneState(config.initial_schedule(), config.optimizer().init(config.initial_schedule()))
import json
record = inner_step(config, "resume", json.dumps(state.to_dict()), 0, sys.argv[2],
                    "kfp-job:resume")  # the rerun: a retry of the same job
print(json.dumps(record))
"""


def test_killed_inner_component_resumes_from_its_checkpoint(tmp_path):
    """Killed at a signalled point (right after its first checkpoint, step 10 of 30), the
    rerun resumes there and its hypergradients equal an uninterrupted run's."""
    from fdshpo.components.common import save_dataset

    path = small_config(tmp_path, checkpoint_every=10)
    config = load_config(path)
    dataset = tmp_path / "dataset.pt"
    save_dataset(load_dataset(config), dataset)
    checkpoints = tmp_path / "store/experiments/demo/runs/resume/checkpoints/inner/0000/000"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", INNER, str(path), str(dataset),
                             "--pause-after-first-checkpoint"], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line == "checkpointed 10\n", line + proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(int(p.stem) for p in checkpoints.glob("*.pt")) == [10]
    rerun = subprocess.run([sys.executable, "-c", INNER, str(path), str(dataset)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert record["resumed"] == [[0, 0, 10]]
    # bit-identical to an uninterrupted run
    torch.set_num_threads(1)
    problem = problem_for(config, load_dataset(config))
    outer = config.outer_step()
    fresh = outer.run_replica(problem, outer.init(config.initial_schedule()), 0)
    assert record["grads"] == fresh.grads


def test_retune_warm_starts_from_the_latest_learned_schedule(tmp_path):
    from fdshpo.pipelines.local import run_inline
    from fdshpo.store import open_store
    from fdshpo.tracking.recorder import load_run

    path = small_config(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["outer"].update(max_steps=1, replicas=1, select="last")  # moved after one step
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    first = run_inline(config, "first", progress=lambda line: None)
    second = run_inline(config, "second", retune=True, progress=lambda line: None)
    store = open_store(config.store.uri)
    started_from = load_run(store, "second", config.experiment).steps[0]["schedule"]
    assert started_from["values"] == first.schedule.to_dict()["values"]
    assert started_from["values"] != config.initial_schedule().to_dict()["values"]
    assert second.outer_steps == 1


def test_a_run_that_disagrees_with_the_compiled_graph_is_refused(tmp_path):
    """config_json and replicas overridden at run time (as a KFP UI user could): prepare
    refuses before anything is recorded, naming the keys; kfp.local reports the task."""
    from fdshpo.pipelines.local import TaskFailed, run_kfp_local

    config = load_config(small_config(tmp_path))
    other = config.to_dict()
    other["outer"]["max_steps"] = 3
    other["resources"]["cpu"] = "4"
    with pytest.raises(TaskFailed) as info:
        run_kfp_local(config, "mismatch", pipeline_root=str(tmp_path / "kfp"),
                      arguments={"config_json": json.dumps(other), "replicas": ["0"]})
    failure = info.value
    assert failure.task == "prepare-component"
    assert "outer.max_steps (compiled 2, given 3)" in failure.message
    assert "resources.cpu (compiled None, given '4')" in failure.message
    assert "the replicas parameter (given ['0']" in failure.message
    assert "Traceback (most recent call last)" in failure.log_path.read_text()
    assert not (tmp_path / "store").exists()  # refused before the run was recorded


@pytest.mark.parametrize("verbose", [False, True])
def test_a_failing_task_is_reported_without_a_traceback(tmp_path, monkeypatch, capsys,
                                                         verbose):
    from fdshpo.cli import main
    from fdshpo.pipelines.local import TaskFailed

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID_FILE",
                 "AWS_SECRET_ACCESS_KEY_FILE", "FDSHPO_KFP_VERBOSE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FDSHPO_S3_SECRET_DIR", str(tmp_path / "no-secret"))
    argv = ["run", str(small_config(tmp_path)), "--store", "s3://no-keys/x", "--kfp-root",
            str(tmp_path / "kfp")]
    if verbose:
        monkeypatch.setenv("FDSHPO_KFP_VERBOSE", "1")
        with pytest.raises(TaskFailed):
            main(argv)
        assert "Traceback (most recent call last)" in capsys.readouterr().out
        return
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert ("fdshpo: error: pipeline task 'prepare-component' failed: "
            "fdshpo.store.base.StoreError: no S3 credentials found: set AWS_ACCESS_KEY_ID") in err
    log = tmp_path / "kfp" / "fdshpo-run.log"
    assert f"full log (every task's output, tracebacks included): {log}" in err
    assert "Traceback" not in out + err
    assert "[prepare-component] Traceback (most recent call last):" in log.read_text()

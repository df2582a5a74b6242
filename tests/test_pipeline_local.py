"""The pipeline is the real algorithm: run through kfp.local (and inline) on the bundled sample,
its learned schedule equals fdshpo.tune.tune on the same config and seeds; a killed inner
component resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from fdshpo.components.common import load_dataset, problem_for
from fdshpo.config import load_config
from fdshpo.tune import tune

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
                on_diverged=config.outer.on_diverged)


def assert_same_run(summary, expected):
    assert summary.outer_steps == len(expected.history)
    for name, values in expected.schedule.values.items():
        assert torch.equal(summary.schedule.values[name], values), name


def test_kfp_local_pipeline_equals_library_tune(tmp_path):
    from fdshpo.pipelines.local import run_kfp_local
    from fdshpo.query import Query
    from fdshpo.tracking import list_runs, load_run

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


INNER = """
import sys, torch
torch.set_num_threads(1)
from fdshpo.config import load_config
from fdshpo.components.inner import inner_step
from fdshpo.tune import TuneState
config = load_config(sys.argv[1])
state = TuneState(config.initial_schedule(), config.optimizer().init(config.initial_schedule()))
import json
record = inner_step(config, "resume", json.dumps(state.to_dict()), 0, sys.argv[2])
print(json.dumps(record))
"""


def test_killed_inner_component_resumes_from_its_checkpoint(tmp_path):
    from fdshpo.components.common import save_dataset

    path = small_config(tmp_path, checkpoint_every=10)
    data = yaml.safe_load(path.read_text())
    data["schedule"]["horizon"] = 150
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    dataset = tmp_path / "dataset.pt"
    save_dataset(load_dataset(config), dataset)
    checkpoints = tmp_path / "store/experiments/demo/runs/resume/checkpoints/inner/0000/000"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", INNER, str(path), str(dataset)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (checkpoints.exists() and any(checkpoints.glob("*.pt"))):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no inner checkpoint within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = sorted(int(p.stem) for p in checkpoints.glob("*.pt"))
    assert saved and saved[-1] < 150, "killed mid-run, after a checkpoint"
    rerun = subprocess.run([sys.executable, "-c", INNER, str(path), str(dataset)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert record["resumed"] and record["resumed"][0][:2] == [0, 0]
    assert record["resumed"][0][2] >= saved[-1]
    # bit-identical to an uninterrupted run
    torch.set_num_threads(1)
    problem = problem_for(config, load_dataset(config))
    outer = config.outer_step()
    fresh = outer.run_replica(problem, outer.init(config.initial_schedule()), 0)
    assert record["grads"] == fresh.grads


def test_retune_warm_starts_from_the_latest_learned_schedule(tmp_path):
    from fdshpo.pipelines.local import run_inline
    from fdshpo.store import open_store
    from fdshpo.tracking import load_run

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

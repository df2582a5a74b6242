"""compare(): equal budgets, scores, outputs (CSV, Markdown, JSON, plots, store); the CPU smoke
run of bench/quality.py."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fdshpo.baselines import SearchSpace
from fdshpo.budget import CostModel
from fdshpo.compare import OUTPUT_FILES, compare, fds_planned_cost, to_csv, write_outputs
from fdshpo.data.sample import load_fashion_mnist_sample
from fdshpo.problem import ClassificationProblem

ROOT = Path(__file__).resolve().parents[1]
COSTS = CostModel(seconds_per_step=1e-3, fds_base=2.0, per_tangent=0.75,
                  per_eval_example=1 / 96, per_grad_example=1 / 32)
METHODS = ("fds", "random", "tpe", "hd", "cosine")


@pytest.fixture(scope="module")
def problem():
    return ClassificationProblem(load_fashion_mnist_sample(), "mlp", batch_size=32,
                                 val_fraction=0.1)


@pytest.fixture(scope="module")
def space():
    return SearchSpace(12, {"lr": 3, "momentum": 1, "weight_decay": 1},
                       {"lr": (0.0, 1.0), "momentum": (0.0, 0.99), "weight_decay": (0.0, 1e-2)})


@pytest.fixture(scope="module")
def comparison(problem, space):
    torch.set_num_threads(1)
    return compare(problem, space, METHODS, seeds=(0, 1), cost_model=COSTS,
                   budget_fractions=(0.5,), method_options={"fds": {"outer_steps": 3}})


def test_every_method_gets_fds_planned_budget_and_spends_it(comparison, problem, space):
    for seed, budget in comparison.budgets.items():
        assert budget == pytest.approx(fds_planned_cost(problem, space, COSTS, outer_steps=3))
        costs = {r.method: r.cost for r in comparison.rows if r.seed == seed}
        assert set(costs) == set(METHODS)
        assert max(costs.values()) <= budget
        # equal budget: any two methods' accounting differs by under 10%
        assert max(costs.values()) / min(costs.values()) < 1.1, costs


def test_rows_hold_retrained_test_scores(comparison):
    assert len(comparison.rows) == len(METHODS) * 2
    for row in comparison.rows:
        assert 0.1 <= row.test_accuracy <= 1.0
        assert row.curve[-1] == (1.0, row.test_accuracy)
        assert row.seconds > 0 and row.wall_steps > 0
    summary = {s["method"]: s for s in comparison.summary()}
    assert summary["fds"]["seeds"] == 2
    assert summary["random"]["test_accuracy_min"] <= summary["random"]["test_accuracy_mean"]


def test_outputs_locally_and_in_the_store(comparison, tmp_path):
    from fdshpo.store import open_store

    store = open_store(tmp_path / "store")
    paths = write_outputs(comparison, tmp_path / "out", store=store, prefix="cmp/run1")
    assert [p.name for p in paths] == list(OUTPUT_FILES)
    rows = list(csv.DictReader(io.StringIO(to_csv(comparison))))
    assert len(rows) == len(comparison.rows) and rows[0]["method"] == "fds"
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert md.startswith("| method | test accuracy (mean ± std)")
    for m in METHODS:
        assert f"| {m} |" in md
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert data["rows"][0]["result"]["schedule"]["num_steps"] == 12
    for name in ("accuracy_vs_budget.png", "schedules.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert store.get_bytes("cmp/run1/comparison.csv") == (tmp_path / "out" /
                                                          "comparison.csv").read_bytes()


def test_bad_arguments_say_what_to_change(problem, space):
    with pytest.raises(ValueError, match="unknown method 'bohb'"):
        compare(problem, space, ["fds", "bohb"], cost_model=COSTS)
    with pytest.raises(ValueError, match="no default budget; give one"):
        compare(problem, space, ["random"], cost_model=COSTS)
    with pytest.raises(ValueError, match=r"budget fractions must be in \(0, 1\]"):
        compare(problem, space, ["fds"], cost_model=COSTS, budget_fractions=(2.0,))


def test_quality_bench_smoke_run(tmp_path):
    out = tmp_path / "q"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--smoke",
                           "--methods", "fds,greedy,random,linear", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (out / "quality.md").read_text()
    assert "| fds |" in report and "| linear |" in report and "- machine:" in report
    assert len((out / "partial.jsonl").read_text().splitlines()) == 4
    assert (out / "comparison.csv").exists() and (out / "accuracy_vs_budget.png").exists()


def test_gpu_bench_dry_run_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu",
                           "--network", "lenet", "--batch-size", "4", "--horizon", "7",
                           "--repeats", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FDS step, (7,1,1), 9 tangents" in proc.stdout
    data = json.loads(out.read_text())
    assert data["plain_step_ms"] > 0 and data["fds_step_in_plain_steps"] > 1
    assert set(data["peak_memory_mib"]) == {"7", "70"}
    assert "| FDS step, (7,1,1), 9 tangents |" in out.with_suffix(".md").read_text()


def test_gpu_bench_refuses_without_cuda_and_says_what_to_do():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "CUDA is not available here" in proc.stderr and "--device cpu" in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_method_runs_on_cuda(space):
    from dataclasses import replace

    from fdshpo.baselines import METHODS as ALL

    data = load_fashion_mnist_sample()
    data = replace(data, **{k: getattr(data, k).cuda() for k in (
        "train_images", "train_labels", "test_images", "test_labels")})
    problem = ClassificationProblem(data, "lenet", batch_size=64, val_fraction=0.1,
                                    device="cuda")
    result = compare(problem, space, list(ALL), cost_model=COSTS,
                     method_options={"fds": {"outer_steps": 2}})
    assert {r.method for r in result.rows} == set(ALL)
    assert all(0.0 < r.test_accuracy <= 1.0 and r.cost <= r.budget for r in result.rows)

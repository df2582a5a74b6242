"""compare(): budgets in runs of the final job, picks stretched to the final horizon and scored
by a retrain, the anytime readout, summaries, outputs, the resumable journal, bad requests;
the bench/gpu.py dry run."""

import csv
import io
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

import fdshpo.compare.comparison as compare_module
from fdshpo import EnginePrices
from fdshpo.baselines import SearchSpace
from fdshpo.baselines.budget import CostModel
from fdshpo.compare.comparison import Comparison, MethodRun, Row, compare, settings
from fdshpo.compare.outputs import OUTPUT_FILES, Journal, to_csv, to_markdown, write_outputs
from fdshpo.data.sample import load_fashion_mnist_sample
from fdshpo.schedule import Schedule
from fdshpo.tune.problem import ClassificationProblem
from fdshpo.tune.retrain import retrain_and_test

ROOT = Path(__file__).resolve().parents[1]
COSTS = CostModel(seconds_per_step=1e-3, engines=EnginePrices(forward_base=2.0, per_tangent=0.75),
                  per_eval_example=1 / 96, per_grad_example=1 / 32)
METHODS = ("fds", "greedy", "random", "linear", "hyperband")
INIT = {"lr": 0.07, "momentum": 0.3, "weight_decay": 1e-3}
FINAL = 48  # the final job's horizon (the search horizon is 12): one budget unit


@pytest.fixture(scope="module")
def problem():
    return ClassificationProblem(load_fashion_mnist_sample(), "mlp", batch_size=32,
                                 val_fraction=0.1)


@pytest.fixture(scope="module")
def space():
    return SearchSpace(12, {"lr": 2, "momentum": 1, "weight_decay": 1},
                       {"lr": (0.0, 1.0), "momentum": (0.0, 0.99), "weight_decay": (0.0, 1e-2)},
                       final_steps=FINAL)


@pytest.fixture(scope="module")
def comparison(problem, space):
    torch.set_num_threads(1)
    return compare(problem, space, METHODS, seeds=(0, 1), budget_runs=(4, 2), initial=INIT,
                   cost_model=COSTS, options={"fds": {"outer_steps": 50}})


def test_budgets_are_runs_of_the_final_job_and_no_method_exceeds_them(comparison):
    assert comparison.budget_runs == (2, 4)
    assert len(comparison.rows) == len(METHODS) * 2 * 2
    for row in comparison.rows:
        assert row.budget == row.budget_runs * FINAL  # 96 and 192 plain-step equivalents
        assert 0 < row.cost <= row.budget
    for run in comparison.runs:
        # budget-aware greedy runs once per budget; every other method once, at the largest
        expected = [96, 192] if run.method == "greedy" else [192]
        assert [s["budget"] for s in run.searches] == expected, run.method
        assert all(s["cost"] <= s["budget"] for s in run.searches)


def test_every_method_starts_from_the_initial_schedule(comparison):
    for run in comparison.runs:
        first = run.searches[0]["details"].get("first_trial")
        if run.method in ("random", "hyperband"):
            assert first == {"lr_0": 0.07, "lr_1": 0.07, "momentum_0": 0.3,
                             "weight_decay_0": 1e-3}
        elif run.method == "linear":
            assert first == {"lr": 0.07, "momentum": 0.3, "weight_decay": 1e-3}


def test_picks_are_searched_short_and_scored_by_a_retrain_over_the_final_horizon(comparison,
                                                                               problem):
    for row in comparison.rows:
        assert row.schedule.num_steps == 12  # found on the search horizon
        assert not row.retrain_diverged
        assert 0.3 < row.test_accuracy <= 1.0  # a trained network (chance is 0.1)
    for method, n in (("fds", 4), ("hyperband", 2), ("linear", 4)):
        row = next(r for r in comparison.rows
                   if r.method == method and r.seed == 1 and r.budget_runs == n)
        ev = retrain_and_test(replace(problem, seed=1), row.schedule.stretched(FINAL))
        assert ev.num_steps == FINAL
        assert (ev.test_accuracy, ev.test_loss) == (row.test_accuracy, row.test_loss)


def test_hyperband_trains_its_trials_at_the_final_horizon(comparison):
    run = next(r for r in comparison.runs if r.method == "hyperband")
    log = run.searches[0]["details"]["trial_log"]
    assert max(t["steps"] for t in log) == FINAL
    assert run.searches[0]["ledger"]["plain_steps"] == sum(t["steps"] for t in log)


def test_identical_picks_are_retrained_once_per_seed(problem, space, monkeypatch):
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1].to_json())
        return retrain_and_test(*args, **kwargs)

    monkeypatch.setattr(compare_module, "retrain_and_test", counted)
    result = compare(problem, space, ("random", "constant"), budget_runs=(1, 2, 4),
                     cost_model=COSTS)
    picks = {r.schedule.to_json() for r in result.rows}
    assert len(calls) == len(picks) < len(result.rows)


def row(method, seed, n, acc, diverged=False):
    return Row(method, seed, n, 10.0 * n, 9.0 * n, 1.0, 0.5, acc, 0.4, diverged,
               Schedule.constant(4, 0.1))


def test_summary_per_budget_by_hand(space):
    runs = (MethodRun("a", 0, (row("a", 0, 2, 0.80), row("a", 0, 4, 0.84)), ()),
            MethodRun("a", 1, (row("a", 1, 2, 0.90), row("a", 1, 4, 0.86)), ()),
            MethodRun("a", 2, (row("a", 2, 2, 0.10, True), row("a", 2, 4, 0.85)), ()))
    summary = Comparison(runs, space, COSTS, (2, 4)).summary()
    assert [(s["method"], s["budget_runs"], s["seeds"]) for s in summary] == [("a", 2, 3),
                                                                             ("a", 4, 3)]
    at2, at4 = summary
    assert at2["test_accuracy_mean"] == pytest.approx(0.6)
    assert at2["test_accuracy_std"] == pytest.approx(math.sqrt((0.2**2 + 0.3**2 + 0.5**2) / 2))
    assert (at2["test_accuracy_min"], at2["test_accuracy_max"]) == (0.1, 0.9)
    assert at2["retrain_divergence_rate"] == pytest.approx(1 / 3)
    assert at4["test_accuracy_mean"] == pytest.approx(0.85)
    assert at4["test_accuracy_std"] == pytest.approx(0.01)
    assert at4["retrain_divergence_rate"] == 0
    assert (at2["budget"], at4["cost_mean"]) == (20.0, 36.0)


def test_wall_over_modelled_is_reported_per_method_and_a_disagreement_warned(space):
    """The issue's comparison charged FDS 407 units for 64 s and linear 1,800 for 12 s
    (wall/modelled 1.19 against 0.05) and warned of nothing."""
    from fdshpo.compare.outputs import to_markdown

    def run(method, cost, seconds):
        return MethodRun(method, 0, (row(method, 0, 2, 0.8),),
                         ({"cost": cost, "seconds": seconds},))

    agree = Comparison((run("fds", 1000, 1.2), run("linear", 1000, 0.9)), space, COSTS, (2,))
    assert agree.wall_ratios() == pytest.approx({"fds": 1.2, "linear": 0.9})
    assert agree.price_warning() is None
    assert "Wall/modelled (search wall time over its charged cost): fds 1.20, linear 0.90" in (
        to_markdown(agree))
    apart = Comparison((run("fds", 1000, 1.19), run("linear", 1000, 0.05)), space, COSTS, (2,))
    warning = apart.price_warning()
    assert warning == (
        "WARNING: the cost model disagrees with the clock: wall/modelled is 1.19 for fds but "
        "0.05 for linear (more than 2x apart), so equal modelled budgets were not equal "
        "compute; rerun on an idle machine or with --cost-model from a run where they agree")
    assert to_markdown(apart).startswith(f"**{warning}**")
    assert apart.to_dict()["price_warning"] == warning


def test_a_diverging_retrain_scores_chance_and_is_counted(problem):
    wild = SearchSpace(12, {"lr": 1}, {"lr": (50.0, 100.0), "momentum": (0.0, 0.9),
                                        "weight_decay": (0.0, 0.01)}, final_steps=FINAL)
    result = compare(problem, wild, ("constant",), budget_runs=(1,), cost_model=COSTS)
    (row_,) = result.rows
    assert row_.retrain_diverged and row_.test_accuracy == 0.1 and row_.test_loss == math.inf
    assert result.summary()[0]["retrain_divergence_rate"] == 1.0
    assert "| constant | **10.00 ± 0.00** | 10.00 | 10.00 | 1/1 (100%) |" in to_markdown(result)


def test_a_retrain_that_learns_nothing_is_counted_collapsed(problem):
    frozen = SearchSpace(12, {"lr": 1}, {"lr": (0.0, 1e-9), "momentum": (0.0, 0.5),
                                          "weight_decay": (0.0, 0.01)}, final_steps=FINAL)
    result = compare(problem, frozen, ("constant",), budget_runs=(1,), cost_model=COSTS)
    (row_,) = result.rows
    assert row_.retrain_collapsed and not row_.retrain_diverged
    assert row_.test_accuracy < 0.19 and math.isfinite(row_.test_loss)
    (summary,) = result.summary()
    assert (summary["retrain_collapsed"], summary["retrain_collapse_rate"]) == (1, 1.0)
    assert summary["retrain_divergence_rate"] == 0
    assert " | 0/1 (0%) | 1/1 | " in to_markdown(result)
    # a journal written before the flag existed still loads, as not collapsed
    old = {k: v for k, v in row_.to_dict().items() if k != "retrain_collapsed"}
    assert Row.from_dict(old).retrain_collapsed is False


def test_outputs_locally_and_in_the_store(comparison, tmp_path):
    from fdshpo.store import open_store

    store = open_store(tmp_path / "store")
    paths = write_outputs(comparison, tmp_path / "out", store=store, prefix="cmp/run1")
    assert [p.name for p in paths] == list(OUTPUT_FILES)
    rows = list(csv.DictReader(io.StringIO(to_csv(comparison))))
    assert len(rows) == len(comparison.rows) == 20
    assert {(r["method"], r["budget_runs"]) for r in rows} >= {("fds", "2"), ("hyperband", "4")}
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert md.startswith("Budget: 2 final-job runs (96 plain-step equivalents)")
    assert "Budget: 4 final-job runs (192 plain-step equivalents)" in md
    # a line per budget in the summary tables and in the per-seed table
    assert md.count("| fds |") == 4 and "| retrain diverged |" in md
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [(s["method"], s["budget_runs"]) for s in data["summary"]] == [
        (m, n) for n in (2, 4) for m in METHODS]
    assert all(0.3 < s["test_accuracy_mean"] <= 1 for s in data["summary"])
    assert data["runs"][0]["rows"][0]["schedule"]["num_steps"] == 12
    assert data["space"]["final_steps"] == FINAL
    for name in ("accuracy_vs_budget.png", "schedules.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert store.get_bytes("cmp/run1/comparison.csv") == (tmp_path / "out" /
                                                          "comparison.csv").read_bytes()


def test_an_interrupted_comparison_resumes_from_its_journal(problem, space, tmp_path):
    methods, seeds, runs_n = ("random", "linear"), (0, 1), (1, 2)
    path = tmp_path / "partial.jsonl"
    journal = Journal(path, settings(problem, space, runs_n, INIT, None))
    journal.start(COSTS)

    def interrupt_after_three(run):
        journal.append(run)
        if len(journal.runs) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(problem, space, methods, seeds=seeds, budget_runs=runs_n, initial=INIT,
                cost_model=COSTS, on_run=interrupt_after_three)
    with path.open("a") as f:
        f.write('{"method": "random", "seed": 1, "ro')  # a line torn by the interruption
    resumed = Journal(path, settings(problem, space, runs_n, INIT, None))
    assert resumed.cost_model == COSTS
    assert [(r.seed, r.method) for r in resumed.runs] == [(0, "random"), (0, "linear"),
                                                          (1, "random")]
    ran = []
    result = compare(problem, space, methods, seeds=seeds, budget_runs=runs_n, initial=INIT,
                     cost_model=resumed.cost_model, done=resumed.runs, on_run=ran.append)
    assert [(r.seed, r.method) for r in ran] == [(1, "linear")]
    fresh = compare(problem, space, methods, seeds=seeds, budget_runs=runs_n, initial=INIT,
                    cost_model=COSTS)
    assert [(r.method, r.seed, r.budget_runs, r.test_accuracy) for r in result.rows] == [
        (r.method, r.seed, r.budget_runs, r.test_accuracy) for r in fresh.rows]
    with pytest.raises(ValueError, match="holds a comparison with other settings"):
        Journal(path, settings(problem, space, (1, 2, 4), INIT, None))


@dataclass(frozen=True)
class NoWork(ClassificationProblem):
    """A problem whose tasks must not be asked for: bad requests fail before any work."""

    def __call__(self, outer_step, replica, num_steps):
        raise AssertionError("work started before the request was checked")


@pytest.mark.parametrize("methods,runs,message", [
    (("fds", "bohb"), (2,), r"unknown method 'bohb'; known methods are \[.*'hyperband'"),
    (("fds",), (0,), r"budget runs must be positive numbers of final-job runs \(e.g. 2 4 8 "
                     r"16\), got \[0\]"),
    (("fds",), (2, -1), r"budget runs must be positive .*got \[-1\]"),
    # one FDS outer step over 12 steps with 3 + 4 live tangents and a 500-example validation
    # gradient: 12 * 2 + 42 * 0.75 + 500 / 32 = 71.125 plain steps = 1.48 runs of 48 steps
    (("random", "fds"), (1, 4), r"a budget of 1 final-job runs \(48 plain-step equivalents\) "
     r"cannot pay for one FDS outer step of 'fds' \(71\); the minimum is 1.49 runs"),
    # one trial: 12 steps + 500 / 96 for the validation pass = 17.2 = 0.36 runs
    (("random",), (0.3,), r"cannot pay for one random trial of 'random' \(17\); the minimum "
                          r"is 0.36 runs"),
])
def test_bad_requests_fail_before_any_work_and_say_what_to_change(methods, runs, message,
                                                                  space):
    problem = NoWork(load_fashion_mnist_sample(), "mlp", batch_size=32, val_fraction=0.1)
    with pytest.raises(ValueError, match=message):
        compare(problem, space, methods, budget_runs=runs, cost_model=COSTS)


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
    assert data["plain_step_ms"] > 0 and data["fds_step_ms"] > 0 and data["reverse_step_ms"] > 0
    assert data["auto_engine"] in ("forward", "reverse")
    assert set(data["peak_memory_mib"]) == set(data["reverse_peak_memory_mib"]) == {"7", "70"}
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
    from fdshpo.baselines import METHODS as ALL

    data = load_fashion_mnist_sample()
    data = replace(data, **{k: getattr(data, k).cuda() for k in (
        "train_images", "train_labels", "test_images", "test_labels")})
    problem = ClassificationProblem(data, "lenet", batch_size=64, val_fraction=0.1,
                                    device="cuda")
    result = compare(problem, space, list(ALL), budget_runs=(2,), cost_model=COSTS)
    assert {r.method for r in result.rows} == set(ALL)
    assert all(0.3 < r.test_accuracy <= 1.0 and r.cost <= r.budget for r in result.rows)

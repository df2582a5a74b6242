"""`fdshpo compare CONFIG`: a tiny real run writes the tables and plots locally and to the store
and resumes from its journal; bad configs and flags fail with a message that says what to
change."""

import csv
import json

import pytest
import torch

from fdshpo.cli import main

CONFIG = """\
experiment: tiny
seed: 0
data: {dataset: fashion-mnist-sample, batch_size: 32, val_fraction: 0.1, val_batch_size: 200}
network: mlp
network_init: xavier
schedule:
  horizon: 10
  segments: {lr: 2, momentum: 1, weight_decay: 1}
  initial: {lr: 0.05, momentum: 0.5, weight_decay: 1.0e-5}
  bounds: BOUNDS
outer: {max_steps: 20}
retrain: {horizon: 40}
compare: COMPARE
store: {uri: STORE}
"""
GOOD_BOUNDS = "{lr: [1.0e-4, 1.0], momentum: [0.0, 0.99], weight_decay: [1.0e-6, 0.01]}"
# budgets well above one FDS outer step of this tiny config, which a loaded 2-core machine
# priced at up to 3.8 runs (about 1.5 when idle)
GOOD_COMPARE = "{methods: [fds, random, linear], seeds: [0], budget_runs: [6, 12]}"


def write_config(tmp_path, bounds=GOOD_BOUNDS, compare=GOOD_COMPARE):
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG.replace("BOUNDS", bounds).replace("COMPARE", compare)
                    .replace("STORE", str(tmp_path / "store")))
    return path


def test_compare_command_writes_tables_plots_and_store_and_resumes(tmp_path, capsys):
    torch.set_num_threads(1)
    config = write_config(tmp_path)
    out = tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out), "--name", "c1"]) == 0
    printed = capsys.readouterr().out
    assert "Budget: 6 final-job runs (240 plain-step equivalents)" in printed
    assert "| fds |" in printed and "| linear |" in printed
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [(r["method"], r["budget_runs"]) for r in rows] == [
        (m, n) for m in ("fds", "random", "linear") for n in ("6.0", "12.0")]
    assert all(float(r["cost"]) <= float(r["budget"]) == 40 * float(r["budget_runs"])
               for r in rows)
    data = json.loads((out / "comparison.json").read_text())
    assert {s["method"] for s in data["summary"]} == {"fds", "random", "linear"}
    assert all("test_accuracy_mean" in s and s["budget_runs"] in (6, 12) for s in data["summary"])
    assert data["settings"]["init"] == "xavier" and data["settings"]["val_batch_size"] == 200
    fds = next(r for r in data["runs"] if r["method"] == "fds")["searches"]
    assert {s["details"]["engine"]["requested"] for s in fds} == {"auto"}  # config's default
    stored = tmp_path / "store" / "experiments" / "tiny" / "comparisons" / "c1"
    assert (stored / "comparison.md").exists() and (stored / "schedules.png").exists()
    # a rerun finds every (seed, method) in the journal and runs nothing again
    assert main(["compare", str(config), "--out", str(out), "--no-store"]) == 0
    assert "resuming: 3 finished, 0 to run" in capsys.readouterr().out
    assert json.loads((out / "comparison.json").read_text())["summary"] == data["summary"]


def test_compare_command_needs_finite_bounds(tmp_path, capsys):
    config = write_config(tmp_path, "{lr: [1.0e-4, null], momentum: [0.0, 0.99], "
                                    "weight_decay: [1.0e-6, 0.01]}")
    assert main(["compare", str(config), "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "schedule.bounds" in err and "compare needs finite bounds" in err


@pytest.mark.parametrize("flags,compare,message", [
    (["--methods", "fds,smac"], GOOD_COMPARE,
     "--methods: unknown method 'smac'; known methods are ["),
    ([], "{methods: [bohb]}", "compare.methods: unknown method 'bohb'; known methods are ["),
    (["--budget-runs", "0"], GOOD_COMPARE,
     "--budget-runs: budget runs must be positive numbers of final-job runs (e.g. 2 4 8 16), "
     "got [0.0]"),
    (["--budget-runs", "0.05"], GOOD_COMPARE, "cannot pay for one FDS outer step of 'fds'"),
    ([], "{budget_runs: [2, 0]}", "compare.budget_runs must be a list of positive numbers"),
    ([], "{seeds: [1, 1]}", "compare.seeds must be a list of distinct integers >= 0"),
    ([], "{method: [fds]}", "unknown key(s) ['method'] in 'compare'"),
])
def test_compare_command_bad_input_says_what_to_change(tmp_path, capsys, flags, compare,
                                                       message):
    config = write_config(tmp_path, compare=compare)
    assert main(["compare", str(config), "--no-store", "--out", str(tmp_path / "o"),
                 *flags]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    if "minimum" in err:  # the smallest budget is named, in runs of the final job
        assert "; the minimum is " in err and " runs" in err
    assert not (tmp_path / "o" / "comparison.json").exists()


def test_the_engine_flag_reaches_fds_and_greedy(tmp_path):
    from fdshpo.cli import build_parser
    from fdshpo.commands.compare import build
    from fdshpo.commands.run import with_engine
    from fdshpo.config.experiment import load_config

    config = write_config(tmp_path)
    args = build_parser().parse_args(["compare", str(config), "--engine", "reverse"])
    _, _, _, options = build(with_engine(load_config(args.config), args), "cpu")
    assert options["fds"]["engine"] == options["greedy"]["engine"] == "reverse"
    args = build_parser().parse_args(["compare", str(config)])
    assert build(with_engine(load_config(args.config), args), "cpu")[3]["fds"]["engine"] == "auto"


def _picks(out) -> list[tuple]:
    data = json.loads((out / "comparison.json").read_text())
    return [(row["method"], row["budget_runs"], row["cost"], row["test_accuracy"],
             json.dumps(row["schedule"], sort_keys=True))
            for run in data["runs"] for row in run["rows"]]


def test_a_rerun_charged_an_earlier_comparisons_prices_makes_the_same_picks(tmp_path, capsys):
    torch.set_num_threads(1)
    # budgets well above one FDS outer step even when a loaded machine prices it high (measured
    # 3.8 runs under load; 1.5x that below)
    config = write_config(tmp_path, compare="{methods: [fds, linear], seeds: [0], "
                                            "budget_runs: [6, 12]}")
    first = tmp_path / "first"
    assert main(["compare", str(config), "--out", str(first), "--no-store"]) == 0
    measured = json.loads((first / "comparison.json").read_text())["cost_model"]
    for source in ("comparison.json", "partial.jsonl"):
        again = tmp_path / f"again-{source}"
        assert main(["compare", str(config), "--out", str(again), "--no-store",
                     "--cost-model", str(first / source)]) == 0
        assert f"(prices from {first / source})" in capsys.readouterr().out
        assert json.loads((again / "comparison.json").read_text())["cost_model"] == measured
        assert _picks(again) == _picks(first)
    # the prices are used, not just copied: FDS's engine costs 1.5x under 1.5x the prices
    engine_prices = ("fds_base", "per_tangent", "reverse_step", "reverse_recompute")
    dear = tmp_path / "dear-summary.json"
    dear.write_text(json.dumps({"cost_model": {
        **measured, **{k: 1.5 * measured[k] for k in engine_prices}}}))
    assert main(["compare", str(config), "--out", str(tmp_path / "dear"), "--no-store",
                 "--budget-runs", "12", "--cost-model", str(dear)]) == 0
    first_engine, dear_engine = (
        next(r for r in json.loads((out / "comparison.json").read_text())["runs"]
             if r["method"] == "fds")["searches"][-1]["details"]["engine"]
        for out in (first, tmp_path / "dear"))
    assert dear_engine["engine"] == first_engine["engine"]
    assert dear_engine["cost"] == pytest.approx({k: 1.5 * v
                                                 for k, v in first_engine["cost"].items()})
    # resuming a journal with other prices is refused rather than mixing two cost models
    assert main(["compare", str(config), "--out", str(first), "--no-store",
                 "--cost-model", str(dear)]) == 2
    assert (f"--cost-model: {first / 'partial.jsonl'} was started with other prices; drop "
            "--cost-model to resume it, or choose another --out") in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    (None, "is not a file; give the comparison.json, partial.jsonl or "
           "bench/results/*-summary.json of the comparison whose prices to reuse"),
    ("not json", "is not JSON; give the comparison.json"),
    ('{"summary": []}', "has no cost_model object; give the comparison.json"),
    ('{"cost_model": {"seconds_per_step": 0.001, "fds_base": -1, "per_tangent": 0.3, '
     '"per_eval_example": 0.001, "per_grad_example": 0.002}}',
     "its cost_model is not valid: cost model fds_base must be non-negative, got -1.0"),
])
def test_a_cost_model_file_that_holds_none_says_what_to_give(tmp_path, capsys, content,
                                                             message):
    config = write_config(tmp_path)
    prices = tmp_path / "prices.json"
    if content is not None:
        prices.write_text(content)
    assert main(["compare", str(config), "--no-store", "--out", str(tmp_path / "o"),
                 "--cost-model", str(prices)]) == 2
    err = capsys.readouterr().err
    assert f"--cost-model: {prices}" in err and message in err, err
    assert not (tmp_path / "o").exists()


def test_the_engine_flag_reaches_the_runs_of_a_comparison(tmp_path):
    torch.set_num_threads(1)
    config = write_config(tmp_path, compare="{methods: [fds, greedy], seeds: [0], "
                                            "budget_runs: [8]}")
    out = tmp_path / "out"
    assert main(["compare", str(config), "--out", str(out), "--no-store",
                 "--engine", "reverse"]) == 0
    runs = {r["method"]: r for r in json.loads((out / "comparison.json").read_text())["runs"]}
    fds = runs["fds"]["searches"][-1]["details"]["engine"]
    assert (fds["requested"], fds["engine"]) == ("reverse", "reverse")
    assert set(runs["greedy"]["searches"][-1]["details"]["engines"]) == {"reverse"}

"""`fdshpo compare CONFIG`: a tiny real run writes the table and plots locally and to the store;
bad configs fail with a message that says what to change."""

import csv

import pytest
import torch

from fdshpo.cli import main

CONFIG = """\
experiment: tiny
seed: 0
data: {dataset: fashion-mnist-sample, batch_size: 32, val_fraction: 0.1}
network: mlp
schedule:
  horizon: 10
  segments: {lr: 2, momentum: 1, weight_decay: 1}
  initial: {lr: 0.0, momentum: 0.0, weight_decay: 0.0}
  bounds: BOUNDS
outer: {max_steps: 2}
store: {uri: STORE}
"""
GOOD_BOUNDS = "{lr: [0.0, 1.0], momentum: [0.0, 0.99], weight_decay: [0.0, 0.01]}"


def write_config(tmp_path, bounds=GOOD_BOUNDS):
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG.replace("BOUNDS", bounds).replace("STORE", str(tmp_path / "store")))
    return path


def test_compare_command_writes_table_plots_and_store(tmp_path, capsys):
    torch.set_num_threads(1)
    config = write_config(tmp_path)
    rc = main(["compare", str(config), "--methods", "fds,random,linear", "--fractions", "0.5",
               "--out", str(tmp_path / "out"), "--name", "c1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| fds |" in printed and "| linear |" in printed
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert [r["method"] for r in rows] == ["fds", "random", "linear"]
    budgets = {float(r["budget"]) for r in rows}
    assert len(budgets) == 1  # every method got FDS's planned spend
    assert all(float(r["cost"]) <= float(r["budget"]) for r in rows)
    stored = tmp_path / "store" / "experiments" / "tiny" / "comparisons" / "c1"
    assert (stored / "comparison.md").exists() and (stored / "schedules.png").exists()


def test_compare_command_needs_finite_bounds(tmp_path, capsys):
    config = write_config(tmp_path, "{lr: [0.0, null], momentum: [0.0, 0.99], "
                                    "weight_decay: [0.0, 0.01]}")
    assert main(["compare", str(config), "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "schedule.bounds" in err and "compare needs finite bounds" in err


def test_compare_command_rejects_unknown_method(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["compare", str(config), "--methods", "fds,smac", "--no-store"]) == 2
    assert "unknown method 'smac'" in capsys.readouterr().err


@pytest.mark.parametrize("budget", ["1"])
def test_compare_command_budget_too_small(tmp_path, capsys, budget):
    config = write_config(tmp_path)
    assert main(["compare", str(config), "--methods", "random", "--budget", budget,
                 "--no-store"]) == 2
    assert "raise the budget" in capsys.readouterr().err

"""Every place that shows a run's result says which outer step the returned schedule came from,
that step's validation loss, and the engine that ran (not the configured ``auto``); records
written before these fields still read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from nets import sample_subset_problem

from fdshpo import Schedule, SignOptimizer
from fdshpo.cli import main as cli
from fdshpo.store import open_store
from fdshpo.store.layout import OVERVIEW, RunLayout
from fdshpo.tracking.index import complete_entry, write_entry
from fdshpo.tracking.query import Query
from fdshpo.tracking.reader import list_runs, load_run
from fdshpo.tracking.recorder import RunRecorder

LOSSES = (1.0, 0.439, 1.122)  # outer step 2 is the best; the last one is worse


def _schedule(lr: float) -> dict:
    return Schedule.constant(8, lr=lr, momentum=0.5, segments={"lr": 2}).to_dict()


def _step(k: int, lr: float, val_loss: float, engine: str = "reverse") -> dict:
    return {"outer_step": k, "schedule": _schedule(lr),
            "hypergradients": {"lr": [0.1, -0.2]}, "replica_hypergradients": [],
            "val_loss": val_loss, "replica_val_losses": [val_loss],
            "step_sizes": {"lr": [0.1, 0.1]}, "seconds": 1.0, "converged": False,
            "diverged_replicas": [],
            "engine": {"engine": engine, "requested": "auto", "reason": "cheaper"}}


def _recorded(store, run_id="r1", selected_lr=0.2) -> RunRecorder:
    """A complete run of three outer steps (lr 0.1, 0.2, 0.3) that returned ``selected_lr``'s
    schedule."""
    rec = RunRecorder(store, "exp", run_id)
    rec.start({"engine": "auto", "network": "mlp"})
    for k, (lr, loss) in enumerate(zip((0.1, 0.2, 0.3), LOSSES)):
        store.put_json(rec.layout.step(k), _step(k, lr, loss))
    rec.finish(Schedule.from_dict(_schedule(selected_lr)), {"test_accuracy": 0.8})
    return rec


def test_the_record_and_index_say_which_outer_step_was_returned_and_which_engine_ran(tmp_path):
    store = open_store(tmp_path)
    rec = _recorded(store)
    record = store.get_json(rec.layout.record)
    assert (record["selected_outer_step"], record["selected_val_loss"], record["engine"],
            record["final_val_loss"]) == (2, 0.439, "reverse", 1.122)
    [row] = list_runs(store).rows
    assert (row["selected_outer_step"], row["selected_val_loss"], row["engine"]) == (
        2, 0.439, "reverse")
    assert len(list_runs(store, Query.from_options(where=["engine=reverse"])).rows) == 1
    assert list_runs(store, Query.from_options(where=["engine=auto"])).rows == []
    assert len(list_runs(store, Query.from_options(
        where=["selected_val_loss<0.5 and selected_outer_step=2"])).rows) == 1


def test_the_cli_shows_the_selected_step_its_loss_and_the_engine(tmp_path, capsys):
    store = open_store(tmp_path)
    _recorded(store)
    _recorded(store, "r2", selected_lr=0.35)  # a schedule no outer step measured (last)
    uri = str(tmp_path)
    assert cli(["runs", "list", "--store", uri]) == 0
    out = capsys.readouterr().out
    assert "VAL LOSS (FROM OUTER STEP)" in out and "ENGINE" in out
    r1 = next(line for line in out.splitlines() if " r1 " in line)
    assert "0.439 (outer step 2 of 3)" in r1 and "reverse" in r1 and "1.122" not in r1
    r2 = next(line for line in out.splitlines() if " r2 " in line)
    assert "not validated (the last iterate, after outer step 3)" in r2

    assert cli(["runs", "show", "--store", uri, "exp/r1"]) == 0
    out = capsys.readouterr().out
    assert "run exp/r1: complete, 3 outer step(s), engine reverse" in out
    assert "val loss: 0.439 (outer step 2 of 3)" in out
    assert re.search(r"^2 \(selected\)\s+0\.439", out, re.MULTILINE)
    assert cli(["runs", "show", "--store", uri, "exp/r1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["selected_outer_step"], shown["selected_val_loss"], shown["engine"]) == (
        2, 0.439, "reverse")

    assert cli(["runs", "compare", "--store", uri, "exp/r1", "exp/r2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"val loss \(from outer step\)\s+0\.439 \(outer step 2 of 3\)\s+not "
                     r"validated", out)
    assert re.search(r"^engine\s+reverse\s+reverse", out, re.MULTILINE)


def test_the_pages_show_the_selected_step_its_loss_and_the_engine(tmp_path, capsys):
    store = open_store(tmp_path)
    rec = _recorded(store)
    page = store.get_bytes(rec.layout.report).decode()
    assert '<b class="selection">0.439 (outer step 2 of 3)</b>' in page
    assert '<b class="engine">reverse</b>' in page
    assert "<td>2 (selected)</td><td>0.439</td>" in page
    assert cli(["report", "--store", str(tmp_path)]) == 0
    overview = (tmp_path / OVERVIEW).read_text()
    assert '<th>val loss (from outer step)</th>' in overview
    assert '<td data-v="0.439">0.439 (outer step 2 of 3)</td>' in overview
    assert '<td data-v="reverse">reverse</td>' in overview
    report = tmp_path / "r1.html"
    assert cli(["runs", "report", "--store", str(tmp_path), "exp/r1", "-o", str(report)]) == 0
    assert '<b class="selection">0.439 (outer step 2 of 3)</b>' in report.read_text()


def test_a_default_run_is_listed_under_the_engine_that_ran(tmp_path):
    store = open_store(tmp_path)
    problem = sample_subset_problem(train=200, test=50, seed=2)
    rec = RunRecorder(store, "exp")
    rec.start({"engine": "auto"})
    result = rec.tune(problem, Schedule.constant(8, lr=0.05, momentum=0.5, segments={"lr": 2},
                                                 bounds={"lr": (0.0, 1.0)}),
                      SignOptimizer(), outer_steps=2)  # engine="auto"
    rec.finish(result.schedule, {"test_accuracy": 0.5})
    ran = result.history[0].engine["engine"]
    assert ran in ("forward", "reverse")
    [row] = list_runs(store, Query.from_options(where=[f"engine={ran}"])).rows
    best = min(reversed(result.history), key=lambda r: r.val_loss)
    assert (row["selected_outer_step"], row["selected_val_loss"]) == (best.outer_step + 1,
                                                                       best.val_loss)


@pytest.mark.parametrize("verify", [False, True])
def test_records_written_before_the_selection_fields_still_read(tmp_path, capsys, verify):
    """An older run.json and index entry (no selection fields, the configured engine) list
    with their last step's loss labelled as such; `runs show` works the selection out from
    the outer steps."""
    store = open_store(tmp_path)
    rec = _recorded(store)
    layout = RunLayout("exp", "old")
    record = store.get_json(rec.layout.record)
    for key in ("selected_outer_step", "selected_val_loss", "engine"):
        del record[key]
    record.update(run_id="old", artifacts={})
    for k, (lr, loss) in enumerate(zip((0.1, 0.2, 0.3), LOSSES)):
        store.put_json(layout.step(k), _step(k, lr, loss))
    config_doc = {"experiment": "exp", "run_id": "old", "config": {"engine": "auto"},
                  "started": record["started"], "parent": None}
    store.put_json(layout.config, config_doc)
    store.put_json(layout.record, record)
    write_entry(store, complete_entry(record, store.checksum(layout.record), config_doc))
    assert cli(["runs", "list", "--store", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if " old " in x)
    assert "1.122 (outer step 3, the last; selection not recorded)" in line and "auto" in line
    run = load_run(store, "exp/old", verify=verify)
    assert (run.summary["selected_outer_step"], run.summary["engine"]) == (2, "reverse")


def test_the_kfp_uis_markdown_names_the_selected_step_and_the_engine(tmp_path):
    from fdshpo.components.report import markdown_summary
    from fdshpo.config.experiment import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    store = open_store(tmp_path)
    record = store.get_json(_recorded(store).layout.record)
    steps = [_step(k, lr, loss) for k, (lr, loss) in enumerate(zip((0.1, 0.2, 0.3), LOSSES))]
    evaluation = {"schedule": _schedule(0.2),
                  "learned": {"test_accuracy": 0.8, "diverged": None, "num_steps": 8},
                  "initial": {"test_accuracy": 0.7, "diverged": None, "num_steps": 8}}
    text = markdown_summary(config, "r1", {"history": steps, "converged": False}, evaluation,
                            record)
    assert "Validation loss 0.439 (outer step 2 of 3); engine reverse." in text

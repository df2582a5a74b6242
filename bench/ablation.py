"""FDS ablations on a comparison config: one FDS variant at a time, everything else fixed.

    python bench/ablation.py CONFIG --out DIR [--variants NAME ...] [--seeds 0 1 2]
                             [--budget-runs 2 4 8 16] [--baseline DIR/comparison.json]
                             [--record bench/results/NAME]

Each variant is FDS with the config's settings (``outer``, ``schedule``) changed in one or a few
named ways (:data:`VARIANTS`; ``base`` is the config as it is), run through
:func:`fdshpo.compare.comparison.compare` exactly as the comparison runs FDS: the same seeds,
budgets of N
final-job runs (read from one FDS run per seed at the largest N), the same retraining over the
final horizon. The cost model is measured once and shared by every variant (or read from
``--baseline``'s comparison, whose baseline rows are then printed beside the variants), so the
budgets are equal. Every variant's rows go to DIR/VARIANT/ (with a partial.jsonl that a rerun
resumes from) and the table of all of them to DIR/ablation.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from fdshpo.commands.compare import build
from fdshpo.compare.comparison import calibrate_for, compare
from fdshpo.compare.comparison import settings as comparison_settings
from fdshpo.compare.outputs import Journal, read_cost_model
from fdshpo.config.experiment import load_config
from fdshpo.config.runtime import set_threads
from fdshpo.data.batches import split_validation

ALL = ("lr", "momentum", "weight_decay")

#: name -> (what it changes, FDS option overrides, search-space overrides, problem overrides)
VARIANTS: dict[str, tuple[str, dict, dict, dict]] = {
    "base": ("the config as it is", {}, {}, {}),
    "paper": ("the paper's outer loop: additive steps 0.1 / 0.1 / 1e-3, last iterate, no "
              "backtracking, constant shapes, a fresh split and batch order each outer step",
              {"multiplicative": [], "backtrack": False, "select": "last",
               "step_sizes": {"lr": 0.1, "momentum": 0.1, "weight_decay": 1e-3}},
              {"shapes": {}}, {"resample": True}),
    "paper+best": ("the paper's loop (as `paper`) returning the best-validated schedule",
                   {"multiplicative": [], "backtrack": False, "select": "best",
                    "step_sizes": {"lr": 0.1, "momentum": 0.1, "weight_decay": 1e-3}},
                   {"shapes": {}}, {"resample": True}),
    "last": ("the last iterate instead of the best-validated", {"select": "last"}, {}, {}),
    "additive": ("additive steps (0.1 / 0.1 / 1e-3) instead of multiplicative ones",
                 {"multiplicative": [],
                  "step_sizes": {"lr": 0.1, "momentum": 0.1, "weight_decay": 1e-3}}, {}, {}),
    "no-backtrack": ("no backtracking", {"backtrack": False}, {}, {}),
    "constant-shape": ("constant learning-rate segments (no base shape)", {},
                       {"shapes": {}}, {}),
    "replicas-2": ("2 replicas per outer step", {"replicas": 2}, {}, {}),
    "resample": ("a fresh validation split and batch order each outer step (the paper's) "
                 "instead of outer step 0's every time (common random numbers)", {}, {},
                 {"resample": True}),
    "crn": ("common random numbers: outer step 0's validation split and batch order every "
            "outer step (data.resample: false)", {}, {}, {"resample": False}),
    "fixed-split": ("one fixed validation split but a fresh batch order each outer step", {}, {},
                    {"resample": True, "fixed_split": True}),
    "steps-0.15": ("multiplicative step sizes 0.15", {"step_sizes": dict.fromkeys(ALL, 0.15)},
                   {}, {}),
    "steps-0.6": ("multiplicative step sizes 0.6", {"step_sizes": dict.fromkeys(ALL, 0.6)},
                  {}, {}),
    "segments-3": ("3 learning-rate segments instead of 7", {}, {"segments": {"lr": 3}}, {}),
    "horizon-half": ("learn on half the search horizon", {}, {"horizon_scale": 0.5}, {}),
    "horizon-double": ("learn on twice the search horizon", {}, {"horizon_scale": 2.0}, {}),
    "max-steps-4": ("at most 4 outer steps", {"outer_steps": 4}, {}, {}),
    "max-steps-6": ("at most 6 outer steps", {"outer_steps": 6}, {}, {}),
    "max-steps-10": ("at most 10 outer steps", {"outer_steps": 10}, {}, {}),
    "grow-2": ("step sizes grow x2 while a hypergradient keeps its sign", {"grow": 2.0}, {}, {}),
    "continue": ("once converged, go on over doubled horizons up to the final job's",
                 {"continue_to": "final"}, {}, {}),
    "grow-2+continue": ("grow-2 and continue together",
                        {"grow": 2.0, "continue_to": "final"}, {}, {}),
    "no-grow": ("step sizes never grow (grow 1, the paper's)", {"grow": 1.0}, {}, {}),
    "no-continue": ("stop once converged on the search horizon", {"continue_to": None}, {}, {}),
    "start-high": ("FDS alone starts from lr 0.1, momentum 0.9 (the baselines keep the common "
                   "start)", {}, {"initial": {"lr": 0.1, "momentum": 0.9}}, {}),
}


def variant_setup(config, device: str, name: str):
    """(problem, space, initial, FDS options) of variant ``name`` of ``config``."""
    _, fds_over, space_over, problem_over = VARIANTS[name]
    problem, space, initial, options = build(config, device)
    fds = {**options["fds"], **fds_over}
    if fds.get("continue_to") == "final":
        fds["continue_to"] = space.final_steps
    changes = {}
    if "shapes" in space_over:
        changes["shapes"] = space_over["shapes"]
    if "segments" in space_over:
        changes["segments"] = {**space.segments, **space_over["segments"]}
    if "horizon_scale" in space_over:
        changes["num_steps"] = max(1, round(space.num_steps * space_over["horizon_scale"]))
    if changes:
        space = dataclasses.replace(space, **changes)
    if "initial" in space_over:
        initial = {**(initial or {}), **space_over["initial"]}
    problem = dataclasses.replace(problem, **{k: v for k, v in problem_over.items()
                                              if k != "fixed_split"})
    if problem_over.get("fixed_split"):
        n = len(problem.dataset.train_images)
        _, val_index = split_validation(n, problem.val_fraction, problem.split_seed(0))
        problem = dataclasses.replace(problem, val_index=val_index)
    return problem, space, initial, fds


def summarise(comparison, label: str) -> list[dict]:
    return [{"variant": label, **s} for s in comparison.summary()]


def table(rows: list[dict], budgets: list[float]) -> str:
    """Markdown: one line per variant (or baseline), test accuracy mean ± std per budget."""
    labels = list(dict.fromkeys(r["variant"] for r in rows))
    head = "| variant | " + " | ".join(f"N = {n:g}" for n in budgets) + " | diverged |"
    lines = [head, "|---|" + "---|" * (len(budgets) + 1)]
    for label in labels:
        cells, diverged = [], 0
        for n in budgets:
            s = [r for r in rows if r["variant"] == label and r["budget_runs"] == n]
            if s:
                cells.append(f"{100 * s[0]['test_accuracy_mean']:.2f} ± "
                             f"{100 * s[0]['test_accuracy_std']:.2f}")
                diverged += s[0]["retrain_diverged"]
            else:
                cells.append("")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {diverged} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", nargs="+", default=["base"], choices=sorted(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--budget-runs", type=float, nargs="+")
    parser.add_argument("--baseline", help="a comparison.json whose cost model and baseline "
                                           "rows to use, or a running comparison's "
                                           "partial.jsonl (its cost model only)")
    parser.add_argument("--record", help="bench/results/NAME: also write NAME.md")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    config = load_config(args.config)
    set_threads(config)
    seeds = args.seeds or config.compare.seeds or [config.seed]
    budgets = sorted(args.budget_runs or config.compare.budget_runs or [2, 4, 8, 16])
    out = Path(args.out)
    rows, cost_model = [], None
    if args.baseline:
        cost_model = read_cost_model(args.baseline)
        text = Path(args.baseline).read_text()
        data = {} if args.baseline.endswith(".jsonl") else json.loads(text)
        rows += [{"variant": "fds: base (the comparison's own run)" if s["method"] == "fds"
                  else s["method"], **s} for s in data.get("summary", ())
                 if s["budget_runs"] in budgets]
    for name in args.variants:
        problem, space, initial, fds = variant_setup(config, args.device, name)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        journal = Journal(folder / "partial.jsonl", comparison_settings(
            problem, space, budgets, initial, {"fds": fds}))
        # one cost model for every variant: the baseline's, else a resumed journal's, else
        # measured once; a journal started with other prices is not mixed into this run
        cost_model = cost_model or journal.cost_model or calibrate_for(
            dataclasses.replace(problem, seed=seeds[0]), space, initial)
        if journal.cost_model is not None and journal.cost_model != cost_model:
            sys.exit(f"{folder / 'partial.jsonl'} was started with other prices than the other "
                     "variants of this run; delete it or use another --out")
        journal.start(cost_model)
        print(f"variant {name}: {VARIANTS[name][0]}", flush=True)
        comparison = compare(problem, space, ["fds"], seeds=seeds, budget_runs=budgets,
                             initial=initial, cost_model=cost_model, options={"fds": fds},
                             done=journal.runs, on_run=journal.append)
        (folder / "comparison.json").write_text(json.dumps(comparison.to_dict(), indent=1,
                                                           default=str))
        rows += summarise(comparison, f"fds: {name}")
        for s in comparison.summary():
            print(f"  N = {s['budget_runs']:g}: {100 * s['test_accuracy_mean']:.2f} ± "
                  f"{100 * s['test_accuracy_std']:.2f}", flush=True)
    minutes = (time.perf_counter() - started) / 60
    command = "python bench/ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    described = "\n".join(f"- `{n}`: {VARIANTS[n][0]}" for n in args.variants)
    text = "\n".join([
        f"# FDS ablations on {args.config}", "", f"- command: `{command}`",
        f"- date: {when}; wall time {minutes:.1f} min; seeds {seeds}; budgets {budgets} runs",
        f"- cost model: {json.dumps(cost_model.to_dict())}", "", described, "",
        "Test accuracy (%) after retraining over the final horizon, mean ± std over seeds:", "",
        table(rows, budgets), ""])
    (out / "ablation.md").write_text(text)
    (out / "ablation.json").write_text(json.dumps(rows, indent=1, default=str))
    if args.record:
        Path(args.record).with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do learned schedules survive the final job? Divergence rate over retraining seeds.

    python bench/stability.py --out DIR [--variants NAME ...] [--tune-seeds 0 1]
                              [--retrain-seeds 0 1 2 3 4] [--record bench/results/NAME]

The protocol the issue ran side by side with the paper's code: full Fashion-MNIST, LeNet-5,
batch 128, 5% validation, every value starting at 0, 4 outer steps of one epoch (445 steps)
each, then a from-scratch retraining of 2 epochs (890 steps) on the full training set for each
retraining seed. For every variant (:data:`VARIANTS`) and tuning seed the learned schedule is
retrained once per retraining seed; a retraining whose loss becomes non-finite diverged. The
table gives, per variant, the divergence rate over all (tuning seed, retraining seed) pairs and
the mean test accuracy of the retrainings that finished; a retraining that finished about as
good as chance (:func:`fdshpo.tune.retrain.is_collapsed`, below 19%) counts as collapsed, apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from fdshpo.data import load_dataset
from fdshpo.schedule import Schedule
from fdshpo.tune.loop import tune
from fdshpo.tune.problem import ClassificationProblem
from fdshpo.tune.retrain import is_collapsed, retrain_and_evaluate
from fdshpo.tune.sign import SignOptimizer

DATA = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10  # Fashion-MNIST
STEP_SIZES = {"lr": 0.1, "momentum": 0.1, "weight_decay": 3e-4}  # the paper's (setting a)
BOUNDS = {"lr": (0.0, 2.0), "momentum": (0.0, 0.999), "weight_decay": (0.0, 0.01)}

#: name -> (what it is, tune keyword arguments, SignOptimizer keyword arguments)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "paper": ("the paper's outer loop: additive sign steps, the last iterate",
              {"select": "last"}, {}),
    "best": ("the best-validated outer step's schedule", {"select": "best"}, {}),
    "backtrack": ("best-validated, with backtracking on a worse validation loss",
                  {"select": "best"}, {"backtrack": True}),
    "replicas-2": ("best-validated, each sign from the mean of 2 replicas (2 trajectories)",
                   {"select": "best", "replicas": 2}, {}),
    "backtrack+replicas-2": ("backtracking and 2 replicas", {"select": "best", "replicas": 2},
                             {"backtrack": True}),
}


def learned(problem, variant: str, horizon: int, outer_steps: int, engine: str) -> dict:
    _, tune_options, optimizer_options = VARIANTS[variant]
    start = Schedule.constant(horizon, lr=0.0, segments={"lr": 7}, bounds=BOUNDS)
    started = time.perf_counter()
    result = tune(problem, start, SignOptimizer(STEP_SIZES, **optimizer_options),
                  outer_steps=outer_steps, engine=engine, **tune_options)
    return {"schedule": result.schedule.to_dict(), "seconds": time.perf_counter() - started,
            "val_losses": [r.val_loss for r in result.history]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--retrain-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--outer-steps", type=int, default=4)
    parser.add_argument("--horizon", type=int, default=445, help="learning horizon (1 epoch)")
    parser.add_argument("--retrain", type=int, default=890, help="retraining steps (2 epochs)")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--record", help="bench/results/NAME: also write NAME.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "stability.jsonl"
    done = {(r["variant"], r["tune_seed"]): r for r in map(json.loads, journal.read_text()
                                                             .splitlines())} \
        if journal.exists() else {}
    dataset = load_dataset("fashion-mnist", path=DATA)
    rows = []
    for variant in args.variants:
        for seed in args.tune_seeds:
            if (variant, seed) in done:
                rows.append(done[(variant, seed)])
                continue
            problem = ClassificationProblem(dataset, "lenet", batch_size=128, val_fraction=0.05,
                                            seed=seed)
            row = {"variant": variant, "tune_seed": seed,
                   **learned(problem, variant, args.horizon, args.outer_steps, args.engine)}
            schedule = Schedule.from_dict(row["schedule"])
            row["retrains"] = []
            for r in args.retrain_seeds:
                ev = retrain_and_evaluate(problem, schedule, args.retrain, seed=1000 + r)
                row["retrains"].append({"seed": r, "test_accuracy": ev.test_accuracy,
                                        "diverged": ev.diverged})
            print(json.dumps({k: row[k] for k in ("variant", "tune_seed")}),
                  [x["test_accuracy"] for x in row["retrains"]], flush=True)
            with journal.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
    lines = ["| variant | diverged (non-finite loss) | collapsed (about chance: is_collapsed) | "
             "test accuracy of the others (%) | learned lr (first tuning seed) | momentum | "
             "weight decay |",
             "|---|---|---|---|---|---|---|"]
    for variant in args.variants:
        mine = [r for r in rows if r["variant"] == variant]
        retrains = [x for r in mine for x in r["retrains"]]
        diverged = sum(x["diverged"] is not None for x in retrains)
        working = [x for x in retrains if x["diverged"] is None]
        collapsed = sum(is_collapsed(x["test_accuracy"], NUM_CLASSES) for x in working)
        accs = [100 * x["test_accuracy"] for x in working
                if not is_collapsed(x["test_accuracy"], NUM_CLASSES)]
        acc = (f"{statistics.fmean(accs):.2f} ± {statistics.stdev(accs):.2f}"
               if len(accs) > 1 else "-")
        v = mine[0]["schedule"]["values"]
        lines.append(f"| {variant} | {diverged}/{len(retrains)} | "
                     f"{collapsed}/{len(retrains)} | {acc} | "
                     + ", ".join(f"{x:.3g}" for x in v["lr"])
                     + f" | {v['momentum'][0]:.3g} | {v['weight_decay'][0]:.3g} |")
    command = "python bench/stability.py " + " ".join(sys.argv[1:] if argv is None else argv)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        "# Stability of learned schedules: divergence over retraining seeds", "",
        f"- command: `{command}`",
        f"- date: {when}; wall time {(time.perf_counter() - started) / 60:.1f} min; "
        f"{torch.get_num_threads()} torch threads",
        f"- protocol: full Fashion-MNIST, LeNet-5, batch 128, 5% validation, every value from "
        f"0, {args.outer_steps} outer steps of {args.horizon} steps, retraining "
        f"{args.retrain} steps; tuning seeds {args.tune_seeds}, retraining seeds "
        f"{args.retrain_seeds}; step sizes {STEP_SIZES}, bounds {BOUNDS}", "",
        *(f"- `{n}`: {VARIANTS[n][0]}" for n in args.variants), "", *lines, ""])
    (out / "stability.md").write_text(text)
    if args.record:
        Path(args.record).with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

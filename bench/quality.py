"""Does FDS beat greedy, random search, TPE and tuned fixed schedules at equal budget?

    python bench/quality.py [--device cuda] [--data-dir DIR] [--epochs 3] [--batch-size 1024]
                            [--seeds 0 1 2] [--max-minutes 4] [--out bench/results/quality-cuda]
    python bench/quality.py --smoke --out /tmp/q   # bundled sample, MLP, 1 seed: seconds on CPU

Full Fashion-MNIST (Debian ``dataset-fashion-mnist``: the idx files in ``--data-dir``, else
wherever :func:`fdshpo.data.load_dataset` finds them), LeNet-5, a horizon of ``--epochs`` epochs
of the training split (batch 1024 by default, so that several epochs, all methods and 3 seeds fit
a few GPU minutes), FDS with (7, 1, 1) segments and large ranges (lr in [0, 1], momentum in
[0, 0.99], weight decay in [0, 1e-2]) from 0 with outer step sizes a tenth of each range, 10 outer
steps; every baseline gets FDS's planned spend in plain-step equivalents priced by a cost model
measured at the start of this run (:mod:`fdshpo.budget`). Each seed's schedules are retrained
from scratch on the full training set over the same horizon and scored on the test set.

``--max-minutes``: the run's wall time is about methods x seeds x budget x plain-step time, all
known after calibration; when that exceeds the limit the horizon is shortened (10% at a time)
and the results say so. Writes ``comparison.{csv,md,json}``, two plots and
``quality.md`` (command, machine, date, table) into ``--out``; ``partial.jsonl`` grows one line
per finished (seed, method) so a run cut short still leaves its results.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from fdshpo.baselines import METHODS, SearchSpace, evaluate_schedule
from fdshpo.budget import calibrate
from fdshpo.compare import compare, fds_planned_cost, to_markdown, write_outputs
from fdshpo.data import load_dataset
from fdshpo.problem import ClassificationProblem

DATA_DIRS = ("/usr/share/datasets/fashion-mnist", "/tmp/fmnist/usr/share/datasets/fashion-mnist")
BOUNDS = {"lr": (0.0, 1.0), "momentum": (0.0, 0.99), "weight_decay": (0.0, 1e-2)}
SEGMENTS = {"lr": 7, "momentum": 1, "weight_decay": 1}
STEP_SIZES = {"lr": 0.1, "momentum": 0.1, "weight_decay": 1e-3}  # a tenth of each range


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"{cpu}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}"
            f", torch {torch.__version__}")
    if device.startswith("cuda"):
        text = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); host {text}"
    return text


def on_device(dataset, device: str):
    """The dataset's tensors moved to ``device`` once (trials then copy nothing to the GPU)."""
    return replace(dataset, **{k: getattr(dataset, k).to(device) for k in (
        "train_images", "train_labels", "test_images", "test_labels")})


def load(args) -> ClassificationProblem:
    if args.smoke:
        dataset = load_dataset("fashion-mnist-sample")
        return ClassificationProblem(dataset, "mlp", batch_size=64, val_fraction=0.1,
                                     device=args.device)
    if args.dataset == "fashion-mnist":
        path = args.data_dir or next((d for d in DATA_DIRS if Path(d).is_dir()), None)
        dataset = load_dataset("fashion-mnist", path=path)
    else:
        dataset = load_dataset(args.dataset, path=args.data_dir)
    return ClassificationProblem(on_device(dataset, args.device), args.network,
                                 batch_size=args.batch_size, val_fraction=0.05,
                                 val_batch_size=1000, device=args.device)


def trial_overhead(problem, horizon: int, cost_model) -> float:
    """Wall time of one real trial over its modelled cost (>= 1): per-trial work the cost
    model does not price (network init, data split, scoring), used only to predict run time."""
    space = SearchSpace(horizon, SEGMENTS, BOUNDS)
    _, ledger = evaluate_schedule(problem, space.constant(0.05, 0.5, 0.0))
    return max(1.0, ledger.seconds / (ledger.cost(cost_model) * cost_model.seconds_per_step))


def fit_horizon(problem, args, requested: int, cost_model, methods) -> tuple[int, str]:
    """The longest horizon <= requested whose predicted wall time fits ``--max-minutes``."""
    if not args.max_minutes:
        return requested, ""
    overhead = trial_overhead(problem, requested, cost_model)
    trials = sum(m not in ("fds", "greedy") for m in methods)

    def predicted(T):
        space = SearchSpace(T, SEGMENTS, BOUNDS)
        budget = fds_planned_cost(problem, space, cost_model, args.outer_steps,
                                  step_sizes=STEP_SIZES)
        retrains = len(methods) * (len(args.fractions) + 1) * T * overhead
        work = (len(methods) - trials + trials * overhead) * budget + retrains
        return work * len(args.seeds) * cost_model.seconds_per_step

    limit = 60 * args.max_minutes
    T = requested
    while T > 7 and predicted(T) > limit:
        T = max(7, int(T * 0.9))
    note = (f"horizon shortened from {requested} to {T} steps to fit --max-minutes "
            f"{args.max_minutes} (predicted {predicted(T) / 60:.1f} min; a trial's wall time is "
            f"{overhead:.2f}x its modelled cost)") if T < requested else ""
    return T, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", help="folder with Fashion-MNIST's idx(.gz) files")
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="a fdshpo.data name (default fashion-mnist)")
    parser.add_argument("--network", default="lenet", help="default lenet")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--outer-steps", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5],
                        help="budget fractions where incumbents are also scored")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (seconds)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.smoke:
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.smoke:
        args.seeds, args.outer_steps, args.fractions = args.seeds[:1], 2, [0.5]
    problem = load(args)
    n_train = len(problem.dataset.train_images) - round(problem.val_fraction *
                                                        len(problem.dataset.train_images))
    per_epoch = n_train // problem.batch_size
    requested = 14 if args.smoke else max(7, int(args.epochs * per_epoch))
    seeded = replace(problem, seed=args.seeds[0])
    cost_model = calibrate(seeded, SearchSpace(requested, SEGMENTS, BOUNDS).schedule(
        {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.0}), steps=3 if args.smoke else 10)
    horizon, note = fit_horizon(problem, args, requested, cost_model, methods)
    space = SearchSpace(horizon, SEGMENTS, BOUNDS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = (out / "partial.jsonl").open("w")
    print(f"{problem.dataset.name}, {problem.network}, batch {problem.batch_size}, horizon "
          f"{horizon} steps ({horizon / per_epoch:.2f} epochs), methods {methods}, seeds "
          f"{args.seeds}; plain step {1e3 * cost_model.seconds_per_step:.2f} ms"
          + (f"; {note}" if note else ""), flush=True)

    def on_row(row):
        print(f"seed {row.seed} {row.method:>8}: test acc {100 * row.test_accuracy:.2f}%, "
              f"val loss {row.val_loss:.4f}, cost {row.cost:.0f}/{row.budget:.0f}, "
              f"{row.seconds:.1f}s", flush=True)
        partial.write(json.dumps(row.to_dict(), default=str) + "\n")
        partial.flush()

    options = {"fds": {"outer_steps": args.outer_steps, "step_sizes": STEP_SIZES},
               "greedy": {"step_sizes": STEP_SIZES}}
    comparison = compare(problem, space, methods, seeds=args.seeds, cost_model=cost_model,
                         budget_fractions=args.fractions + [1.0], method_options=options,
                         on_row=on_row)
    partial.close()
    write_outputs(comparison, out)
    minutes = (time.perf_counter() - started) / 60
    command = "python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = [f"# Quality benchmark: FDS vs baselines at equal budget ({args.device})", "",
              f"- command: `{command}`", f"- machine: {machine(args.device)}",
              f"- date: {when}; wall time {minutes:.1f} min",
              f"- problem: {problem.dataset.name}, {problem.network}, batch "
              f"{problem.batch_size}, horizon {horizon} steps ({horizon / per_epoch:.2f} "
              f"epochs), validation {problem.val_fraction:.0%} of train, retrain on the full "
              f"training set over the same horizon, {len(args.seeds)} seeds",
              f"- FDS: segments {SEGMENTS}, bounds {BOUNDS}, step sizes {STEP_SIZES}, "
              f"{args.outer_steps} outer steps; the budget is its planned spend"]
    if note:
        report.append(f"- {note}")
    report += ["", to_markdown(comparison), "![accuracy vs budget](accuracy_vs_budget.png)",
               "![schedules](schedules.png)", ""]
    (out / "quality.md").write_text("\n".join(report))
    print("\n".join(report))
    return 0 if all(math.isfinite(r.cost) for r in comparison.rows) else 1


if __name__ == "__main__":
    sys.exit(main())

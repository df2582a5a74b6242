"""The quality benchmark: ``fdshpo compare`` on a recorded config, written up as a results file.

    python bench/quality.py CONFIG --out DIR [--record bench/results/NAME] [compare flags]
    python bench/quality.py CONFIG --predict [compare flags]

Runs ``fdshpo compare CONFIG --out DIR --no-store [flags]`` in this process (flags: --methods,
--seeds, --budget-runs, --device, --cost-model; a rerun resumes from DIR/partial.jsonl), then writes
DIR/quality.md: the command, machine, date and wall time, the config verbatim, the table per
budget and the plots. ``--record bench/results/NAME`` also writes NAME.md, NAME-summary.json,
NAME-accuracy.png and NAME-schedules.png (the recorded result; the full comparison.json, with
every trial, stays in DIR).

``--predict`` runs no comparison: it calibrates, runs each method once with its smallest budget
(one trial, one FDS outer step, one full hyperband trial) and retrains one final job, and
predicts the comparison's wall time from the wall/modelled ratios measured in this process.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from fdshpo.cli import main as fdshpo_main


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
    if device != "cpu" and torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); host {text}"
    return text


def compare_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.methods:
        flags += ["--methods", args.methods]
    if args.seeds:
        flags += ["--seeds", *map(str, args.seeds)]
    if args.budget_runs:
        flags += ["--budget-runs", *(f"{n:g}" for n in args.budget_runs)]
    if args.cost_model:
        flags += ["--cost-model", args.cost_model]
    return flags + ["--device", args.device]


def predict(args: argparse.Namespace) -> int:
    """Measure each method's and a retrain's wall/modelled ratio; print the predicted time."""
    from fdshpo.baselines import BUDGET_AWARE, get_method
    from fdshpo.baselines.fds import initial_schedule
    from fdshpo.baselines.minimum import minimum_budget
    from fdshpo.commands.compare import build, request
    from fdshpo.compare.comparison import calibrate_for, method_options
    from fdshpo.config.experiment import load_config
    from fdshpo.config.runtime import device_for, set_threads
    from fdshpo.tune.retrain import retrain_and_test

    config = load_config(args.config)
    methods, seeds, runs = request(args, config)
    set_threads(config)
    device = device_for(config) if args.device == "auto" else args.device
    problem, space, initial, options = build(config, device)
    problem = replace(problem, seed=seeds[0])
    cost_model = calibrate_for(problem, space, initial)
    unit, sps = space.final_steps, cost_model.seconds_per_step
    unit_s = unit * sps
    opts = method_options(methods, initial, options)
    started, cpu = time.perf_counter(), time.process_time()
    retrain = retrain_and_test(problem, initial_schedule(space, initial), unit)
    retrain_ratio = (time.perf_counter() - started) / unit_s
    retrain_cpu = (time.process_time() - cpu) / unit_s
    threads = torch.get_num_threads()
    print(f"plain step {1e3 * sps:.3f} ms on {device} ({threads} threads); final job {unit} "
          f"steps = {unit_s:.1f} s modelled; a retrain took {retrain_ratio:.2f}x that "
          f"(test accuracy {100 * retrain.test_accuracy:.1f}%)")
    wall = cpu_total = 0.0
    for m in methods:
        budget = minimum_budget(m, problem, space, cost_model, opts[m])[0]
        cpu = time.process_time()
        result = get_method(m)(problem, space, budget, cost_model, seed=seeds[0], **opts[m])
        ratio = result.ledger.seconds / (result.cost * sps)
        cpu_ratio = (time.process_time() - cpu) / (result.cost * sps)
        spend = (sum(runs) if m in BUDGET_AWARE else max(runs)) * unit_s * len(seeds)
        wall, cpu_total = wall + spend * ratio, cpu_total + spend * cpu_ratio
        print(f"{m:>10}: wall/modelled {ratio:.2f} (CPU/modelled {cpu_ratio:.2f}) over "
              f"{result.ledger.seconds:.1f} s; its searches: {spend * ratio / 60:.1f} min")
    retrains = len(seeds) * len(methods) * len(runs) * unit_s
    print(f"predicted: searches {wall / 60:.1f} min + retraining at most "
          f"{retrains * retrain_ratio / 60:.1f} min (one per seed, method and budget; identical "
          f"picks are retrained once) = at most {(wall + retrains * retrain_ratio) / 60:.1f} min")
    if threads == 1 and device == "cpu":  # CPU time: the wall time on an otherwise idle core
        print(f"from CPU time (an idle machine, 1 thread): searches {cpu_total / 60:.1f} min + "
              f"retraining at most {retrains * retrain_cpu / 60:.1f} min")
    return 0


def record(out: Path, args: argparse.Namespace, command: str, minutes: float) -> str:
    """The results file's text: provenance, the config, the tables, the plots."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    config_text = Path(args.config).read_text()
    return "\n".join([
        f"# Quality benchmark: {Path(args.config).name}", "",
        f"- command: `{command}`", f"- machine: {machine(args.device)}",
        f"- date: {when}; wall time {minutes:.1f} min (resumed runs count only this process)",
        f"- config ({args.config}):", "", "```yaml", config_text.rstrip(), "```", "",
        (out / "comparison.md").read_text(),
        "![accuracy vs budget](accuracy_vs_budget.png)", "", "![schedules](schedules.png)", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="e.g. configs/bench-cpu-fmnist-mlp.yaml")
    parser.add_argument("--out", help="output folder (comparison files, partial.jsonl)")
    parser.add_argument("--record", help="bench/results/NAME: also write the recorded result")
    parser.add_argument("--predict", action="store_true",
                        help="measure and print the predicted wall time; run nothing long")
    parser.add_argument("--methods")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--budget-runs", type=float, nargs="+")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cost-model", metavar="FILE",
                        help="charge an earlier comparison's prices (e.g. a recorded "
                             "bench/results/NAME-summary.json) instead of measuring them")
    args = parser.parse_args(argv)
    if args.predict:
        return predict(args)
    if not args.out:
        parser.error("--out is required unless --predict")
    started = time.perf_counter()
    out = Path(args.out)
    rc = fdshpo_main(["compare", args.config, "--out", str(out), "--no-store",
                      *compare_flags(args)])
    if rc:
        return rc
    minutes = (time.perf_counter() - started) / 60
    command = "python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = record(out, args, command, minutes)
    (out / "quality.md").write_text(text)
    if args.record:
        name = Path(args.record)
        name.parent.mkdir(parents=True, exist_ok=True)
        stem = name.name
        name.with_suffix(".md").write_text(
            text.replace("](accuracy_vs_budget.png)", f"]({stem}-accuracy.png)")
                .replace("](schedules.png)", f"]({stem}-schedules.png)"))
        data = json.loads((out / "comparison.json").read_text())
        summary = {k: data[k] for k in ("space", "cost_model", "budget_runs", "settings",
                                        "summary")}
        name.parent.joinpath(f"{stem}-summary.json").write_text(json.dumps(
            {"command": command, "machine": machine(args.device), **summary}, indent=1))
        shutil.copy(out / "accuracy_vs_budget.png", name.parent / f"{stem}-accuracy.png")
        shutil.copy(out / "schedules.png", name.parent / f"{stem}-schedules.png")
    print(f"wrote {out / 'quality.md'}" + (f" and {args.record}.*" if args.record else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well the comparison's one-off cost model prices an FDS outer step, and how much it varies.

    python bench/calibration.py [CONFIG] [--rounds 5] [--steps 10 40] [--out FILE.json]

``fdshpo compare`` charges every method in plain-step equivalents of one :class:`CostModel`,
measured once at its start by :func:`fdshpo.baselines.budget.calibrate` (``steps`` timed steps of
each
kind, the median of 3 after a warm-up). FDS's budget, so which outer step it can afford at small
N, follows that price. Here, in one process and for each round:

- ``truth``: the wall time of one real FDS outer step (the config's schedule, learned values,
  engine and horizon T, with its validation gradient) over the wall time of T plain SGD steps on
  the same batches, measured back to back: the price the model should give;
- for each ``--steps`` S: a fresh ``calibrate(problem, schedule, steps=S)`` and the outer step's
  price under it, ``fds_outer_work(...).cost(model) / T``, and the calibration's own seconds.

Reported per S: the mean and coefficient of variation of the modelled price over rounds, and
the mean of modelled / truth (1.0: FDS charged what it costs, relative to a plain step).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

DEFAULT_CONFIG = "configs/bench-cpu-fmnist-mlp.yaml"


def main() -> int:
    from fdshpo.baselines.budget import calibrate
    from fdshpo.baselines.fds import fds_outer_work, initial_schedule
    from fdshpo.commands.compare import build
    from fdshpo.config.experiment import load_config
    from fdshpo.config.runtime import set_threads
    from fdshpo.engines.inner import train
    from fdshpo.tune.sign import SignOptimizer
    from fdshpo.tune.step import OuterStep

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    config = load_config(args.config)
    set_threads(config)
    problem, space, initial, options = build(config, "cpu")
    fds = options["fds"]
    schedule = initial_schedule(space, initial)
    optimizer = SignOptimizer(fds["step_sizes"], fds["decay"], fds["tol"],
                              fds["multiplicative"], fds["backtrack"])
    engine = "forward" if fds["engine"] == "auto" else fds["engine"]
    outer = OuterStep(optimizer, 1, engine_options={"engine": engine})
    state = outer.init(schedule)
    T = schedule.num_steps
    task = problem(0, 0, T)
    batches = list(task.train_batches)
    model = problem.model(0)

    def truth() -> float:
        started = time.perf_counter()
        train(model, nn.functional.cross_entropy, batches, schedule)
        plain_s = time.perf_counter() - started
        started = time.perf_counter()
        outer.step(problem, state)
        return (time.perf_counter() - started) / plain_s

    outer.step(problem, state)  # warm-up: first-call costs are not the steady state
    rounds = []
    for r in range(args.rounds):
        row = {"truth": truth()}
        for s in args.steps:
            started = time.perf_counter()
            model_s = calibrate(problem, schedule, optimizer.learn, steps=s)
            seconds = time.perf_counter() - started
            work, _ = fds_outer_work(problem, schedule, optimizer.learn, model_s, engine)
            row[str(s)] = {"price": work.cost(model_s) / T, "calibration_s": seconds}
        rounds.append(row)
        print(f"round {r + 1}: truth {row['truth']:.2f}  " + "  ".join(
            f"steps={s}: {row[str(s)]['price']:.2f} ({row[str(s)]['calibration_s']:.1f}s)"
            for s in args.steps), flush=True)
    summary = {}
    for s in args.steps:
        prices = [row[str(s)]["price"] for row in rounds]
        mean = statistics.fmean(prices)
        summary[str(s)] = {
            "price_mean": mean, "price_cv": statistics.stdev(prices) / mean,
            "model_over_truth": statistics.fmean(row[str(s)]["price"] / row["truth"]
                                                 for row in rounds),
            "calibration_s": statistics.fmean(row[str(s)]["calibration_s"] for row in rounds)}
        print(f"steps={s}: price {mean:.2f} plain steps per FDS step, CV "
              f"{summary[str(s)]['price_cv']:.1%}, modelled/truth "
              f"{summary[str(s)]['model_over_truth']:.2f}, calibration "
              f"{summary[str(s)]['calibration_s']:.1f}s")
    truths = [row["truth"] for row in rounds]
    print(f"truth: {statistics.fmean(truths):.2f} (CV "
          f"{statistics.stdev(truths) / statistics.fmean(truths):.1%})")
    if args.out:
        args.out.write_text(json.dumps({
            "config": args.config, "engine": engine, "horizon": T,
            "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{torch.get_num_threads()} torch threads",
            "rounds": rounds, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Local pipeline overhead: wall time of the same experiment three ways, in one process.

    python bench/pipeline.py [--config configs/demo.yaml] [--out bench/results/pipeline.md]

1. ``library``: ``fdshpo.tune.loop.tune`` + two ``retrain_and_test`` (learned and initial schedule),
   in this process: the baseline (the same computation the pipeline does);
2. ``inline``: ``fdshpo run --runner inline``'s steps (components' step functions, store
   records, dataset file), in this process;
3. ``kfp``: the KFP pipeline through ``kfp.local.SubprocessRunner`` (one Python process per
   component: ``import torch``, dataset load, store I/O each time).

Reports each one's wall time, its ratio to the library, and the pipeline's overhead per
component process ((kfp - library) / number of component runs). All three use the same torch
thread count (``FDSHPO_TORCH_THREADS``, default: all cores / replicas) and learn the same
schedule (checked).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--out", default=None, help="append a Markdown result here")
    args = parser.parse_args(argv)

    from fdshpo.components.common import load_dataset, problem_for
    from fdshpo.config.experiment import StoreConfig, load_config
    from fdshpo.pipelines.local import local_threads, run_inline, run_kfp_local
    from fdshpo.tune.loop import tune
    from fdshpo.tune.retrain import retrain_and_test

    config = load_config(args.config)
    threads = local_threads(config)
    os.environ["FDSHPO_TORCH_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    times, schedules = {}, {}
    with tempfile.TemporaryDirectory(prefix="fdshpo-bench-") as tmp:
        config = dataclasses.replace(config, store=StoreConfig(uri=str(Path(tmp) / "store")))

        started = time.perf_counter()
        problem = problem_for(config, load_dataset(config))
        result = tune(problem, config.initial_schedule(), config.optimizer(),
                      loss_fn=nn.functional.cross_entropy, outer_steps=config.outer.max_steps,
                      replicas=config.outer.replicas)
        retrain_and_test(problem, result.schedule, config.retrain.horizon, config.retrain.seed)
        retrain_and_test(problem, config.initial_schedule(), config.retrain.horizon,
                         config.retrain.seed)
        times["library"] = time.perf_counter() - started
        schedules["library"] = result.schedule
        steps = len(result.history)

        summary = run_inline(config, "bench-inline", progress=lambda line: None)
        times["inline"], schedules["inline"] = summary.seconds, summary.schedule
        summary = run_kfp_local(config, "bench-kfp")
        times["kfp"], schedules["kfp"] = summary.seconds, summary.schedule

    same = all(schedules[k] == schedules["library"] for k in schedules)
    # prepare + per outer step (replicas inner + outer) + a stop pass-through when early +
    # retrain + report
    components = (1 + steps * (config.outer.replicas + 1)
                  + (1 if steps < config.outer.max_steps else 0) + 2)
    per_component = (times["kfp"] - times["library"]) / components
    lines = [
        f"## {date.today().isoformat()}: `python bench/pipeline.py --config {args.config}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores "
        f"({platform.processor() or 'unknown CPU'}), Python {platform.python_version()}, "
        f"torch {torch.__version__}, {threads} torch thread(s) per process; shared machine "
        f"(load average {os.getloadavg()[0]:.1f} at the end).", "",
        f"Experiment {config.experiment}: {config.network} on {config.data.dataset}, horizon "
        f"{config.schedule.horizon}, {steps} outer step(s) x {config.outer.replicas} "
        f"replica(s), retrain {config.retrain.horizon or config.schedule.horizon} steps; "
        f"same learned schedule in all three: {same}.", "",
        "| runner | wall s | ratio to library |", "|---|---|---|",
        *(f"| {k} | {v:.1f} | {v / times['library']:.2f} |" for k, v in times.items()), "",
        f"kfp.local: {components} component processes, overhead "
        f"{per_component:.2f} s per component "
        f"({(times['kfp'] / times['library'] - 1):.0%} over the library in total).", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    if not same:
        sys.exit("the runners learned different schedules")


if __name__ == "__main__":
    main()

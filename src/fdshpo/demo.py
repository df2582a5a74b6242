"""The demo experiment as a plain library call (``python -m fdshpo.demo``).

Runs ``configs/demo.yaml`` (the experiment ``make demo`` runs as a local KFP pipeline) with
:func:`fdshpo.tune.loop.tune` in this process, without a store: learns the schedule, retrains from
scratch with the initial and the learned schedules, and prints both test accuracies.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .report.text import accuracy_text
from .schedule import Schedule

#: The demo config in a source checkout (``make demo`` runs the same file).
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def format_schedule(schedule: Schedule) -> str:
    return "\n".join(f"  {name:>12}: " + ", ".join(f"{v:.4g}" for v in values.tolist())
                     for name, values in schedule.values.items())


def format_evaluation(evaluation) -> str:
    """``"81.20%"``, or where the retraining diverged, or that it collapsed."""
    if evaluation.diverged is not None:
        return f"diverged at step {evaluation.diverged['step']}"
    return accuracy_text(evaluation.test_accuracy, evaluation.collapsed)


def main(argv: list[str] | None = None) -> None:
    from fdshpo.components.common import load_dataset, problem_for

    from .config.experiment import load_config
    from .tune.console import ConsoleProgress
    from .tune.loop import tune
    from .tune.retrain import retrain_and_evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG),
                        help=f"experiment YAML (default {DEMO_CONFIG})")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    started = time.perf_counter()
    problem = problem_for(config, load_dataset(config))
    initial = config.initial_schedule()
    print(f"fdshpo demo: {config.network} on {config.data.dataset} "
          f"({len(problem.dataset.train_images)} train / {len(problem.dataset.test_images)} "
          f"test), horizon {initial.num_steps} steps, up to {config.outer.max_steps} outer steps")
    print("initial schedule:\n" + format_schedule(initial))
    with ConsoleProgress() as progress:
        result = tune(problem, initial, config.optimizer(), outer_steps=config.outer.max_steps,
                      replicas=config.outer.replicas, on_diverged=config.outer.on_diverged,
                      select=config.outer.select, progress=progress)
    print(f"learned schedule ({config.outer.select} of {len(result.history)} outer steps"
          + (", converged" if result.converged else "") + "):\n"
          + format_schedule(result.schedule))
    r = config.retrain
    before = retrain_and_evaluate(problem, initial, r.horizon, r.seed, r.on_diverged)
    after = retrain_and_evaluate(problem, result.schedule, r.horizon, r.seed, r.on_diverged)
    print(f"test accuracy after retraining: initial schedule {format_evaluation(before)}, "
          f"learned schedule {format_evaluation(after)}")
    print(f"done in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()

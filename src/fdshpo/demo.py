"""A small end-to-end FDS run on the bundled Fashion-MNIST sample (``make demo``).

Learns a (5, 1, 1)-segment schedule for an MLP over a 200-step horizon from a deliberately poor
constant schedule, then retrains from scratch with the initial and the learned schedules and
prints both test accuracies. About half a minute on 2 idle CPU cores (12-21 s measured).
"""

from __future__ import annotations

import argparse
import time

import torch

from .data.sample import load_fashion_mnist_sample
from .evaluate import retrain_and_test
from .outer import SignOptimizer
from .problem import ClassificationProblem
from .schedule import Schedule
from .tune import tune


def format_schedule(schedule: Schedule) -> str:
    return "\n".join(f"  {name:>12}: " + ", ".join(f"{v:.4g}" for v in values.tolist())
                     for name, values in schedule.values.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=200, help="inner steps (default 200)")
    parser.add_argument("--outer-steps", type=int, default=6, help="outer steps (default 6)")
    parser.add_argument("--network", default="mlp", help="mlp or lenet (default mlp)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    problem = ClassificationProblem(load_fashion_mnist_sample(), args.network, batch_size=128,
                                    val_fraction=0.1, seed=args.seed)
    initial = Schedule.constant(args.horizon, lr=0.01, momentum=0.0, weight_decay=0.0,
                                segments={"lr": 5, "momentum": 1, "weight_decay": 1},
                                bounds={"lr": (0.0, 1.0), "weight_decay": (0.0, 1e-2)})
    optimizer = SignOptimizer({"lr": 0.1, "momentum": 0.3, "weight_decay": 3e-4})
    print(f"fdshpo demo: {args.network} on the bundled Fashion-MNIST sample "
          f"({len(problem.dataset.train_images)} train / {len(problem.dataset.test_images)} test), "
          f"horizon {args.horizon} steps, up to {args.outer_steps} outer steps")
    print("initial schedule:\n" + format_schedule(initial))
    result = tune(problem, initial, optimizer, outer_steps=args.outer_steps, progress=True)
    print("learned schedule" + (" (converged)" if result.converged else "") + ":\n"
          + format_schedule(result.schedule))
    before = retrain_and_test(problem, initial)
    after = retrain_and_test(problem, result.schedule)
    print(f"test accuracy after retraining: initial schedule {before.test_accuracy:.2%}, "
          f"learned schedule {after.test_accuracy:.2%}")
    print(f"done in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()

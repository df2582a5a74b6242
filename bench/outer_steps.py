"""FDS's test accuracy against the outer steps it took: do the first outer steps travel?

    python bench/outer_steps.py CONFIG --out FILE.md [--grow 1 2] [--seeds 0 1]
                                [--outer-steps 6] [--continue-to off|final]

For each ``grow`` (:class:`fdshpo.tune.sign.SignOptimizer`'s step-size growth while a
hypergradient keeps its sign; 1 is the paper's loop) and seed, runs FDS with the config's other
settings for ``--outer-steps`` outer steps (no budget: every step is taken), then retrains the
best-validated schedule after each outer step k = 0 (the start) .. K over the config's final
horizon and scores it on the test set, exactly as ``fdshpo compare`` scores a pick (identical
picks are retrained once). The table: mean test accuracy per k, and how often the pick after k
steps is still the start.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from fdshpo.baselines.fds import initial_schedule
from fdshpo.commands.compare import build
from fdshpo.config.experiment import load_config
from fdshpo.config.runtime import set_threads
from fdshpo.tune.retrain import retrain_and_test
from fdshpo.tune.sign import SignOptimizer
from fdshpo.tune.state import TuneState
from fdshpo.tune.step import OuterStep, select_schedule


def curve(problem, space, initial, fds: dict, grow: float, steps: int, continue_to):
    """[(outer steps taken, best-validated schedule, its val loss)] for k = 0 .. steps."""
    optimizer = SignOptimizer(fds["step_sizes"], fds["decay"], fds["tol"], fds["multiplicative"],
                              fds["backtrack"], grow)
    outer = OuterStep(optimizer, fds["replicas"], continue_to=continue_to,
                      engine_options={"engine": fds["engine"]})
    start = initial_schedule(space, initial)
    state: TuneState = outer.init(start)
    picks = [(0, start, None)]
    while state.next_outer_step < steps and not state.converged:
        state = outer.step(problem, state)
        best = state.best_record()
        picks.append((state.next_outer_step, select_schedule(state, fds["select"]),
                      None if best is None else best.val_loss))
    return picks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True, help="the results file (markdown)")
    parser.add_argument("--grow", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--outer-steps", type=int, default=6)
    parser.add_argument("--continue-to", default="off", help="off, final or a number of steps")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    config = load_config(args.config)
    set_threads(config)
    problem, space, initial, options = build(config, "cpu")
    fds = options["fds"]
    continue_to = (None if args.continue_to == "off" else space.final_steps
                   if args.continue_to == "final" else int(args.continue_to))
    scores: dict = {}

    def score(schedule, seed):
        key = (schedule.to_json(), seed)
        if key not in scores:
            ev = retrain_and_test(replace(problem, seed=seed), schedule, space.final_steps)
            scores[key] = float("nan") if ev.test_accuracy is None else 100 * ev.test_accuracy
        return scores[key]

    rows = {}
    for grow in args.grow:
        for seed in args.seeds:
            picks = curve(replace(problem, seed=seed), space, initial, fds, grow,
                          args.outer_steps, continue_to)
            start = picks[0][1]
            for k, schedule, val_loss in picks:
                rows.setdefault((grow, k), []).append(
                    (score(schedule, seed), schedule == start, val_loss))
            print(f"grow {grow:g}, seed {seed}: " + ", ".join(
                f"k={k} {score(s, seed):.2f}" for k, s, _ in picks), flush=True)
    lines = ["| grow | outer steps taken | test accuracy (mean) | per seed | pick is the start |",
             "|---|---|---|---|---|"]
    for (grow, k), got in sorted(rows.items()):
        accs = [a for a, _, _ in got]
        lines.append(f"| {grow:g} | {k} | {statistics.fmean(accs):.2f} | "
                     + " / ".join(f"{a:.2f}" for a in accs)
                     + f" | {sum(s for _, s, _ in got)}/{len(got)} |")
    command = "python bench/outer_steps.py " + " ".join(sys.argv[1:] if argv is None else argv)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    minutes = (time.perf_counter() - started) / 60
    text = "\n".join([
        f"# FDS: test accuracy against outer steps taken ({args.config})", "",
        f"- command: `{command}`", f"- date: {when}; wall time {minutes:.1f} min",
        f"- final job: {space.final_steps} steps; search horizon {space.num_steps}; "
        f"continue_to: {args.continue_to}; every other outer setting the config's", "",
        "The best-validated schedule after k outer steps, retrained over the final horizon "
        "(k = 0: the start):", "", *lines, ""])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``fdshpo compare CONFIG``: which method gives the best final model for N runs' compute?

The config gives the problem (data, network and its initialisation, batch sizes, validation
fraction, augmentation, seed), the search space (``schedule``: horizon, segments, initial values,
bounds, which must be finite), FDS's settings (``outer``), the final job (``retrain.horizon``,
default the schedule's horizon) and the comparison's own settings (``compare``: methods, seeds,
budget runs; the flags below override them). Every method gets a budget of N runs of the final
job for each N, starts from ``schedule.initial`` and has its pick retrained over the final
horizon and tested (:mod:`fdshpo.compare.comparison`).

Writes comparison.{csv,md,json} and two plots to ``--out`` (default
``./fdshpo-compare/<experiment>``) and, unless ``--no-store``, to the config's store under
``experiments/<experiment>/comparisons/<name>/``. ``--out``'s ``partial.jsonl`` records every
finished (seed, method): rerunning the same command resumes from it.

Every method is charged by one cost model, measured at the start on this machine; FDS's price
per step varies by about 15% between measurements on a shared machine, which moves the outer
step FDS can afford at small budgets. ``--cost-model FILE`` charges the prices of an earlier
comparison instead (its comparison.json, partial.jsonl or recorded *-summary.json), so a rerun
of a recorded result makes the same choices.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from .run import add_engine_argument, with_engine


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="FDS vs baselines at budgets of N final-job runs; tables and plots",
        description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML (e.g. configs/bench-cpu-fmnist-mlp.yaml)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated (default: compare.methods, else "
                             "fds,random,hd,constant,step,cosine,linear,hyperband); also known: "
                             "tpe, greedy")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds (default: compare.seeds, else the config's seed)")
    parser.add_argument("--budget-runs", type=float, nargs="+", default=None, metavar="N",
                        help="budgets in runs of the final job (default: compare.budget_runs, "
                             "else 2 4 8 16)")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, or auto: cuda when the config asks for GPUs "
                             "(resources.gpus) and one is visible (default auto)")
    parser.add_argument("--out", default=None, help="local output folder")
    parser.add_argument("--name", default=None, help="comparison name (default: a timestamp)")
    parser.add_argument("--no-store", action="store_true", help="write only to --out")
    parser.add_argument("--cost-model", metavar="FILE", default=None,
                        help="charge the prices of an earlier comparison (its comparison.json, "
                             "partial.jsonl or a recorded *-summary.json) instead of measuring "
                             "them now")
    add_engine_argument(parser)
    parser.set_defaults(func=run)


def build(config, device: str):
    """(problem, space, initial values, method options) from an ExperimentConfig."""
    from ..baselines import SearchSpace
    from ..data import load_dataset
    from ..data.registry import CONFIG_SETTINGS
    from ..errors import UserError

    problem = config.problem(load_dataset(config.data.dataset, root=config.data.root,
                                         settings=CONFIG_SETTINGS), device)
    s = config.schedule
    try:
        space = SearchSpace(s.horizon, s.segments, {n: tuple(b) for n, b in s.bounds.items()
                                                    if b is not None},
                            shapes=s.shapes, final_steps=config.retrain.horizon)
    except (ValueError, TypeError) as exc:
        raise UserError(f"schedule.bounds: {exc}; compare needs finite bounds for lr, momentum "
                        "and weight_decay, e.g. bounds: {lr: [0, 1], momentum: [0, 0.99], "
                        "weight_decay: [0, 0.01]}") from None
    o = config.outer
    fds = {"outer_steps": o.max_steps, "replicas": o.replicas, "step_sizes": o.step_sizes,
           "decay": o.decay, "tol": o.tol, "multiplicative": o.multiplicative,
           "backtrack": o.backtrack, "select": o.select, "engine": config.engine,
           "grow": o.grow, "continue_to": config.continue_horizon}
    greedy = {k: fds[k] for k in ("step_sizes", "decay", "tol", "engine")}
    return problem, space, dict(s.initial), {"fds": fds, "greedy": greedy}


def request(args: argparse.Namespace, config) -> tuple[list[str], list[int], list[float]]:
    """(methods, seeds, budget runs): the flags, else the config's ``compare`` section, else the
    defaults; validated with messages naming the flag or key."""
    from ..compare.comparison import (
        BUDGET_RUNS,
        DEFAULT_METHODS,
        check_budget_runs,
        check_methods,
        check_seeds,
    )
    from ..errors import UserError

    c = config.compare
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods
               else list(c.methods or DEFAULT_METHODS))
    seeds = list(args.seeds or c.seeds or [config.seed])
    runs = list(args.budget_runs or c.budget_runs or BUDGET_RUNS)
    for check, value, flag, key in ((check_methods, methods, args.methods, "methods"),
                                     (check_seeds, seeds, args.seeds, "seeds"),
                                     (check_budget_runs, runs, args.budget_runs, "budget_runs")):
        try:
            check(value)
        except ValueError as exc:
            where = f"--{key.replace('_', '-')}" if flag else f"compare.{key}"
            raise UserError(f"{where}: {exc}") from None
    return methods, seeds, runs


def run(args: argparse.Namespace) -> int:
    from ..compare.comparison import (
        calibrate_for,
        check_minimums,
        compare,
        method_options,
        predicted_seconds,
        settings,
    )
    from ..compare.outputs import Journal, read_cost_model, to_markdown, write_outputs
    from ..config.experiment import load_config
    from ..config.runtime import device_for, set_threads
    from ..errors import UserError

    config = with_engine(load_config(args.config), args)
    methods, seeds, runs = request(args, config)
    device = device_for(config) if args.device == "auto" else args.device
    threads = set_threads(config)
    problem, space, initial, options = build(config, device)
    out = Path(args.out or Path("fdshpo-compare") / config.experiment)
    name = args.name or time.strftime("%Y%m%d-%H%M%S")
    try:
        journal = Journal(out / "partial.jsonl",
                          settings(problem, space, sorted(set(runs)), initial, options))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    given = None
    if args.cost_model:
        try:
            given = read_cost_model(args.cost_model)
        except ValueError as exc:
            raise UserError(f"--cost-model: {exc}") from None
        if journal.cost_model is not None and journal.cost_model != given:
            raise UserError(f"--cost-model: {out / 'partial.jsonl'} was started with other "
                            f"prices; drop --cost-model to resume it, or choose another --out")
    cost_model = journal.cost_model or given or calibrate_for(
        replace(problem, seed=seeds[0]), space, initial)
    try:
        check_minimums(problem, space, methods, runs, cost_model,
                       method_options(methods, initial, options))
    except ValueError as exc:
        raise UserError(f"--budget-runs / compare.budget_runs: {exc}") from None
    journal.start(cost_model)
    done = [r for r in journal.runs if r.method in methods and r.seed in seeds]
    left = len(methods) * len(seeds) - len(done)
    predicted = predicted_seconds(space, cost_model, methods, seeds, runs)
    print(f"{problem.dataset.name}, {problem.network}, search horizon {space.num_steps} steps, "
          f"final job {space.final_steps} steps; plain step "
          f"{1e3 * cost_model.seconds_per_step:.2f} ms on {device} ({threads} threads)"
          + (f" (prices from {args.cost_model})" if given is not None else "")
          + f"; {len(methods)} methods x {len(seeds)} seeds, budgets {runs} runs; modelled time: "
          f"searches {predicted['search'] / 60:.1f} min + retraining at most "
          f"{predicted['retrain_at_most'] / 60:.1f} min"
          + (f"; resuming: {len(done)} finished, {left} to run" if done else ""), flush=True)
    if cost_model.note:
        print(f"prices: {cost_model.note}", flush=True)

    def progress(run):
        accs = ", ".join(f"N={r.budget_runs:g}: {100 * r.test_accuracy:.2f}%"
                         + (" (retrain diverged)" if r.retrain_diverged else "")
                         + (" (retrain collapsed)" if r.retrain_collapsed else "")
                         for r in run.rows)
        seconds = sum(s["seconds"] for s in run.searches)
        print(f"seed {run.seed} {run.method:>9}: {accs}; search {seconds:.1f}s", flush=True)
        journal.append(run)

    comparison = compare(problem, space, methods, seeds=seeds, budget_runs=runs,
                         initial=initial, cost_model=cost_model, options=options, done=done,
                         on_run=progress)
    store, prefix = None, None
    if not args.no_store:
        from ..store import open_store
        from ..store.layout import experiment_prefix

        store = open_store(config.store.uri, config.store.endpoint)
        prefix = f"{experiment_prefix(config.experiment)}/comparisons/{name}"
    write_outputs(comparison, out, store=store, prefix=prefix or "comparison")
    print(to_markdown(comparison))
    warning = comparison.price_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"wrote {out}" + (f" and {config.store.uri}/{prefix}" if store is not None else ""))
    return 0

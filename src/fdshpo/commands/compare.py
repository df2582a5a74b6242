"""``fdshpo compare CONFIG --methods fds,random,tpe,hd,cosine``: FDS vs baselines at equal budget.

The config gives the problem (data, network, batch size, validation fraction, seed), the search
space (horizon, segments, bounds: they must be finite), FDS's settings (initial values, step
sizes, decay, tol, ``outer.max_steps``, replicas) and the retraining horizon. Every method gets
FDS's planned spend unless ``--budget`` is given. Writes comparison.{csv,md,json} and two plots
to ``--out`` (default ``./fdshpo-compare/<experiment>``) and, unless ``--no-store``, to the
config's store under ``experiments/<experiment>/comparisons/<name>/``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="run FDS and baselines at equal budget; write a table and plots",
        description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML (see configs/demo.yaml)")
    parser.add_argument("--methods", default="fds,random,tpe,hd,cosine",
                        help="comma-separated; known: fds, greedy, hd, random, tpe, constant, "
                             "step, cosine, linear (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds (default: the config's seed)")
    parser.add_argument("--budget", type=float, default=None,
                        help="plain-SGD-step equivalents per method and seed "
                             "(default: FDS's planned spend)")
    parser.add_argument("--fractions", type=float, nargs="*", default=[0.25, 0.5],
                        help="budget fractions where incumbents are also scored")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", default=None, help="local output folder")
    parser.add_argument("--name", default=None, help="comparison name (default: a timestamp)")
    parser.add_argument("--no-store", action="store_true", help="write only to --out")
    parser.set_defaults(func=run)


def build(config, device: str):
    """(problem, space, method options, retrain steps) from an ExperimentConfig."""
    from ..baselines import SearchSpace
    from ..data import load_dataset
    from ..errors import UserError
    from ..problem import ClassificationProblem

    dataset = load_dataset(config.data.dataset, root=config.data.root)
    problem = ClassificationProblem(dataset, config.network, batch_size=config.data.batch_size,
                                    val_fraction=config.data.val_fraction, seed=config.seed,
                                    device=device)
    s = config.schedule
    try:
        space = SearchSpace(s.horizon, s.segments, {n: tuple(b) for n, b in s.bounds.items()
                                                    if b is not None})
    except (ValueError, TypeError) as exc:
        raise UserError(f"schedule.bounds: {exc}; compare needs finite bounds for lr, momentum "
                        "and weight_decay, e.g. bounds: {lr: [0, 1], momentum: [0, 0.99], "
                        "weight_decay: [0, 0.01]}") from None
    o = config.outer
    fds = {"outer_steps": o.max_steps, "replicas": o.replicas, "step_sizes": o.step_sizes,
           "init": s.initial, "decay": o.decay, "tol": o.tol}
    greedy = {k: fds[k] for k in ("step_sizes", "init", "decay", "tol")}
    return problem, space, {"fds": fds, "greedy": greedy}, config.retrain.horizon


def run(args: argparse.Namespace) -> int:
    from ..compare import compare, to_markdown, write_outputs
    from ..config import load_config

    config = load_config(args.config)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    problem, space, options, retrain_steps = build(config, args.device)
    seeds = args.seeds if args.seeds else [config.seed]
    name = args.name or time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path("fdshpo-compare") / config.experiment)

    def progress(row):
        print(f"seed {row.seed} {row.method:>8}: test accuracy {100 * row.test_accuracy:.2f}%, "
              f"cost {row.cost:.0f} of {row.budget:.0f} plain steps, {row.seconds:.1f}s",
              flush=True)

    comparison = compare(replace(problem, seed=seeds[0]), space, methods, seeds=seeds,
                         budget=args.budget, retrain_steps=retrain_steps,
                         budget_fractions=list(args.fractions) + [1.0], method_options=options,
                         on_row=progress)
    store, prefix = None, None
    if not args.no_store:
        from ..store import open_store
        from ..store.layout import experiment_prefix

        store = open_store(config.store.uri, config.store.endpoint)
        prefix = f"{experiment_prefix(config.experiment)}/comparisons/{name}"
    write_outputs(comparison, out, store=store, prefix=prefix or "comparison")
    print(to_markdown(comparison))
    print(f"wrote {out}" + (f" and {config.store.uri}/{prefix}" if store is not None else ""))
    return 0

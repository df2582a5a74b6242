"""``fdshpo run CONFIG``: run an experiment on this machine and print what it learned.

``--runner kfp`` (default) runs the KFP pipeline with ``kfp.local.SubprocessRunner``;
``--runner inline`` runs the same component steps in this process, without KFP.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

#: Exit status of ``fdshpo run`` when retraining with the learned schedule diverged.
RETRAIN_DIVERGED = 3
#: Exit status of ``fdshpo run`` when the learned schedule's retraining ended about as good as
#: chance (finite loss; :func:`fdshpo.tune.retrain.is_collapsed`).
RETRAIN_COLLAPSED = 4


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    """--engine: overrides the config's ``engine`` (run, compile, submit, schedule, compare)."""
    parser.add_argument("--engine", choices=("auto", "forward", "reverse"),
                        help="hypergradient engine; overrides the config's engine (default "
                             "there: auto, the cheaper that fits)")


def with_engine(config, args: argparse.Namespace):
    """``config`` with ``--engine`` applied (when given)."""
    engine = getattr(args, "engine", None)
    return dataclasses.replace(config, engine=engine) if engine else config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG, --store, --pipeline and --engine: shared by run, compile, submit and schedule."""
    parser.add_argument("config", metavar="CONFIG", help="experiment YAML (see configs/)")
    parser.add_argument("--store", metavar="URI",
                        help="artifact store (path, file://... or s3://bucket/prefix); "
                             "overrides the config's store.uri")
    parser.add_argument("--pipeline", choices=("fds", "retune"), default="fds",
                        help="fds (default) or retune (warm start from the experiment's "
                             "latest schedule, no caching)")
    add_engine_argument(parser)


def load(args: argparse.Namespace):
    """The validated config with ``--store`` and ``--engine`` applied."""
    from ..config.experiment import check_store_uri, load_config

    config = load_config(args.config)
    if getattr(args, "store", None):
        config = dataclasses.replace(config, store=dataclasses.replace(
            config.store, uri=check_store_uri(args.store, "--store")))
    return with_engine(config, args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run an experiment's pipeline on this machine")
    add_config_arguments(parser)
    parser.add_argument("--runner", choices=("kfp", "inline"), default="kfp",
                        help="kfp: the pipeline with kfp.local (default); inline: the same "
                             "steps in this process, for debugging")
    parser.add_argument("--run-id", help="run id in the store (default: a new one); an "
                                         "unfinished run with this id resumes")
    parser.add_argument("--kfp-root", metavar="DIR",
                        help="keep kfp.local's component outputs here (default: a temporary "
                             "folder, removed after the run)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show kfp.local's per-task detail (each task's outputs, "
                             "the executor's bookkeeping, tracebacks); by default they go only "
                             "to the run's log, fdshpo-run.log in the --kfp-root folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 after a finished run, 1 when a pipeline task failed (its name, error line and
    log path are printed; --verbose or FDSHPO_KFP_VERBOSE=1 raises with the full traceback
    instead), 3 when
    the learned schedule's retraining diverged, 4 when it collapsed to about chance."""
    import os

    from fdshpo.pipelines.local import TaskFailed, run_inline, run_kfp_local
    from fdshpo.tracking.recorder import new_run_id

    from ..demo import format_schedule
    from ..report.text import accuracy_text, selection_text, value_text

    config = load(args)
    run_id = args.run_id or new_run_id()
    print(f"fdshpo run: experiment {config.experiment}, run {run_id}, {args.runner} runner, "
          f"{args.pipeline} pipeline, store {config.store.uri}", flush=True)
    print(f"  {config.network} on {config.data.dataset}, horizon {config.schedule.horizon}, "
          f"up to {config.outer.max_steps} outer steps x {config.outer.replicas} replica(s), "
          f"engine {config.engine}", flush=True)
    retune = args.pipeline == "retune"
    if args.runner == "inline":
        summary = run_inline(config, run_id, retune=retune,
                             progress=lambda line: print("  " + line, flush=True))
    else:
        try:
            summary = run_kfp_local(config, run_id, retune=retune, pipeline_root=args.kfp_root,
                                    verbose=args.verbose or None)
        except TaskFailed as exc:
            if args.verbose or os.environ.get("FDSHPO_KFP_VERBOSE"):
                raise
            print(f"fdshpo: error: {exc}", file=sys.stderr)
            return 1
    m = summary.metrics
    print(f"learned schedule after {summary.outer_steps} outer step(s)"
          + (" (converged)" if summary.converged else "")
          + f", outer.select {config.outer.select}: val loss "
          + selection_text(summary.record) + ", engine "
          + value_text(summary.record.get("engine"), missing="not recorded") + ":\n"
          + format_schedule(summary.schedule))
    initial = ("diverged" if m["initial_test_accuracy"] is None
               else f"{m['initial_test_accuracy']:.2%}")
    if m.get("retrain_backoff"):
        print("retraining with the learned schedule diverged; retrained with the learning rates "
              f"x{m['retrain_backoff']['lr_scale']} (retrain.on_diverged: halve_lr)")
    if not m.get("retrain_diverged"):
        learned = accuracy_text(m["test_accuracy"], m.get("retrain_collapsed", False))
        print(f"test accuracy after retraining: learned {learned}, initial {initial}")
    print(f"run {config.experiment}/{summary.run_id} in {summary.store}")
    print(f"report: {summary.report}")
    print(f"done in {summary.seconds:.0f}s")
    sys.stdout.flush()
    if m.get("retrain_diverged"):
        d = m["retrain_divergence"]
        values = ", ".join(f"{k}={v:.4g}" for k, v in (d["hyperparameters"] or {}).items())
        print(f"fdshpo run: retraining with the learned schedule diverged at step {d['step']} "
              f"of {m['retrain_steps']} ({values}); the run is recorded, but its schedule is "
              "unstable at the final horizon: retune with a lower lr upper bound or more "
              "replicas, or set retrain.on_diverged: halve_lr", file=sys.stderr)
        return RETRAIN_DIVERGED
    if m.get("retrain_collapsed"):
        print(f"fdshpo run: retraining with the learned schedule collapsed: test accuracy "
              f"{m['test_accuracy']:.2%}, about chance, with a finite loss; the run is recorded, "
              "but its schedule does not train at the final horizon: retune with a lower lr "
              "upper bound, outer.select: best or more replicas", file=sys.stderr)
        return RETRAIN_COLLAPSED
    return 0

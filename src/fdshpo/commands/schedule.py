"""``fdshpo schedule CONFIG --cron EXPR --host URL``: a KFP recurring run of the pipeline.

KFP's cron has six fields (seconds first); a five-field expression gets ``0`` seconds.
The retune pipeline is the usual choice (``--pipeline retune``); recurring runs never use
the cache.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..errors import UserError
from .run import add_config_arguments, load
from .submit import add_host_arguments, client, kfp_errors

_CRON_FIELD = set("0123456789*/,-?LW#ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def kfp_cron(expression: str) -> str:
    """Five- or six-field cron -> KFP's six fields; UserError for anything else."""
    fields = expression.split()
    if len(fields) not in (5, 6) or not all(set(f.upper()) <= _CRON_FIELD for f in fields):
        raise UserError(f"--cron {expression!r} is not a cron expression; give five fields "
                        "(minute hour day month weekday, e.g. '0 3 * * *') or six "
                        "(with seconds first)")
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schedule", help="create a KFP recurring run")
    add_config_arguments(parser)
    add_host_arguments(parser)
    parser.add_argument("--cron", required=True, metavar="EXPR",
                        help="when to run, e.g. '0 3 * * *' (03:00 daily)")
    parser.add_argument("--name", help="recurring run name (default: <experiment>-<pipeline>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdshpo.pipelines import compile_pipeline

    cron = kfp_cron(args.cron)
    config = load(args)
    experiment = args.experiment or config.experiment
    with tempfile.TemporaryDirectory(prefix="fdshpo-schedule-") as tmp, kfp_errors(args):
        kfp_client = client(args)
        package = compile_pipeline(config, Path(tmp) / "pipeline.yaml",
                                   retune=args.pipeline == "retune")
        exp = kfp_client.create_experiment(experiment, namespace=args.namespace)
        job = kfp_client.create_recurring_run(
            exp.experiment_id, args.name or f"{config.experiment}-{args.pipeline}",
            cron_expression=cron, pipeline_package_path=str(package), params={},
            enable_caching=False, no_catchup=True, max_concurrency=1)
    print(f"scheduled {args.pipeline} recurring run {job.recurring_run_id} ({cron}) of "
          f"experiment {experiment} on {args.host}")
    return 0

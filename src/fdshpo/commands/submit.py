"""``fdshpo submit CONFIG --host URL``: compile and start one run on a KFP cluster."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .run import add_config_arguments, load


def add_host_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, metavar="URL",
                        help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888")
    parser.add_argument("--experiment", metavar="NAME",
                        help="KFP experiment (default: the config's experiment name)")
    parser.add_argument("--namespace", default=None,
                        help="Kubernetes namespace of a multi-user KFP (default: none)")


def client(args: argparse.Namespace):
    import kfp

    return kfp.Client(host=args.host, namespace=args.namespace or "kubeflow")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="start a run of the pipeline on KFP")
    add_config_arguments(parser)
    add_host_arguments(parser)
    parser.add_argument("--run-name", help="KFP run name (default: <experiment>-<pipeline>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdshpo.pipelines import compile_pipeline

    config = load(args)
    retune = args.pipeline == "retune"
    experiment = args.experiment or config.experiment
    with tempfile.TemporaryDirectory(prefix="fdshpo-submit-") as tmp:
        package = compile_pipeline(config, Path(tmp) / "pipeline.yaml", retune=retune)
        result = client(args).create_run_from_pipeline_package(
            str(package), arguments={}, run_name=args.run_name
            or f"{config.experiment}-{args.pipeline}", experiment_name=experiment,
            namespace=args.namespace, enable_caching=False if retune else None)
    print(f"submitted {args.pipeline} run {result.run_id} of experiment {experiment} to "
          f"{args.host}")
    return 0

"""``fdshpo compile CONFIG -o FILE``: write the pipeline YAML (the same bytes on repeat)."""

from __future__ import annotations

import argparse

from .run import add_config_arguments, load


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compile", help="write an experiment's KFP pipeline YAML")
    add_config_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="where to write the pipeline YAML")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdshpo.pipelines import compile_pipeline

    config = load(args)
    path = compile_pipeline(config, args.output, retune=args.pipeline == "retune")
    print(f"wrote {args.pipeline} pipeline for experiment {config.experiment} to {path} "
          f"({config.outer.max_steps} outer-step levels)")
    return 0

"""``fdshpo demo``: the bundled-sample demo as a plain library call (same as
``python -m fdshpo.demo``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="learn a schedule on the bundled sample as a plain library call",
        description="An experiment (default configs/demo.yaml) as one library call "
                    "(fdshpo.tune.tune) in this process, without KFP or a store: learns the "
                    "schedule, retrains with the initial and the learned one, prints both test "
                    "accuracies. `make demo` runs the same config as a pipeline.")
    parser.add_argument("--config", default=None, metavar="CONFIG",
                        help="experiment YAML (default configs/demo.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..demo import main

    main(["--config", args.config] if args.config else [])

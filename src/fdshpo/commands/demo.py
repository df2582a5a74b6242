"""``fdshpo demo``: the bundled-sample demo (same as ``python -m fdshpo.demo``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="learn a schedule on the bundled sample")
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--outer-steps", type=int, default=6)
    parser.add_argument("--network", default="mlp")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..demo import main

    main(["--horizon", str(args.horizon), "--outer-steps", str(args.outer_steps),
          "--network", args.network, "--seed", str(args.seed)])

"""``fdshpo report [--experiments]``: write the experiments overview page into the store (the
only page it writes, so ``--experiments`` is the default)."""

from __future__ import annotations

import argparse

from .runs import add_query_options, query_from_args, warn
from .store import add_store_options, store_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write the experiments overview page into the store",
        description="Write overview.html at the store's root: per experiment, its runs "
                    "(sortable), the best and latest learned schedules, and links to each "
                    "run's report. A run's own report: `fdshpo runs report`.")
    parser.add_argument("--experiments", action="store_true",
                        help="the overview of every experiment (the default, and the only "
                             "page so far)")
    add_store_options(parser)
    add_query_options(parser, limit=False)
    parser.add_argument("--best", default="-test_accuracy", metavar="KEY",
                        help="sort key that picks each experiment's best run (default "
                             "-test_accuracy)")
    parser.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    from ..store.layout import OVERVIEW
    from ..tracking.overview import build_overview

    store = store_from_args(args)
    html, problems = build_overview(store, query_from_args(args), args.best)
    warn(problems)
    store.put_bytes(OVERVIEW, html.encode(), overwrite=True)
    where = store.root / OVERVIEW if hasattr(store, "root") else f"{store.uri}/{OVERVIEW}"
    print(f"wrote {where}")
    return 0

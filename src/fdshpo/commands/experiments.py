"""``fdshpo experiments list``: per experiment, run counts, the last run, the best run and the
run the ``latest`` pointer (the retune warm start) names, from the run index."""

from __future__ import annotations

import argparse
import json
import sys

from ..report.text import terminal_text
from .runs import text_table, warn
from .store import add_store_options, store_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("experiments", help="the experiments in a store")
    sub = parser.add_subparsers(dest="experiments_command", metavar="ACTION", required=True)
    listing = sub.add_parser(
        "list", help="per experiment: run counts, last run, best run, latest pointer",
        description="Per experiment: run counts by status, the last run started, the best "
                    "complete run and the run the latest pointer (retune warm start) names.")
    add_store_options(listing)
    listing.add_argument("--best", default="-test_accuracy", metavar="KEY",
                         help="the best run is the first under this sort key (default "
                              "-test_accuracy: the highest test accuracy)")
    listing.add_argument("--json", action="store_true", help="print one JSON object per line")
    listing.set_defaults(func=list_command)


def list_command(args: argparse.Namespace) -> int:
    from ..tracking.reader import experiments_overview

    store = store_from_args(args)
    rows, problems = experiments_overview(store, args.best)
    warn(problems)
    if args.json:
        sys.stdout.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        return 0
    if not rows:
        print(f"no experiments in the run index of {store.uri}")
        return 0
    best = args.best.lstrip("-")
    print(text_table(["EXPERIMENT", "RUNS", "COMPLETE", "INCOMPLETE", "FAILED", "LAST RUN",
                      "BEST RUN", best.upper(), "LATEST (WARM START)"],
                     [[r["experiment"], r["runs"], r["complete"], r["incomplete"], r["failed"],
                       r["last_run"], r["best_run"], terminal_text(r["best"]), r["latest"]]
                      for r in rows]))
    return 0

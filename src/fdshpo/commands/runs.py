"""``fdshpo runs list|show|compare|report|reindex``: the runs recorded in a store.

``list`` and ``compare`` read the run index (:mod:`fdshpo.tracking.index`) and share the filters of
:func:`add_query_options`; the output is a table for people, or JSON lines (``--json``) for
scripts. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..report.text import selection_text, terminal_text
from .store import add_store_options, store_from_args

#: ``runs compare`` compares at most this many runs side by side.
MAX_COMPARE = 50


def add_query_options(parser: argparse.ArgumentParser, limit: bool = True) -> None:
    """--experiment, --status, --since, --where (repeatable), --sort and --limit."""
    parser.add_argument("--experiment", default=None, help="only this experiment")
    parser.add_argument("--status", choices=("complete", "incomplete", "failed"),
                        help="only runs with this status")
    parser.add_argument("--since", metavar="DATE",
                        help="only runs started at or after DATE (YYYY-MM-DD[THH:MM[:SS]], UTC)")
    parser.add_argument("--where", action="append", default=[], metavar="COND",
                        help="conditions KEY OP VALUE joined by ',' or 'and', e.g. "
                             "'test_accuracy>0.9'; OP: > >= < <= = != (repeatable)")
    parser.add_argument("--sort", metavar="KEY",
                        help="sort by KEY (a field or a metric), -KEY for descending")
    if limit:
        parser.add_argument("--limit", type=int, metavar="N", help="at most N runs")


def query_from_args(args: argparse.Namespace):
    from ..tracking.query import Query

    return Query.from_options(args.experiment, args.status, args.since, args.where,
                              args.sort, getattr(args, "limit", None))


def warn(problems) -> None:
    for problem in problems:
        print(f"fdshpo: warning: {problem}", file=sys.stderr)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("runs", help="list, show, compare and report tracked runs")
    sub = parser.add_subparsers(dest="runs_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_store_options(p)
        p.set_defaults(func=func)
        return p

    listing = action("list", "list runs from the store's run index", list_command)
    add_query_options(listing)
    listing.add_argument("--verify", action="store_true",
                         help="check each listed run against its record (one request per run)")
    listing.add_argument("--json", action="store_true", help="print one JSON object per line")

    show = action("show", "show one run's outer steps, schedule and metrics", show_command)
    show.add_argument("--experiment", default=None, help="the run's experiment")
    show.add_argument("runs", nargs=1, metavar="RUN",
                      help="EXPERIMENT/RUN_ID or a unique run id (prefix)")
    show.add_argument("--json", action="store_true", help="print JSON")

    compare = action("compare", "compare runs side by side: the RUNs given, or the runs the "
                                "filters select", compare_command)
    compare.add_argument("runs", nargs="*", metavar="RUN",
                         help="EXPERIMENT/RUN_ID or a unique run id (prefix)")
    add_query_options(compare)
    compare.add_argument("--json", action="store_true", help="print JSON")

    report = action("report", "write a run's self-contained HTML report", report_command)
    report.add_argument("--experiment", default=None, help="the run's experiment")
    report.add_argument("runs", nargs=1, metavar="RUN",
                        help="EXPERIMENT/RUN_ID or a unique run id (prefix)")
    report.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.html",
                        help="the page to write (plots inlined: one self-contained file)")

    reindex = action("reindex", "rebuild the run index from the run records (stores written "
                                "before the index, or a damaged index)", reindex_command)
    reindex.add_argument("--experiment", default=None, help="only this experiment")


def text_table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[terminal_text(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def list_command(args: argparse.Namespace) -> int:
    from ..tracking.reader import has_unindexed_runs, list_runs
    from ..tracking.reindex import verify

    store = store_from_args(args)
    listing = list_runs(store, query_from_args(args))
    warn(listing.problems)
    rows = listing.rows
    if args.verify:
        rows, problems = verify(store, rows)
        warn(problems)
    if args.json:
        sys.stdout.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        return 0
    if not rows:
        where = f" for experiment {args.experiment!r}" if args.experiment else ""
        print(f"no matching runs in {store.uri}{where}" if listing.scanned
              else f"no runs in {store.uri}{where}")
        if not listing.scanned and has_unindexed_runs(store, args.experiment):
            print("the store holds runs recorded before its run index: run "
                  "`fdshpo runs reindex` once to list them")
        return 0
    print(text_table(["EXPERIMENT", "RUN", "STATUS", "STARTED", "VAL LOSS (FROM OUTER STEP)",
                      "ENGINE", "METRICS"],
                     [[r["experiment"], r["run_id"], r["status"], r.get("started"),
                       selection_text(r), r.get("engine"),
                       " ".join(f"{k}={terminal_text(v)}" for k, v in sorted(r["metrics"].items()))]
                      for r in rows]))
    if len(rows) < listing.matched:
        print(f"({len(rows)} of {listing.matched} matching runs; --limit to see more)")
    return 0


def show_command(args: argparse.Namespace) -> int:
    from ..report.text import sign_string
    from ..segments import HYPERPARAMETERS
    from ..tracking.reader import load_run

    run = load_run(store_from_args(args), args.runs[0], args.experiment)
    if args.json:
        print(json.dumps({"experiment": run.experiment, "run_id": run.run_id,
                          **run.summary, "problems": run.problems, "config": run.config,
                          "steps": run.steps, "schedule": run.schedule,
                          "metrics": run.metrics}, indent=1))
        return 0
    summary = run.summary
    print(f"run {run.name}: {run.status}, {len(run.steps)} outer step(s), engine "
          f"{terminal_text(summary['engine'])}")
    print(f"val loss: {selection_text(summary)}")
    for problem in run.problems:
        print(f"  problem: {problem}")
    if run.steps:
        selected = summary.get("selected_outer_step")
        print()
        print(text_table(["OUTER STEP", "VAL LOSS", "LR", "MOMENTUM", "WEIGHT DECAY", "SIGNS",
                          "SECONDS", "ENGINE"],
                         [[f"{s['outer_step'] + 1}" + (" (selected)" if s["outer_step"] + 1
                                                       == selected else ""),
                           s["val_loss"], *(s["schedule"]["values"][n] for n in HYPERPARAMETERS),
                           sign_string(s["hypergradients"]), s.get("seconds"),
                           (s.get("engine") or {}).get("engine")]
                          for s in run.steps]))
    if run.schedule:
        print("\n" + ("final" if run.status == "complete" else "latest") + " schedule:")
        for name, values in run.schedule["values"].items():
            print(f"  {name:>12}: {terminal_text(values)}")
    if run.metrics:
        print("\nmetrics:")
        for name, value in sorted(run.metrics.items()):
            print(f"  {name}: {terminal_text(value)}")
    return 0


def _compared_refs(args: argparse.Namespace, store) -> list[str]:
    from ..errors import UserError
    from ..tracking.reader import list_runs

    filtered = any((args.experiment and not args.runs, args.status, args.since, args.where,
                    args.sort, args.limit))
    if args.runs and filtered:
        raise UserError("give either RUNs or filters (--status, --since, --where, --sort, "
                        "--limit) to `runs compare`, not both")
    if args.runs:
        refs = list(args.runs)
    else:
        listing = list_runs(store, query_from_args(args))
        warn(listing.problems)
        refs = [f"{r['experiment']}/{r['run_id']}" for r in listing.rows]
        if len(refs) > MAX_COMPARE:
            raise UserError(f"the filters select {len(refs)} runs; compare at most "
                            f"{MAX_COMPARE} (add --limit N)")
    if len(refs) < 2:
        raise UserError(f"`runs compare` needs at least two runs, got {len(refs)}: give RUNs "
                        "or filters that select two or more")
    return refs


def compare_command(args: argparse.Namespace) -> int:
    from ..tracking.reader import compare_runs, load_run

    store = store_from_args(args)
    experiment = args.experiment if args.runs else None
    runs = [load_run(store, ref, experiment, verify=False, steps=False)
            for ref in _compared_refs(args, store)]
    diff = compare_runs(*runs)
    if args.json:
        print(json.dumps(diff, indent=1))
        return 0
    rows = [["status", *diff["status"]], ["outer steps", *diff["outer_steps"]],
            ["val loss (from outer step)", *(selection_text(r.summary) for r in runs)],
            ["engine", *diff["engine"]]]
    rows += [[f"metric {m}", *v] for m, v in diff["metrics"].items()]
    rows += [[f"schedule {n}", *v] for n, v in diff["schedule"].items()]
    rows += [[f"config {k}", *v] for k, v in diff["config_diff"].items()]
    print(text_table(["", *diff["runs"]], rows))
    return 0


def report_command(args: argparse.Namespace) -> int:
    from ..report.run_page import build_report
    from ..tracking.reader import load_run

    run = load_run(store_from_args(args), args.runs[0], args.experiment)
    html, _ = build_report(name=run.name, status=run.status, config=run.config,
                           steps=run.steps, schedule=run.schedule, metrics=run.metrics,
                           summary=run.summary)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(html)
    print(f"wrote {args.output} ({run.name}, {run.status})")
    return 0


def reindex_command(args: argparse.Namespace) -> int:
    from ..tracking.reindex import reindex

    store = store_from_args(args)
    result = reindex(store, args.experiment)
    for problem in result.problems:
        print(f"fdshpo: warning: {problem}", file=sys.stderr)
    print(f"indexed {result.runs} run(s) of {result.experiments} experiment(s) in {store.uri}")
    return 0

"""``fdshpo runs list|show|compare|report``: the runs recorded in a store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .store import add_store_options, store_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("runs", help="list, show, compare and report tracked runs")
    sub = parser.add_subparsers(dest="runs_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, func, runs: int = 0):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_store_options(p)
        p.add_argument("--experiment", default=None, help="only this experiment")
        if runs:
            p.add_argument("runs", nargs=runs, metavar="RUN",
                           help="EXPERIMENT/RUN_ID or a unique run id (prefix)")
        p.set_defaults(func=func)
        return p

    action("list", "list the runs in the store", list_command).add_argument(
        "--json", action="store_true", help="print JSON")
    action("show", "show one run's outer steps, schedule and metrics", show_command,
           1).add_argument("--json", action="store_true", help="print JSON")
    action("compare", "compare two runs side by side", compare_command, 2).add_argument(
        "--json", action="store_true", help="print JSON")
    action("report", "write a run's self-contained HTML report", report_command,
           1).add_argument("-o", "--output", type=Path, required=True, metavar="FILE.html")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def list_command(args: argparse.Namespace) -> int:
    from ..tracking import list_runs

    store = store_from_args(args)
    runs = list_runs(store, args.experiment)
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=1))
        return 0
    if not runs:
        print(f"no runs in {store.uri}" + (f" for experiment {args.experiment!r}"
                                           if args.experiment else ""))
        return 0
    print(_table(["EXPERIMENT", "RUN", "STATUS", "OUTER STEPS", "VAL LOSS", "METRICS"],
                 [[r.experiment, r.run_id, r.status, r.outer_steps, r.final_val_loss,
                   " ".join(f"{k}={_fmt(v)}" for k, v in sorted(r.metrics.items()))]
                  for r in runs]))
    return 0


def _signs(hypergradients: dict) -> str:
    return " ".join(f"{n}:" + "".join("+" if g > 0 else "-" if g < 0 else "0" for g in gs)
                    for n, gs in hypergradients.items())


def show_command(args: argparse.Namespace) -> int:
    from ..tracking import load_run

    run = load_run(store_from_args(args), args.runs[0], args.experiment)
    if args.json:
        print(json.dumps({"experiment": run.experiment, "run_id": run.run_id,
                          "status": run.status, "problems": run.problems, "config": run.config,
                          "steps": run.steps, "schedule": run.schedule,
                          "metrics": run.metrics}, indent=1))
        return 0
    print(f"run {run.name}: {run.status}, {len(run.steps)} outer step(s)")
    for problem in run.problems:
        print(f"  problem: {problem}")
    if run.steps:
        print()
        print(_table(["STEP", "VAL LOSS", "LR", "MOMENTUM", "WEIGHT DECAY", "SIGNS", "SECONDS"],
                     [[s["outer_step"], s["val_loss"], *(s["schedule"]["values"][n] for n in
                                                         ("lr", "momentum", "weight_decay")),
                       _signs(s["hypergradients"]), s.get("seconds")] for s in run.steps]))
    if run.schedule:
        print("\n" + ("final" if run.status == "complete" else "latest") + " schedule:")
        for name, values in run.schedule["values"].items():
            print(f"  {name:>12}: {_fmt(values)}")
    if run.metrics:
        print("\nmetrics:")
        for name, value in sorted(run.metrics.items()):
            print(f"  {name}: {_fmt(value)}")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from ..tracking import compare_runs, load_run

    store = store_from_args(args)
    a, b = (load_run(store, ref, args.experiment) for ref in args.runs)
    diff = compare_runs(a, b)
    if args.json:
        print(json.dumps(diff, indent=1))
        return 0
    rows = [["status", *diff["status"]], ["outer steps", *diff["outer_steps"]],
            ["final val loss", *diff["final_val_loss"]]]
    rows += [[f"metric {m}", *v] for m, v in diff["metrics"].items()]
    rows += [[f"schedule {n}", *v] for n, v in diff["schedule"].items()]
    rows += [[f"config {k}", *v] for k, v in diff["config_diff"].items()]
    print(_table(["", *diff["runs"]], rows))
    return 0


def report_command(args: argparse.Namespace) -> int:
    from ..report import build_report
    from ..tracking import load_run

    run = load_run(store_from_args(args), args.runs[0], args.experiment)
    html, _ = build_report(run)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(html)
    print(f"wrote {args.output} ({run.name}, {run.status})")
    return 0

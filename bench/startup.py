"""Start-up time of the ``fdshpo`` commands that do not train, against a bare interpreter.

    python bench/startup.py [--repeats 5] [--before CHECKOUT] [--out bench/results/startup.md]

Times fresh processes (medians of ``--repeats``, interleaved so that the machine's load hits
every command alike): ``python -c pass`` (the baseline), ``fdshpo --version``, ``--help``,
``runs --help``, ``runs list``, ``experiments list`` and ``store init`` on an empty local
store, ``data list``, and, for reference, ``compile configs/demo.yaml`` (which builds a KFP
pipeline), and whether each one imported torch. ``--before CHECKOUT`` times the same commands
with another checkout's ``src/`` first on ``PYTHONPATH`` (e.g. ``git archive BASE src | tar -x
-C /tmp/before``), in the same process, for a before/after table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

BASELINE = "python -c pass"
COMMANDS = {
    BASELINE: None,
    "fdshpo --version": ["--version"],
    "fdshpo --help": ["--help"],
    "fdshpo runs --help": ["runs", "--help"],
    "fdshpo runs list": ["runs", "list", "--store", "{store}"],
    "fdshpo experiments list": ["experiments", "list", "--store", "{store}"],
    "fdshpo store init": ["store", "init", "{store}"],
    "fdshpo data list": ["data", "list"],
    "fdshpo compile configs/demo.yaml": ["compile", "configs/demo.yaml", "-o", "{store}/p.yaml"],
}

PROBE = """
import sys
from fdshpo.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("TORCH=%d\\n" % ("torch" in sys.modules))
"""


def command(argv: list[str] | None, store: str) -> list[str]:
    if argv is None:
        return [sys.executable, "-c", "pass"]
    return [sys.executable, "-m", "fdshpo", *(a.format(store=store) for a in argv)]


def time_once(cmd: list[str], env: dict) -> float:
    """Seconds of one process; NaN when it fails (a command the other checkout lacks)."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started if proc.returncode == 0 else float("nan")


def imports_torch(argv: list[str] | None, store: str, env: dict) -> bool | None:
    if argv is None:
        return None
    proc = subprocess.run([sys.executable, "-c", PROBE,
                           *(a.format(store=store) for a in argv)],
                          env=env, capture_output=True, text=True)
    return "TORCH=1" in proc.stderr


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout to time first on PYTHONPATH")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    variants = {"this checkout": dict(os.environ)}
    if args.before:
        variants = {"before": {**os.environ, "PYTHONPATH": str(args.before.resolve() / "src")},
                    **variants}
    times = {(v, c): [] for v in variants for c in COMMANDS if c != BASELINE}
    baseline = []
    with tempfile.TemporaryDirectory(prefix="fdshpo-startup-") as store:
        for _ in range(args.repeats):
            baseline.append(time_once(command(None, store), dict(os.environ)))
            for variant, env in variants.items():
                for name, cmd in COMMANDS.items():
                    if name != BASELINE:
                        times[variant, name].append(time_once(command(cmd, store), env))
        torch = {(v, c): imports_torch(cmd, store, env)
                 for v, env in variants.items() for c, cmd in COMMANDS.items()}
    base = statistics.median(baseline)
    medians = {key: statistics.median(values) for key, values in times.items()}
    medians.update({(v, BASELINE): base for v in variants})
    missing = {key for key, value in medians.items() if value != value}  # NaN: not there
    rows = []
    for name in COMMANDS:
        row = {"command": name}
        for variant in variants:
            row[variant] = (medians[variant, name], medians[variant, name] / base,
                            torch[variant, name])
        rows.append(row)
    for row in rows:
        print(row["command"].ljust(26) + "  ".join(
            f"{v}: {s:.2f}s ({r:.1f}x{', torch' if t else ''})" for v, (s, r, t) in
            ((v, row[v]) for v in variants)))
    if args.out:
        load = os.getloadavg()
        lines = ["# bench/startup.py: start-up of the commands that do not train", "",
                 f"Command: `.venv/bin/python bench/startup.py --repeats {args.repeats}"
                 + (" --before CHECKOUT" if args.before else "") + f" --out {args.out}`",
                 f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, shared with other "
                 f"jobs (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}). Date: "
                 f"{date.today().isoformat()}. Medians of {args.repeats} fresh processes, "
                 "interleaved.", "",
                 "| command | " + " | ".join(f"{v}: seconds | x `python -c pass` | torch"
                                           for v in variants) + " |",
                 "|---|" + "---:|---:|---|" * len(variants)]
        for row in rows:
            lines.append(f"| `{row['command']}` | " + " | ".join(
                "no such command | | " if (v, row["command"]) in missing else
                f"{s:.2f} | {r:.1f} | {'-' if t is None else 'yes' if t else 'no'}"
                for v, (s, r, t) in ((v, row[v]) for v in variants)) + " |")
        args.out.write_text("\n".join(lines) + "\n")
    return {"rows": rows}


if __name__ == "__main__":
    main()

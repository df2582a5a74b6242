"""Both hypergradient engines' cost, as ratios to a plain ``torch.optim.SGD`` step in one process.

    python bench/engine.py [--device cpu|cuda] [--networks lenet,mlp] [--segments 7,28,70]
                           [--horizon 70] [--repeats 3] [--threads 2] [--out FILE.json]

For each network (LeNet-5 and an MLP 784-128-10 on 28x28 inputs, batch 128, random data: the
cost does not depend on the values) and each learned (n, 1, 1) segmentation (K = n + 2 learned
values), a whole :func:`fdshpo.hypergradient` run over the horizon with:

- ``forward``: the forward engine (tangents; ``hvp="auto"``);
- ``reverse``: checkpointed reverse mode, states stored every ceil(sqrt(T)) steps (default);
- ``reverse_all``: reverse mode storing every state (``recompute_every=1``: no recomputation);
- ``auto``: ``engine="auto"`` with its default (calibrated) prices, and what it picked;

each as mean time per inner step over one plain SGD step (momentum and weight decay on): in
each of ``--repeats`` rounds, plain steps, one run of every kind, plain steps again; a run's
ratio is over the mean of its round's plain steps; the median over rounds is reported and every
round's ratio kept in the JSON. Also ``auto_measure``: ``engine="auto"`` with
``prices="measure"`` (its measurement included), once per network at the smallest K.

On a machine shared with other work, run it with ``OMP_WAIT_POLICY=PASSIVE``: spinning OpenMP
threads that lose their core to other processes made plain steps 5-15x slower and the ratios
meaningless (measured on the 2-core development machine).

``--calibrate`` prints the :class:`fdshpo.EnginePrices` fitted to these runs (plain steps):
forward_base and per_tangent by least squares of the forward runs' step cost on the mean live
K; reverse_step from ``reverse_all``; recompute from ``reverse`` - ``reverse_all`` per
recomputed step. ``fdshpo.engines.prices.CALIBRATED_PRICES["cpu"]`` holds LeNet-5's fit.

Peak memory of whole runs of both engines at two horizons 10x apart (LeNet-5, (7, 1, 1)), each
in a fresh subprocess: peak RSS (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA), and the
peak bytes of the engine's own state (tensors it holds, stored trajectory included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date

import steps  # bench/steps.py: what the step-cost benchmarks share
import torch
from torch import nn

import fdshpo
from fdshpo.engines.base import TangentColumns, default_interval, recomputed_steps
from fdshpo.models import LeNet5, mlp

LOSS = steps.LOSS
schedule = steps.schedule
BATCH = 128
NETWORKS = {"lenet": ("LeNet-5 (61,706 params)", lambda: LeNet5()),
            "mlp": ("MLP 784-128-10 (101,770 params)", lambda: mlp((1, 28, 28), 10))}
RUNS = {"forward": {"engine": "forward"}, "reverse": {"engine": "reverse"},
        "reverse_all": {"engine": "reverse", "recompute_every": 1}, "auto": {"engine": "auto"}}


def make_batches(num: int, device: str, seed: int = 0):
    """``num`` random 28x28 batches of BATCH (:func:`steps.make_batches`)."""
    return steps.make_batches(num, BATCH, (1, 28, 28), device, seed)


def time_plain(model: nn.Module, batches, device: str) -> float:
    """Seconds per plain SGD step (momentum and weight decay on, as in FDS)."""
    return steps.seconds_per_plain_step(model, batches, device)


def time_run(model, batches, val, sched, device, **options):
    """(seconds per inner step, result) of a whole hypergradient() run."""
    result = []
    seconds = steps.timed(lambda: result.append(
        fdshpo.hypergradient(model, LOSS, batches, val, sched, **options)), device)
    return seconds / sched.num_steps, result[0]


def bench_network(name: str, segments: list[int], horizon: int, repeats: int, device: str):
    torch.manual_seed(0)
    model = NETWORKS[name][1]().to(device)
    batches = make_batches(horizon, device)
    val = make_batches(2, device, seed=1)
    time_plain(model, batches[:5], device)  # warm-ups
    for options in RUNS.values():
        time_run(model, batches[:7], val, schedule(7, 1), device, **options)
    rows = []
    for n in segments:
        sched = schedule(horizon, n)
        ratios = {k: [] for k in RUNS}
        plains, auto = [], None
        for _ in range(repeats):  # interleaved: plain, every engine, plain
            before = time_plain(model, batches, device)
            seconds = {}
            for key, options in RUNS.items():
                seconds[key], result = time_run(model, batches, val, sched, device, **options)
                if key == "auto":
                    auto = result.engine
            plain = (before + time_plain(model, batches, device)) / 2
            plains.append(plain)
            for key in RUNS:
                ratios[key].append(seconds[key] / plain)
        columns = TangentColumns.of(sched, fdshpo.HYPERPARAMETERS)
        row = {"segments": [n, 1, 1], "K": len(columns),
               "mean_live": columns.live_steps(horizon) / horizon,
               "plain_step_ms": 1e3 * statistics.median(plains),
               **{k: statistics.median(v) for k, v in ratios.items()},
               "rounds": ratios, "auto_engine": auto.engine, "auto_reason": auto.reason}
        rows.append(row)
        print(f"{name} ({n},1,1) K={row['K']}: plain {row['plain_step_ms']:.2f} ms; "
              + ", ".join(f"{k} {row[k]:.2f}" for k in RUNS)
              + f" plain steps; auto picked {auto.engine}", flush=True)
    sched = schedule(horizon, segments[0])
    before = time_plain(model, batches, device)
    measured_s, result = time_run(model, batches, val, sched, device, prices="measure")
    plain = (before + time_plain(model, batches, device)) / 2
    measure = {"segments": [segments[0], 1, 1], "ratio": measured_s / plain,
               "engine": result.engine.engine, "reason": result.engine.reason}
    print(f"{name} ({segments[0]},1,1) auto with prices='measure' (measurement included): "
          f"{measure['ratio']:.2f} plain steps, picked {measure['engine']}", flush=True)
    return {"network": NETWORKS[name][0], "rows": rows, "auto_measure": measure,
            "calibrated": calibrate(rows, horizon)}


def calibrate(rows: list[dict], horizon: int) -> dict:
    """EnginePrices (plain steps) fitted to the runs (module docstring)."""
    xs, ys = [r["mean_live"] for r in rows], [r["forward"] for r in rows]
    if len(rows) > 1:
        slope = statistics.linear_regression(xs, ys).slope
    else:
        slope = 0.0
    base = statistics.fmean(y - slope * x for x, y in zip(xs, ys))
    reverse_step = statistics.fmean(r["reverse_all"] for r in rows)
    recomputed = recomputed_steps(horizon, default_interval(horizon))
    extra = statistics.fmean(r["reverse"] - r["reverse_all"] for r in rows)
    return {"forward_base": base, "per_tangent": slope, "reverse_step": reverse_step,
            "recompute": max(0.0, extra * horizon / recomputed) if recomputed else 0.0}


def state_bytes(state) -> int:
    tensors = [t for t in state if isinstance(t, torch.Tensor)]
    for value in state:
        if isinstance(value, dict):
            tensors += [t for pair in value.values() for t in pair]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in tensors}.values())


def peak_memory_child(horizon: int, device: str, engine: str) -> None:
    """One run over ``horizon`` steps; prints peak memory (MiB) and peak state bytes."""
    torch.manual_seed(0)
    model = LeNet5().to(device)
    batches = make_batches(1, device)  # one batch reused: data memory independent of horizon
    peak = [0]

    def watch(state):
        peak[0] = max(peak[0], state_bytes(state))

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fdshpo.hypergradient(model, LOSS, batches * horizon, batches,
                         schedule(horizon, min(7, horizon)), engine=engine, on_step=watch)
    total = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
             else peak_rss_mib())
    print(json.dumps({"peak_mib": total, "state_mib": peak[0] / 2**20}))


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux: VmHWM, not ``ru_maxrss``, which a child
    started by ``subprocess`` (vfork + exec) inherits from its parent's high-water mark."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(horizon: int, device: str, engine: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(horizon),
                          "--device", device, "--engine", engine], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--networks", default="lenet,mlp")
    parser.add_argument("--segments", default="7,28,70",
                        help="learning-rate segment counts n of (n, 1, 1) (default 7,28,70)")
    parser.add_argument("--horizon", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-horizon", type=int, default=20,
                        help="peak memory is measured at this horizon and 10x it (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--calibrate", action="store_true",
                        help="print the fitted EnginePrices per network")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="forward", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        peak_memory_child(args.memory_child, args.device, args.engine)
        return
    started = time.perf_counter()
    segments = [int(n) for n in args.segments.split(",")]
    networks = {name: bench_network(name, segments, args.horizon, args.repeats, args.device)
                for name in args.networks.split(",")}
    horizons = (args.memory_horizon, args.memory_horizon * 10)
    memory = {engine: {h: peak_memory(h, args.device, engine) for h in horizons}
              for engine in ("forward", "reverse")}
    results = {
        "date": date.today().isoformat(),
        "command": "python bench/engine.py " + " ".join(sys.argv[1:]),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} threads",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "horizon": args.horizon, "batch": BATCH,
        "networks": networks, "peak_memory_lenet_7_1_1": memory,
        "wall_seconds": time.perf_counter() - started,
    }
    for engine, by_h in memory.items():
        print(f"peak memory, {engine}: " + ", ".join(
            f"horizon {h}: {m['peak_mib']:.1f} MiB (state {m['state_mib']:.2f} MiB)"
            for h, m in by_h.items()))
    if args.calibrate:
        for name, data in networks.items():
            print(f"calibrated prices, {name} (plain steps): {data['calibrated']}")
    print(f"wall {results['wall_seconds']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

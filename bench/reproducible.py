"""What alignment-independent numerics cost (fdshpo.reproducible), as ratios.

    OMP_WAIT_POLICY=PASSIVE python bench/reproducible.py [--rounds 3] [--horizon 30]
                                                          [--out FILE.json]

Hypothesis: MKL's strict CNR mode (``MKL_CBWR=AUTO,STRICT``, set by ``import fdshpo``) and the
aligned copies of misaligned inputs cost under 5% of an engine step.

MKL fixes its mode at its first call, so the two modes cannot share a process. Each round runs
two child processes back to back (the order alternating between rounds): ``strict`` (fdshpo
imported first, as every fdshpo entry point does) and ``default`` (a matmul before ``import
fdshpo`` fixes MKL's default dispatch, the fall-back case where only the aligned copies
protect). Each child times, on LeNet-5 (batch 128, random data, (7, 1, 1) learned, 2 threads):
plain ``torch.optim.SGD`` steps, a forward- and a reverse-engine run, and both again on the same
batches stored one element off the 64-byte grid (so every batch is copied). Reported: each
engine's step in plain steps of its own process, the strict/default ratio of absolute step
times (median over rounds), and the misaligned/aligned ratio within each process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

ENGINES = ("forward", "reverse")


def child(horizon: int) -> dict:
    import torch

    torch.set_num_threads(2)
    sys.path.insert(0, str(Path(__file__).parent))
    import engine as engine_bench  # noqa: E402  (bench/engine.py: the shared timing helpers)

    from fdshpo.reproducible import mkl_strict_mode

    torch.manual_seed(0)
    model = engine_bench.NETWORKS["lenet"][1]()
    batches = engine_bench.make_batches(horizon, "cpu")
    val = engine_bench.make_batches(2, "cpu", seed=1)
    shifted = [(_off_grid(x), _off_grid(y)) for x, y in batches]
    sched = engine_bench.schedule(horizon, 7)
    engine_bench.time_plain(model, batches[:5], "cpu")  # warm-ups
    for name in ENGINES:
        engine_bench.time_run(model, batches[:7], val, engine_bench.schedule(7, 1), "cpu",
                              engine=name)
    before = engine_bench.time_plain(model, batches, "cpu")
    seconds = {}
    for name in ENGINES:
        seconds[name], _ = engine_bench.time_run(model, batches, val, sched, "cpu", engine=name)
        seconds[f"{name}_misaligned"], _ = engine_bench.time_run(model, shifted, val, sched,
                                                                 "cpu", engine=name)
    plain = (before + engine_bench.time_plain(model, batches, "cpu")) / 2
    return {"strict": mkl_strict_mode(), "plain_s": plain, **{f"{k}_s": v
                                                              for k, v in seconds.items()}}


def _off_grid(tensor):
    import torch

    buffer = torch.empty(tensor.numel() + 1, dtype=tensor.dtype)
    view = buffer[1:].view(tensor.shape)
    return view.copy_(tensor)


def run_child(mode: str, horizon: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    first = "" if mode == "strict" else (
        "import torch; a = torch.randn(64, 64, dtype=torch.float64); (a @ a).sum()\n")
    code = (f"{first}import fdshpo, json, sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})"
            f"\nimport reproducible\nprint(json.dumps(reproducible.child({horizon})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    rounds = []
    for r in range(args.rounds):
        modes = ("strict", "default") if r % 2 == 0 else ("default", "strict")
        result = {mode: run_child(mode, args.horizon) for mode in modes}
        rounds.append(result)
        print(f"round {r + 1}: " + "; ".join(
            f"{m} (MKL strict={result[m]['strict']}): plain {1e3 * result[m]['plain_s']:.1f} ms"
            + "".join(f", {e} {result[m][f'{e}_s'] / result[m]['plain_s']:.2f}" for e in ENGINES)
            for m in ("strict", "default")), flush=True)
    summary = {}
    for key in ("plain", *ENGINES):
        summary[f"{key}_strict_over_default"] = statistics.median(
            r["strict"][f"{key}_s"] / r["default"][f"{key}_s"] for r in rounds)
    for mode in ("strict", "default"):
        for e in ENGINES:
            summary[f"{e}_plain_steps_{mode}"] = statistics.median(
                r[mode][f"{e}_s"] / r[mode]["plain_s"] for r in rounds)
            summary[f"{e}_misaligned_over_aligned_{mode}"] = statistics.median(
                r[mode][f"{e}_misaligned_s"] / r[mode][f"{e}_s"] for r in rounds)
    for key, value in summary.items():
        print(f"{key}: {value:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": "python bench/reproducible.py " + " ".join(sys.argv[1:]),
            "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
            "cpu": _cpu_name(), "horizon": args.horizon, "rounds": rounds, "summary": summary},
            indent=2) + "\n")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()

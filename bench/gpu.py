"""FDS cost on a GPU: WRN-16-1, CIFAR-shaped random inputs, batch 256.

    python bench/gpu.py --out bench/results/gpu-<card>.json          # about 1-2 minutes
    python bench/gpu.py --device cpu --network lenet --batch-size 4 --horizon 7 --repeats 1
                                                                     # a dry run (~30 s on CPU)

Measures, in one process (medians over ``--repeats`` after a warm-up; random data, since the
cost does not depend on the values):

- ``plain_step_ms``: one ``torch.optim.SGD`` step (momentum, weight decay) on the module, and
  ``functional_step_ms``: one step of :func:`fdshpo.engines.inner.train` (what the baselines run);
- ``fds_step_ms``: per inner step of a whole :func:`fdshpo.hypergradient` run with (7, 1, 1)
  learned segments over ``--horizon`` steps with the forward engine, and the same in plain
  steps; ``reverse_step_ms`` / ``reverse_step_in_plain_steps``: the same with the reverse
  engine (checkpointed reverse mode), and ``auto_engine``: what ``engine="auto"`` picks here;
- ``tangent_ms`` / ``tangent_cost``: extra time of one live tangent, the slope of the batched
  gradient + K Hessian-vector-product pass between K = 1 and K = 9 (ms, and in plain steps);
- ``peak_memory_mib``: ``torch.cuda.max_memory_allocated`` of a whole FDS run at ``--horizon``
  and 10x ``--horizon`` steps, each in a fresh subprocess, per engine (forward: flat; reverse:
  grows like sqrt(T)).

Prints a short table and writes the JSON to ``--out`` and the table as Markdown beside it
(same name, ``.md``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import steps  # bench/steps.py: what the step-cost benchmarks share
import torch
from steps import LOSS, plain_steps, schedule, timed
from torch import nn

NETWORK = "wrn-16-1"
SHAPE = (3, 32, 32)
SEGMENTS = {"lr": 7, "momentum": 1, "weight_decay": 1}


def build(device: str, network: str = NETWORK) -> nn.Module:
    try:
        from fdshpo.models import build_model
        model = build_model(network, SHAPE, 10, seed=0)
    except (ImportError, ValueError) as exc:
        sys.exit(f"bench/gpu.py needs fdshpo.models.build_model({network!r}) ({exc}); "
                 "update fdshpo to a version with wide ResNets")
    return model.to(device)


def make_batches(num: int, batch: int, device: str, seed: int = 0):
    """``num`` random batches shaped like CIFAR-10 (:func:`steps.make_batches`)."""
    return steps.make_batches(num, batch, SHAPE, device, seed)


def functional_steps(model: nn.Module, batches) -> None:
    from fdshpo.engines.inner import train

    train(model, LOSS, batches, schedule(len(batches)))


def fds_run(model: nn.Module, batches, val, engine: str = "forward"):
    import fdshpo

    return fdshpo.hypergradient(model, LOSS, batches, val, schedule(len(batches)),
                                engine=engine)


def grad_hvp_seconds(model: nn.Module, batches, k: int, device: str) -> float:
    """Seconds of one batched gradient + K Hessian-vector products pass (median of batches)."""
    from fdshpo.engines.forward import ForwardEngine

    engine = ForwardEngine(model, LOSS, schedule(7))
    theta, objective = engine.init().theta, engine.objective
    tangents = torch.randn(k, theta.numel(), device=device, dtype=theta.dtype) * 1e-3

    def grad_hvps(x, y):
        return objective.grad_and_hvps(theta, tangents, x, y, engine.hvp)

    grad_hvps(*batches[0])  # warm-up
    return statistics.median(timed(lambda b=b: grad_hvps(*b), device) for b in batches)


def memory_child(horizon: int, batch: int, device: str, network: str, engine: str) -> None:
    """One FDS run over ``horizon`` steps; prints its peak memory in MiB (GPU, else RSS)."""
    import fdshpo

    model = build(device, network)
    batches = make_batches(1, batch, device)  # one batch reused: data memory is horizon-free
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    fdshpo.hypergradient(model, LOSS, batches * horizon, batches, schedule(horizon),
                         engine=engine)
    if device.startswith("cuda"):
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_memory(horizon: int, batch: int, device: str, network: str, engine: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(horizon),
                          "--batch-size", str(batch), "--device", device, "--network", network,
                          "--engine", engine], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=50,
                        help="steps of the timed FDS run and the first memory run (x10 after)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--network", default=NETWORK, help="default wrn-16-1 (lenet: CPU dry runs)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="forward", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = args.device
    if args.horizon < 7:
        sys.exit("bench/gpu.py: --horizon must be at least 7 (one step per lr segment)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: CUDA is not available here; run it on a GPU machine, or pass "
                 "--device cpu for a dry run")
    if args.memory_child:
        memory_child(args.memory_child, args.batch_size, device, args.network, args.engine)
        return 0
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    model = build(device, args.network)
    params = sum(p.numel() for p in model.parameters())
    H = args.horizon
    batches = make_batches(H, args.batch_size, device)
    val = make_batches(2, args.batch_size, device, seed=1)
    plain_steps(model, batches[:7])  # warm-ups (cuDNN autotuning, vmap tracing)
    functional_steps(model, batches[:7])
    fds_run(model, batches[:7], val)
    fds_run(model, batches[:7], val, "reverse")
    plain, functional, fds, reverse = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so drift hits all of them alike
        plain.append(timed(lambda: plain_steps(model, batches), device) / H)
        functional.append(timed(lambda: functional_steps(model, batches), device) / H)
        fds.append(timed(lambda: fds_run(model, batches, val), device) / H)
        reverse.append(timed(lambda: fds_run(model, batches, val, "reverse"), device) / H)
    plain_s, functional_s, fds_s, reverse_s = (statistics.median(v) for v in
                                               (plain, functional, fds, reverse))
    auto = fds_run(model, batches, val, "auto").engine
    hvp = {k: grad_hvp_seconds(model, batches[:10], k, device) for k in (1, 9)}
    tangent_s = (hvp[9] - hvp[1]) / 8
    memory = {engine: {h: peak_memory(h, args.batch_size, device, args.network, engine)
                       for h in (H, 10 * H)} for engine in ("forward", "reverse")}
    card = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": card or device, "torch": torch.__version__,
        "cuda": torch.version.cuda if device.startswith("cuda") else None,
        "model": f"{args.network} ({params:,} params), {SHAPE}, batch {args.batch_size}",
        "segments": SEGMENTS, "horizon": H,
        "plain_step_ms": 1e3 * plain_s,
        "functional_step_ms": 1e3 * functional_s,
        "fds_step_ms": 1e3 * fds_s,
        "fds_step_in_plain_steps": fds_s / plain_s,
        "reverse_step_ms": 1e3 * reverse_s,
        "reverse_step_in_plain_steps": reverse_s / plain_s,
        "auto_engine": auto.engine, "auto_reason": auto.reason,
        "grad_hvp_pass_ms": {k: 1e3 * v for k, v in hvp.items()},
        "tangent_ms": 1e3 * tangent_s,
        "tangent_cost_in_plain_steps": tangent_s / plain_s,
        "peak_memory_mib": memory["forward"],
        "reverse_peak_memory_mib": memory["reverse"],
        "memory_growth_ratio": memory["forward"][10 * H] / memory["forward"][H],
        "reverse_memory_growth_ratio": memory["reverse"][10 * H] / memory["reverse"][H],
        "repeats_ms": {"plain": [1e3 * v for v in plain], "functional":
                       [1e3 * v for v in functional], "fds": [1e3 * v for v in fds],
                       "reverse": [1e3 * v for v in reverse]},
        "wall_seconds": time.perf_counter() - started,
    }
    rows = [("plain SGD step (torch.optim.SGD)", f"{results['plain_step_ms']:.2f} ms", "1.00"),
            ("plain step (fdshpo.engines.inner.train)", f"{results['functional_step_ms']:.2f} ms",
             f"{functional_s / plain_s:.2f}"),
            ("FDS step, (7,1,1), 9 tangents", f"{results['fds_step_ms']:.2f} ms",
             f"{results['fds_step_in_plain_steps']:.2f}"),
            ("reverse-mode step, (7,1,1)", f"{results['reverse_step_ms']:.2f} ms",
             f"{results['reverse_step_in_plain_steps']:.2f}"),
            ("engine='auto' picks", auto.engine, ""),
            ("one live tangent", f"{results['tangent_ms']:.2f} ms",
             f"{results['tangent_cost_in_plain_steps']:.2f}")]
    rows += [(f"peak memory, {engine} over {h} steps", f"{m:.0f} MiB", "")
             for engine, by_h in memory.items() for h, m in by_h.items()]
    print(f"{results['model']} on {results['device']} (torch {torch.__version__})")
    print(f"{'':36} {'time/memory':>12} {'plain steps':>12}")
    for name, value, ratio in rows:
        print(f"{name:36} {value:>12} {ratio:>12}")
    print(f"memory growth for 10x the horizon: forward x{results['memory_growth_ratio']:.3f}, "
          f"reverse x{results['reverse_memory_growth_ratio']:.3f}; "
          f"wall {results['wall_seconds']:.0f}s")
    if results["fds_step_in_plain_steps"] <= 1:  # 9 tangents cannot be free: the timing is off
        print("warning: an FDS step measured no dearer than a plain step; the timings are not "
              "trustworthy (a busy machine?): rerun", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        table = ["| measure | time / memory | plain steps |", "|---|---|---|"]
        table += [f"| {name} | {value} | {ratio} |" for name, value, ratio in rows]
        out.with_suffix(".md").write_text("\n".join([
            f"# FDS cost on {results['device']}", "",
            f"- command: `{results['command']}`", f"- date: {results['date']}",
            f"- model: {results['model']}; torch {torch.__version__}"
            + (f", CUDA {results['cuda']}" if results["cuda"] else ""),
            f"- memory growth for 10x the horizon: forward "
            f"x{results['memory_growth_ratio']:.3f}, reverse "
            f"x{results['reverse_memory_growth_ratio']:.3f}",
            f"- engine='auto' picks {auto.engine}: {auto.reason}",
            "", *table, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""FDS engine cost, as ratios to a plain ``torch.optim.SGD`` step measured in the same process.

    python bench/engine.py [--device cpu|cuda] [--horizon 70] [--repeats 3] [--out FILE.json]

LeNet-5 on 28x28 inputs, batch 128 (random data: the cost does not depend on the values).
Reports, each as a median over interleaved repeats (the machines are shared and noisy):

- ``fds_step_ratio``: mean time per inner step of ``hypergradient`` with (7, 1, 1) learned
  segments over the horizon, over one plain SGD step (target <= 7 on CPU), with the HVP form
  that ``hvp="auto"`` picks on the device, and the same with the other form;
- ``tangent_cost``: extra plain steps per live tangent (slope of the grad+HVP pass over K);
- peak memory of the whole FDS run at two horizons 10x apart (each in a fresh subprocess:
  peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA); it must be flat.
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
from datetime import date

import torch
from torch import nn

import fdshpo
from fdshpo.forward import ForwardEngine
from fdshpo.models import LeNet5

LOSS = nn.functional.cross_entropy
BATCH = 128


def make_batches(num: int, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, 1, 28, 28, generator=gen).to(device),
             torch.randint(0, 10, (BATCH,), generator=gen).to(device)) for _ in range(num)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_plain(model: nn.Module, batches, device: str) -> float:
    """Seconds per plain SGD step (momentum and weight decay on, as in FDS)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sync(device)
    start = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        LOSS(model(x), y).backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - start) / len(batches)


def time_fds(model: nn.Module, batches, val, horizon: int, device: str,
             hvp: str = "auto") -> float:
    """Seconds per inner step of a whole hypergradient() run with (7, 1, 1) segments."""
    schedule = fdshpo.Schedule.constant(horizon, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                        segments={"lr": 7, "momentum": 1, "weight_decay": 1})
    sync(device)
    start = time.perf_counter()
    fdshpo.hypergradient(model, LOSS, batches[:horizon], val, schedule, hvp=hvp)
    sync(device)
    return (time.perf_counter() - start) / horizon


def time_grad_hvp(model: nn.Module, batches, k: int, device: str) -> float:  # hvp="auto"
    """Seconds for one batched gradient + K Hessian-vector products pass."""
    schedule = fdshpo.Schedule.constant(2, lr=0.01)
    engine = ForwardEngine(model, LOSS, schedule)
    theta = engine.init().theta
    tangents = torch.randn(k, theta.numel(), device=device) * 1e-3
    x, y = batches[0]
    engine._grad_and_hvps(theta, tangents, x, y)
    sync(device)
    start = time.perf_counter()
    for x, y in batches[:10]:
        engine._grad_and_hvps(theta, tangents, x, y)
    sync(device)
    return (time.perf_counter() - start) / 10


def peak_memory_child(horizon: int, device: str) -> None:
    """Run one FDS hypergradient over ``horizon`` steps and print its peak memory in MiB."""
    torch.manual_seed(0)
    model = LeNet5().to(device)
    batches = make_batches(1, device)  # one batch reused: data memory independent of horizon
    schedule = fdshpo.Schedule.constant(horizon, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                        segments={"lr": 7})
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fdshpo.hypergradient(model, LOSS, (batches[0] for _ in range(horizon)), batches, schedule)
    if device == "cuda":
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def peak_memory(horizon: int, device: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(horizon),
                          "--device", device], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--horizon", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-horizon", type=int, default=20,
                        help="peak memory is measured at this horizon and 10x it (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        peak_memory_child(args.memory_child, args.device)
        return

    torch.manual_seed(0)
    model = LeNet5().to(args.device)
    batches = make_batches(args.horizon, args.device)
    val = make_batches(2, args.device, seed=1)
    time_plain(model, batches[:5], args.device)  # warm-up
    default = "forward" if args.device == "cuda" else "reverse"  # what hvp="auto" picks
    other = "reverse" if default == "forward" else "forward"
    time_fds(model, batches, val, 7, args.device, hvp=default)
    time_fds(model, batches, val, 7, args.device, hvp=other)
    ratios, other_ratios, plains = [], [], []
    for _ in range(args.repeats):  # interleaved: plain, FDS (both HVP forms), plain
        before = time_plain(model, batches, args.device)
        fds = time_fds(model, batches, val, args.horizon, args.device, hvp=default)
        fds_other = time_fds(model, batches, val, args.horizon, args.device, hvp=other)
        after = time_plain(model, batches, args.device)
        plain = (before + after) / 2
        plains.append(plain)
        ratios.append(fds / plain)
        other_ratios.append(fds_other / plain)
    plain = statistics.median(plains)
    ks = [1, 3, 5, 9]
    pass_costs = {}
    for k in ks:
        reference = time_plain(model, batches[:20], args.device)
        pass_costs[k] = time_grad_hvp(model, batches, k, args.device) / reference
    slope = (pass_costs[9] - pass_costs[1]) / 8
    horizons = (args.memory_horizon, args.memory_horizon * 10)
    memory = {h: peak_memory(h, args.device) for h in horizons}
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} threads",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": "LeNet-5 (61,706 params), 28x28, batch 128",
        "plain_step_ms": plain * 1e3,
        "fds_step_ratio": statistics.median(ratios),
        "fds_step_ratios": ratios,
        "hvp_default": default,
        f"fds_step_ratio_hvp_{other}": statistics.median(other_ratios),
        "grad_hvp_pass_in_plain_steps": pass_costs,
        "tangent_cost_in_plain_steps": slope,
        "peak_memory_mib": memory,
        "memory_growth_ratio": memory[horizons[1]] / memory[horizons[0]],
    }
    print(f"plain SGD step: {plain * 1e3:.2f} ms on {results['device']}")
    print(f"FDS step with (7,1,1) over {args.horizon} steps, hvp={default!r} (the default here): "
          f"{results['fds_step_ratio']:.2f} plain steps (repeats: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; target <= 7); with hvp={other!r}: "
          f"{statistics.median(other_ratios):.2f}")
    print("grad + K HVPs in one pass: " + ", ".join(f"K={k}: {c:.2f}" for k, c in
                                                    pass_costs.items()) + " plain steps")
    print(f"one live tangent costs {slope:.2f} plain steps")
    print(f"peak memory: horizon {horizons[0]}: {memory[horizons[0]]:.1f} MiB, horizon "
          f"{horizons[1]}: {memory[horizons[1]]:.1f} MiB "
          f"(ratio {results['memory_growth_ratio']:.3f})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

"""What the two exact engines cost: prices of their work, and the state each holds.

With K learned values (k_t of them live at step t), a horizon T, P parameters and reverse
mode's interval k between stored states:

    forward   time  T * forward_base + per_tangent * sum_t k_t     state 2 (K + 1) P numbers
    reverse   time  T * reverse_step + recompute * R(T, k)         state 2 (S(T, k) + 1) P numbers

with R the recomputed steps and S the most trajectory states held at once
(:func:`fdshpo.engines.reverse.recomputed_steps`, :func:`fdshpo.engines.reverse.peak_states`).
Activations of the
gradient and HVP passes come on top for both (forward's batched pass holds them for every live
tangent) and are not modelled. Prices come calibrated per device type
(:data:`CALIBRATED_PRICES`, fitted to ``bench/engine.py``), measured on one batch
(:func:`measure_prices`), or from the comparison's cost model (:mod:`fdshpo.baselines.budget`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
from torch import nn

from .base import (  # noqa: F401 (EnginePrices, CALIBRATED_PRICES: re-exported)
    CALIBRATED_PRICES,
    EnginePrices,
    TangentColumns,
    peak_states,
    resolve_hvp,
)
from .inner import LossFn
from .objective import Batch, FlatObjective


def timed_seconds(fn: Callable[[], object], device: torch.device | str, repeats: int,
                  reduce: Callable[[list[float]], float] = min) -> float:
    """``reduce`` (default: the fastest) of ``repeats`` wall times of ``fn`` after one warm-up
    call, the device synchronised around each call (CUDA runs asynchronously)."""
    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return reduce(times)


def measure_prices(model: nn.Module, loss_fn: LossFn, batch: Batch, num_tangents: int,
                   hvp: str = "auto", repeats: int = 1) -> EnginePrices:
    """Time each engine's work on one batch at the model's parameters (:class:`EnginePrices`).

    Times a gradient, a gradient + one HVP (reverse mode's backward step), and the forward
    engine's batched gradient + HVPs with 1 and with ``min(num_tangents, 8)`` tangents (at least
    2); each after a warm-up call, fastest of ``repeats``. The slope between the last two is the
    price of a live tangent.
    """
    objective = FlatObjective(model, loss_fn)
    theta = objective.theta0
    inputs, targets = objective.to_device(*batch)
    form = resolve_hvp(hvp, objective.device)
    k = max(2, min(int(num_tangents), 8))
    gen = torch.Generator(device="cpu").manual_seed(0)
    vectors = (torch.randn(k, theta.numel(), generator=gen, dtype=theta.dtype) * 1e-3
               ).to(objective.device)
    device = objective.device

    def time_of(fn):
        return timed_seconds(fn, device, repeats)

    grad_s = time_of(lambda: objective.grad_and_loss(theta, inputs, targets))
    backward_s = time_of(lambda: objective.grad_and_hvps(theta, vectors[0], inputs, targets,
                                                        "reverse"))
    one_s = time_of(lambda: objective.grad_and_hvps(theta, vectors[:1], inputs, targets, form))
    many_s = time_of(lambda: objective.grad_and_hvps(theta, vectors, inputs, targets, form))
    per_tangent = max(0.0, (many_s - one_s) / (k - 1))
    return EnginePrices(forward_base=max(0.0, one_s - per_tangent), per_tangent=per_tangent,
                        reverse_step=grad_s + backward_s, recompute=grad_s)


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now (CUDA: the driver's count; CPU: free physical pages), or
    None when the platform does not say."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_limit(device: torch.device) -> int | None:
    """What ``auto`` lets an engine's state use: half of :func:`available_memory`."""
    free = available_memory(device)
    return None if free is None else free // 2


def state_bytes(engine: str, columns: TangentColumns, num_steps: int, num_params: int,
                itemsize: int, interval: int) -> int:
    """Bytes of an engine's state (module docstring): 2 (K + 1) P or 2 (S + 1) P numbers."""
    vectors = (2 * (len(columns) + 1) if engine == "forward"
               else 2 * (peak_states(num_steps, interval) + 1))
    return vectors * num_params * itemsize


def format_bytes(n: float) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"

"""What the step-cost benchmarks share (``bench/engine.py``, ``bench/gpu.py``,
``bench/reproducible.py``): random batches, timing that waits for the device, the schedule
whose steps they time, and the plain SGD steps every ratio is taken against.

Random data: a step's cost does not depend on the values.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

import fdshpo

LOSS = nn.functional.cross_entropy


def make_batches(num: int, batch: int, shape: tuple[int, ...], device: str, seed: int = 0,
                 classes: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``num`` (inputs, targets) pairs of ``batch`` standard-normal inputs shaped ``shape``."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=gen).to(device),
             torch.randint(0, classes, (batch,), generator=gen).to(device))
            for _ in range(num)]


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    """Wall seconds of ``fn()``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def schedule(horizon: int, lr_segments: int = 7) -> fdshpo.Schedule:
    """lr 0.01, momentum 0.9, weight decay 5e-4 over ``horizon`` steps, (n, 1, 1) segments."""
    return fdshpo.Schedule.constant(horizon, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                    segments={"lr": lr_segments, "momentum": 1,
                                              "weight_decay": 1})


def plain_steps(model: nn.Module, batches) -> None:
    """One ``torch.optim.SGD`` step per batch, momentum and weight decay on (as in FDS)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        LOSS(model(x), y).backward()
        opt.step()


def seconds_per_plain_step(model: nn.Module, batches, device: str) -> float:
    """Mean wall seconds of one :func:`plain_steps` step over ``batches``."""
    return timed(lambda: plain_steps(model, batches), device) / len(batches)

"""Fixed schedule shapes, as per-step values or a piecewise-constant fit.

For step t of a horizon T and peak value eta:

    constant   eta_t = eta
    step       eta_t = eta * gamma ** #{i: m_i * T <= t}      (milestones m = 0.5, 0.75; gamma 0.1)
    cosine     eta_t = eta * (1 + cos(pi * t / T)) / 2
    linear     eta_t = eta * (1 - t / T)                                   (linear decay to zero)

:func:`shape_values` gives the (T,) per-step values; :func:`fit_segments` the best
piecewise-constant approximation over n shared segments (the mean of each segment's steps, the
least-squares fit), i.e. the same segments FDS uses. A :class:`~fdshpo.Schedule` can also use a
shape as the base its segment values multiply (``Schedule(..., shapes={"lr": "linear"})``).
"""

from __future__ import annotations

import math

import torch

SHAPES: tuple[str, ...] = ("constant", "step", "cosine", "linear")


def shape_values(shape: str, num_steps: int, peak: float, gamma: float = 0.1,
                 milestones: tuple[float, ...] = (0.5, 0.75)) -> torch.Tensor:
    """(T,) float64 learning rates of ``shape`` with peak ``peak`` (equations above)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown schedule shape {shape!r}; known shapes are {list(SHAPES)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    t = torch.arange(num_steps, dtype=torch.float64)
    if shape == "constant":
        factor = torch.ones_like(t)
    elif shape == "step":
        drops = sum((t >= m * num_steps).to(torch.float64) for m in milestones)
        factor = gamma ** drops
    elif shape == "cosine":
        factor = (1 + torch.cos(math.pi * t / num_steps)) / 2
    else:
        factor = 1 - t / num_steps
    return peak * factor


def fit_segments(values: torch.Tensor, num_segments: int) -> torch.Tensor:
    """(n,) means of ``values`` over the n shared segments k(t) = floor(t * n / T)."""
    from .schedule import segment_start

    T = values.numel()
    if not 1 <= num_segments <= T:
        raise ValueError(f"num_segments must be in [1, {T}], got {num_segments}")
    bounds = [segment_start(k, num_segments, T) for k in range(num_segments + 1)]
    return torch.stack([values[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])])

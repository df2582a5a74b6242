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

SHAPES: tuple[str, ...] = ("constant", "step", "cosine", "linear")


def shape_factors(shape: str, num_steps: int, gamma: float = 0.1,
                  milestones: tuple[float, ...] = (0.5, 0.75)) -> list[float]:
    """The T factors s(t / T) of ``shape`` (the equations above with peak 1), as floats (no
    torch: plots and the torch-free CLI use it too)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown schedule shape {shape!r}; known shapes are {list(SHAPES)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    T = num_steps
    if shape == "constant":
        return [1.0] * T
    if shape == "step":
        return [gamma ** sum(t >= m * T for m in milestones) for t in range(T)]
    if shape == "cosine":
        return [(1 + math.cos(math.pi * t / T)) / 2 for t in range(T)]
    return [1 - t / T for t in range(T)]


def shape_values(shape: str, num_steps: int, peak: float, gamma: float = 0.1,
                 milestones: tuple[float, ...] = (0.5, 0.75)):
    """(T,) float64 tensor: peak times :func:`shape_factors` (the equations above)."""
    import torch

    factors = shape_factors(shape, num_steps, gamma, milestones)
    return peak * torch.tensor(factors, dtype=torch.float64)


def fit_segments(values, num_segments: int):
    """(n,) means of the (T,) tensor ``values`` over the n shared segments
    k(t) = floor(t * n / T)."""
    import torch

    from .segments import segment_start

    T = values.numel()
    if not 1 <= num_segments <= T:
        raise ValueError(f"num_segments must be in [1, {T}], got {num_segments}")
    bounds = [segment_start(k, num_segments, T) for k in range(num_segments + 1)]
    return torch.stack([values[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])])

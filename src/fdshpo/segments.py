"""The hyperparameter names and the sharing rule, in plain Python (no torch).

A hyperparameter with ``n`` segments over a horizon of ``T`` inner steps takes at step ``t`` the
value of segment

    k(t) = floor(t * n / T)                                            (0 <= t < T)

so segment ``k`` covers the steps ``ceil(k * T / n) <= t < ceil((k + 1) * T / n)``.
:mod:`fdshpo.schedule` builds on these; readers of stored runs (the CLI, plots, reports) use
them without importing torch.
"""

from __future__ import annotations

HYPERPARAMETERS: tuple[str, ...] = ("lr", "momentum", "weight_decay")


def segment_index(step: int, num_segments: int, num_steps: int) -> int:
    """k(t) = floor(t * n / T): the segment that step ``t`` of ``T`` uses among ``n``."""
    return step * num_segments // num_steps


def segment_start(segment: int, num_segments: int, num_steps: int) -> int:
    """First step of segment ``k``: the smallest t with floor(t * n / T) >= k, i.e. ceil(k*T/n)."""
    return -(-segment * num_steps // num_segments)

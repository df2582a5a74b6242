"""Shared piecewise-constant hyperparameter schedules.

A hyperparameter ``h`` with ``n_h`` segments over a horizon of ``T`` inner steps takes at step
``t`` the value of segment

    k_h(t) = floor(t * n_h / T)                                        (0 <= t < T)

so the segments are contiguous and near-equal (their ends may fall mid-epoch). Segment ``k``
starts at step ``ceil(k * T / n_h)``. Values are stored as float64 1-D tensors, one per
hyperparameter type; bounds ``[lower, upper]`` live here, in one place, and every value must lie
inside its bounds.

A hyperparameter may have a base shape s_h (:mod:`fdshpo.shapes`; default ``constant``, s = 1):
its value at step t is then

    h_t = lambda_{h, k_h(t)} * s_h(t / T)           e.g. linear: s(t / T) = 1 - t / T

so the learned segment values scale a fixed shape (a linear decay to zero, say) rather than
being the values themselves; d h_t / d lambda_{h, k} = s_h(t / T) on segment k
(:meth:`Schedule.scale`), and the shape stretches with the horizon.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .segments import HYPERPARAMETERS, segment_index, segment_start
from .shapes import SHAPES, shape_factors

__all__ = ["DEFAULT_BOUNDS", "HYPERPARAMETERS", "Schedule", "check_names", "segment_index",
           "segment_start"]

#: Default bounds: learning rate and weight decay non-negative, momentum in [0, 0.999].
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "lr": (0.0, math.inf),
    "momentum": (0.0, 0.999),
    "weight_decay": (0.0, math.inf),
}


def check_names(names: Sequence[str], what: str = "hyperparameter") -> None:
    """Raise ``ValueError`` naming any entry of ``names`` that is not a known hyperparameter."""
    unknown = [n for n in names if n not in HYPERPARAMETERS]
    if unknown:
        raise ValueError(
            f"unknown {what} name(s) {unknown}; known names are {list(HYPERPARAMETERS)}"
        )


def _as_values(name: str, raw) -> torch.Tensor:
    values = torch.as_tensor(raw, dtype=torch.float64).detach().clone().reshape(-1)
    if values.numel() == 0:
        raise ValueError(f"schedule values for {name!r} are empty; give at least one segment")
    if not torch.isfinite(values).all():
        raise ValueError(f"schedule values for {name!r} are not all finite: {values.tolist()}")
    return values


@dataclass(frozen=True)
class Schedule:
    """Piecewise-constant values of lr, momentum and weight_decay over ``num_steps`` steps.

    Args:
        num_steps: the horizon T (number of inner steps), >= 1.
        values: ``{name: 1-D tensor of segment values}`` for every name in ``HYPERPARAMETERS``.
        bounds: optional ``{name: (lower, upper)}`` overriding ``DEFAULT_BOUNDS``.
        shapes: optional ``{name: shape}`` base shapes (module docstring); default constant.

    Raises:
        ValueError: unknown or missing names, a segment count larger than the horizon,
            non-finite values, or a value outside its bounds.
    """

    num_steps: int
    values: Mapping[str, torch.Tensor]
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    shapes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.num_steps, int) or isinstance(self.num_steps, bool):
            raise TypeError(f"num_steps must be an int, got {type(self.num_steps).__name__}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {self.num_steps}")
        check_names(list(self.values))
        check_names(list(self.bounds), "bound")
        check_names(list(self.shapes), "shape")
        missing = [n for n in HYPERPARAMETERS if n not in self.values]
        if missing:
            raise ValueError(
                f"schedule is missing values for {missing}; give all of {list(HYPERPARAMETERS)}"
            )
        values = {n: _as_values(n, self.values[n]) for n in HYPERPARAMETERS}
        bounds = {n: tuple(float(b) for b in self.bounds.get(n, DEFAULT_BOUNDS[n]))
                  for n in HYPERPARAMETERS}
        for name in HYPERPARAMETERS:
            lower, upper = bounds[name]
            if not lower <= upper:
                raise ValueError(f"bounds for {name!r} are empty: lower {lower} > upper {upper}")
            n = values[name].numel()
            if n > self.num_steps:
                raise ValueError(
                    f"{name!r} has {n} segments but the horizon is only {self.num_steps} steps; "
                    f"use at most {self.num_steps} segments or a longer horizon"
                )
            outside = (values[name] < lower) | (values[name] > upper)
            if outside.any():
                raise ValueError(
                    f"{name!r} values {values[name].tolist()} lie outside the bounds "
                    f"[{lower}, {upper}]; change the initial value or widen the bounds"
                )
        shapes = {n: str(self.shapes.get(n, "constant")) for n in HYPERPARAMETERS}
        bad = {n: v for n, v in shapes.items() if v not in SHAPES}
        if bad:
            raise ValueError(f"unknown schedule shape(s) {bad}; known shapes are {list(SHAPES)}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "bounds", bounds)
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "_scales", {
            n: None if shape == "constant" else shape_factors(shape, self.num_steps)
            for n, shape in shapes.items()})

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def constant(
        cls,
        num_steps: int,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        segments: Mapping[str, int] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        shapes: Mapping[str, str] | None = None,
    ) -> Schedule:
        """A schedule whose every segment of each hyperparameter holds the given value.

        ``segments`` maps names to segment counts (default 1 each); ``shapes`` names base
        shapes (default constant).
        """
        segments = dict(segments or {})
        check_names(list(segments), "segment")
        for name, n in segments.items():
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"segments[{name!r}] must be a positive int, got {n!r}")
        init = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        values = {n: torch.full((segments.get(n, 1),), float(v), dtype=torch.float64)
                  for n, v in init.items()}
        return cls(num_steps=num_steps, values=values, bounds=dict(bounds or {}),
                   shapes=dict(shapes or {}))

    def with_values(self, values: Mapping[str, torch.Tensor]) -> Schedule:
        """The same horizon and bounds with some (or all) values replaced."""
        merged = {n: values.get(n, self.values[n]) for n in HYPERPARAMETERS}
        return Schedule(self.num_steps, merged, self.bounds, self.shapes)

    def stretched(self, num_steps: int) -> Schedule:
        """The same segment values and shapes over a new horizon (e.g. the retraining run's)."""
        return Schedule(num_steps, self.values, self.bounds, self.shapes)

    # -- reading -------------------------------------------------------------------------------
    @property
    def segments(self) -> dict[str, int]:
        """``{name: number of segments}``."""
        return {n: int(v.numel()) for n, v in self.values.items()}

    def segment(self, name: str, step: int) -> int:
        """Index of the segment of ``name`` active at ``step``."""
        self._check_step(step)
        return segment_index(step, self.values[name].numel(), self.num_steps)

    def at(self, step: int) -> dict[str, float]:
        """``{name: value}`` in force at inner step ``step`` (0 <= step < num_steps): the
        segment value times the base shape's scale there."""
        self._check_step(step)
        return {
            n: float(v[segment_index(step, v.numel(), self.num_steps)]) * self.scale(n, step)
            for n, v in self.values.items()
        }

    def scale(self, name: str, step: int) -> float:
        """s_h(t / T): the base shape's factor at ``step``, i.e. d h_t / d lambda_{h, k(t)}."""
        scales = self._scales[name]
        return 1.0 if scales is None else scales[step]

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} is outside the horizon [0, {self.num_steps})")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain, JSON-ready dict (infinite bounds become ``None``)."""
        return {
            "num_steps": self.num_steps,
            "values": {n: v.tolist() for n, v in self.values.items()},
            "bounds": {n: [None if math.isinf(b) else b for b in self.bounds[n]]
                       for n in HYPERPARAMETERS},
            "shapes": dict(self.shapes),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Schedule:
        """Inverse of :meth:`to_dict`; ``None`` bounds mean unbounded on that side."""
        for key in ("num_steps", "values"):
            if key not in data:
                raise ValueError(f"schedule dict is missing {key!r}; has {sorted(data)}")
        bounds = {}
        for name, (lower, upper) in dict(data.get("bounds") or {}).items():
            bounds[name] = (-math.inf if lower is None else float(lower),
                            math.inf if upper is None else float(upper))
        return cls(int(data["num_steps"]), dict(data["values"]), bounds,
                   dict(data.get("shapes") or {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.num_steps == other.num_steps and self.bounds == other.bounds
                and self.shapes == other.shapes
                and all(torch.equal(self.values[n], other.values[n]) for n in HYPERPARAMETERS))

    __hash__ = None  # mutable tensors inside: not hashable

    def __repr__(self) -> str:
        vals = ", ".join(f"{n}={[round(x, 6) for x in v.tolist()]}" for n, v in self.values.items())
        shapes = ", ".join(f"{n}: {v}" for n, v in self.shapes.items() if v != "constant")
        return f"Schedule(num_steps={self.num_steps}, {vals}" + (
            f", shapes={{{shapes}}})" if shapes else ")")

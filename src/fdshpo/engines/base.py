"""The engines' shared vocabulary: what an engine returns, which one ran and what each costs.

A leaf: it imports no sibling module, so every engine module (and the chooser) can import it
without a circle.

The K learned values (every segment of every learned hyperparameter) are indexed by
:class:`TangentColumns`; an engine accumulates the K hypergradients in that order and
:func:`assemble_result` turns them into ``{name: tensor shaped like schedule.values[name]}``.
Both engines watch the training losses with :func:`check_losses`, so a diverged run is reported
the same way whichever engine ran it. Also here: :class:`EngineChoice` (which engine ran and
why), :class:`EnginePrices` (what each engine's work costs, :data:`CALIBRATED_PRICES`), the
checks both engines run on their options, and reverse mode's schedule of stored states
(:func:`stored_steps`), which its prices need.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from ..schedule import HYPERPARAMETERS, Schedule, check_names, segment_start

if TYPE_CHECKING:
    from .flat import ParamLayout


@dataclass(frozen=True)
class TangentColumns:
    """Which learned value each of the K columns holds, columns sorted by their start step."""

    names: tuple[str, ...]
    segments: tuple[int, ...]
    starts: tuple[int, ...]

    @classmethod
    def of(cls, schedule: Schedule, learn: Sequence[str]) -> TangentColumns:
        cols = [(segment_start(k, n, schedule.num_steps), HYPERPARAMETERS.index(name), name, k)
                for name in learn
                for n in (schedule.segments[name],)
                for k in range(n)]
        cols.sort()
        return cls(tuple(c[2] for c in cols), tuple(c[3] for c in cols), tuple(c[0] for c in cols))

    def __len__(self) -> int:
        return len(self.names)

    def live(self, step: int) -> int:
        """Number of columns whose segment has started by ``step`` (they form a prefix)."""
        return bisect.bisect_right(self.starts, step)

    def live_steps(self, num_steps: int) -> int:
        """sum_t k_t over steps 0 .. T-1: the tangent-steps a forward-mode run carries."""
        return sum(self.live(t) for t in range(num_steps))

    def index(self, name: str, segment: int) -> int:
        for i, (n, k) in enumerate(zip(self.names, self.segments)):
            if n == name and k == segment:
                return i
        raise KeyError((name, segment))

    def table(self) -> dict[str, list[int]]:
        """``{name: [column of segment 0, column of segment 1, ...]}`` for each learned name."""
        table: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            table.setdefault(name, []).append(i)  # a name's segments start in order
        return table

    def split(self, values: torch.Tensor, schedule: Schedule) -> dict[str, torch.Tensor]:
        """(K,) per-column values -> ``{name: float64 CPU tensor of its segments}``."""
        values = values.to("cpu", torch.float64)
        out = {name: torch.zeros(schedule.segments[name], dtype=torch.float64)
               for name in dict.fromkeys(self.names)}
        for i, (name, k) in enumerate(zip(self.names, self.segments)):
            out[name][k] = values[i]
        return out


@dataclass(frozen=True)
class HypergradientResult:
    """Validation loss at theta_T and its exact gradient w.r.t. every learned segment value.

    ``grads[name]`` is a float64 CPU tensor shaped like ``schedule.values[name]``;
    ``train_losses`` the (T,) training losses; ``params`` theta_T by parameter name;
    ``engine`` which engine computed it and why (:class:`fdshpo.engines.choose.EngineChoice`; None
    for
    results read back from a store that did not record it).
    """

    val_loss: float
    grads: dict[str, torch.Tensor]
    train_losses: torch.Tensor
    params: dict[str, torch.Tensor]
    engine: EngineChoice | None = None


def check_losses(losses: torch.Tensor, since: int, upto: int, schedule: Schedule) -> None:
    """Raise :class:`InnerRunDiverged` naming the first non-finite loss in ``losses[since:upto]``
    (one device sync)."""
    finite = torch.isfinite(losses[since:upto])
    if bool(finite.all()):
        return
    first = since + int((~finite).nonzero()[0])
    hp = schedule.at(first)
    raise InnerRunDiverged(
        f"the inner run diverged at step {first} of {schedule.num_steps}: training loss "
        f"{losses[first].item()} with lr={hp['lr']:.4g}, momentum={hp['momentum']:.4g}, "
        f"weight_decay={hp['weight_decay']:.4g}; lower the learning rate or its upper bound",
        first, hp)


def assemble_result(val_loss: torch.Tensor, hyper: torch.Tensor, columns: TangentColumns,
                    schedule: Schedule, train_losses: torch.Tensor, theta: torch.Tensor,
                    layout: ParamLayout, engine: EngineChoice | None = None
                    ) -> HypergradientResult:
    """The result from the K hypergradients in column order; raises :class:`InnerRunDiverged`
    when the validation loss or a hypergradient is not finite."""
    val = float(val_loss)
    if not (bool(torch.isfinite(hyper).all()) and torch.isfinite(torch.tensor(val))):
        raise InnerRunDiverged(
            f"the validation loss ({val}) or hypergradient is not finite although every "
            "training loss was; the run is numerically unstable: lower the learning rate",
            None, None)
    params = {n: p.detach().clone() for n, p in layout.unflatten(theta).items()}
    return HypergradientResult(val, columns.split(hyper, schedule),
                               train_losses.detach().cpu(), params, engine)


class InnerRunDiverged(FloatingPointError):
    """An inner run's loss (or, in an FDS run, its hypergradient) became non-finite.

    Attributes: ``step`` (first inner step with a non-finite training loss, or None when the
    validation loss or hypergradient is what failed) and ``hyperparameters`` in force there.
    """

    def __init__(self, message: str, step: int | None, hyperparameters: dict[str, float] | None):
        super().__init__(message)
        self.step = step
        self.hyperparameters = hyperparameters

    def to_dict(self) -> dict:
        """``{"step", "hyperparameters", "message"}``: what a record says of the divergence."""
        return {"step": self.step, "hyperparameters": self.hyperparameters,
                "message": str(self)}


HVP_MODES = ("auto", "reverse", "forward")


def resolve_hvp(hvp: str, device: torch.device) -> str:
    """The HVP form for ``hvp`` on ``device``: "auto" is reverse-over-reverse on CPU and
    forward-over-reverse on CUDA. Raises ValueError for an unknown mode."""
    if hvp not in HVP_MODES:
        raise ValueError(f"hvp must be one of {list(HVP_MODES)}, got {hvp!r}")
    if hvp == "auto":
        return "forward" if device.type == "cuda" else "reverse"
    return hvp


def checked_learn(learn: Sequence[str]) -> tuple[str, ...]:
    """``learn`` as a tuple; ValueError when empty, unknown or repeated."""
    if isinstance(learn, str) or not learn:
        raise ValueError(f"learn must name at least one of {list(HYPERPARAMETERS)}")
    learn = tuple(learn)
    check_names(learn)
    if len(set(learn)) != len(learn):
        raise ValueError(f"learn names a hyperparameter twice: {list(learn)}")
    return learn


def check_clamp(name: str, clamp: float | None) -> None:
    if clamp is not None and not clamp > 0:
        raise ValueError(f"{name} must be positive or None, got {clamp}")


def clamp_mask(grad: torch.Tensor, clamp: float) -> torch.Tensor:
    """m = [-c <= g <= c] in g's dtype: the derivative of clamp(g, -c, c) (torch's convention)."""
    return ((grad >= -clamp) & (grad <= clamp)).to(grad.dtype)


def default_interval(num_steps: int) -> int:
    """ceil(sqrt(T)): the interval that makes the stored states O(sqrt(T))."""
    return math.isqrt(num_steps - 1) + 1


def checked_interval(recompute_every: int | None, num_steps: int) -> int:
    """The interval for ``recompute_every`` (None: the default; at most T); ValueError unless
    a positive int or None."""
    if recompute_every is None:
        return default_interval(num_steps)
    if (isinstance(recompute_every, bool) or not isinstance(recompute_every, int)
            or recompute_every < 1):
        raise ValueError(f"recompute_every must be a positive int (steps between stored "
                         f"states) or None, got {recompute_every!r}")
    return min(recompute_every, num_steps)


def stored_steps(num_steps: int, interval: int) -> list[int]:
    """Steps whose state the forward sweep keeps: multiples of the interval, every step of the
    last stretch, and T."""
    last = (num_steps - 1) // interval * interval
    return sorted(set(range(0, num_steps, interval)) | set(range(last, num_steps + 1)))


def recomputed_steps(num_steps: int, interval: int) -> int:
    """Number of gradient steps the backward sweep recomputes (states not stored)."""
    kept = stored_steps(num_steps, interval)
    return sum(b - a - 1 for a, b in zip(kept, kept[1:]))


def peak_states(num_steps: int, interval: int) -> int:
    """Most (theta, v) pairs held at once: the ones the forward sweep stores. The backward sweep
    frees each state after its step, so a recomputed stretch (at most k - 1 states, plus the
    stored state at its end) never holds more than the last stretch it freed before."""
    return len(stored_steps(num_steps, interval))


@dataclass(frozen=True)
class EnginePrices:
    """What each engine's work costs, in one unit (seconds, or plain SGD steps).

    ``forward_base`` + ``per_tangent`` * k: a forward-mode step with k live tangents;
    ``reverse_step``: a reverse-mode step (forward-sweep gradient + backward gradient and HVP);
    ``recompute``: one gradient step recomputed by the backward sweep. Prices measured before
    reverse mode existed have neither reverse price (None): they can price only forward mode.
    The one spelling of these four prices: a comparison's cost model
    (:class:`fdshpo.baselines.budget.CostModel`) holds one.
    """

    forward_base: float
    per_tangent: float
    reverse_step: float | None = None
    recompute: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and not value >= 0:
                raise ValueError(f"engine price {name} must be non-negative, got {value}")
        if (self.reverse_step is None) != (self.recompute is None):
            raise ValueError("give both reverse-mode prices (reverse_step and recompute) or "
                             "neither")

    @property
    def has_reverse(self) -> bool:
        """Whether these prices can price a reverse-mode run."""
        return self.reverse_step is not None

    def forward_step(self, live: int) -> float:
        """One forward-mode step with ``live`` live tangents: forward_base + per_tangent * k."""
        return self.forward_base + self.per_tangent * live

    def forward_cost(self, columns: TangentColumns, num_steps: int) -> float:
        """A forward-mode run: T * forward_base + per_tangent * sum_t k_t."""
        return num_steps * self.forward_base + self.per_tangent * columns.live_steps(num_steps)

    def reverse_cost(self, num_steps: int, interval: int) -> float:
        """A reverse-mode run: T * reverse_step + recompute * R(T, k). ValueError without
        reverse-mode prices."""
        if not self.has_reverse:
            raise ValueError("these prices have no reverse-mode prices; measure them again "
                             "(fdshpo.baselines.budget.calibrate) to price reverse mode")
        return (num_steps * self.reverse_step
                + self.recompute * recomputed_steps(num_steps, interval))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> EnginePrices:
        return cls(**{k: None if data.get(k) is None else float(data[k])
                      for k in cls.__dataclass_fields__ if k in data})


#: ``auto``'s default prices per device type, in plain SGD steps, fitted by
#: ``bench/engine.py --calibrate`` (see ``bench/results/engine.md``; CUDA: from the H200 runs).
CALIBRATED_PRICES = {
    "cpu": EnginePrices(forward_base=1.6, per_tangent=1.1, reverse_step=3.9, recompute=1.2),
    "cuda": EnginePrices(forward_base=6.3, per_tangent=0.39, reverse_step=7.8, recompute=1.1),
}


@dataclass(frozen=True)
class EngineChoice:
    """Which engine ran and why: ``engine`` ("forward"/"reverse"), the ``requested`` option,
    a one-line ``reason``, reverse mode's ``recompute_every``, the predicted run ``cost`` (in
    the prices' unit) and state ``memory`` bytes per engine, and the ``prices`` used."""

    engine: str
    requested: str
    reason: str
    recompute_every: int | None = None
    cost: dict[str, float] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    prices: EnginePrices | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["prices"] = None if self.prices is None else self.prices.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> EngineChoice:
        prices = data.get("prices")
        return cls(data["engine"], data["requested"], data["reason"],
                   data.get("recompute_every"), dict(data.get("cost") or {}),
                   {k: int(v) for k, v in (data.get("memory") or {}).items()},
                   None if prices is None else EnginePrices.from_dict(prices))


def ran_out(step: int, num_steps: int, what: str = "train_batches") -> ValueError:
    """The batches (``what``) ended after ``step`` of the schedule's ``num_steps`` steps; the
    same words for every engine and for plain training."""
    return ValueError(f"{what} ran out after {step} steps but the schedule has "
                      f"{num_steps} steps; give exactly one batch per inner step")


def too_many(num_steps: int) -> ValueError:
    """``train_batches`` holds more batches than the schedule's ``num_steps`` steps."""
    return ValueError(f"train_batches yields more than the schedule's {num_steps} steps; give "
                      "exactly one batch per inner step")

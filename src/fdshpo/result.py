"""What an exact engine returns, and the bookkeeping both engines share.

The K learned values (every segment of every learned hyperparameter) are indexed by
:class:`TangentColumns`; an engine accumulates the K hypergradients in that order and
:func:`assemble_result` turns them into ``{name: tensor shaped like schedule.values[name]}``.
Both engines watch the training losses with :func:`check_losses`, so a diverged run is reported
the same way whichever engine ran it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .flat import ParamLayout
from .inner import InnerRunDiverged
from .schedule import HYPERPARAMETERS, Schedule, segment_start

if TYPE_CHECKING:
    from .engine import EngineChoice


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
    ``engine`` which engine computed it and why (:class:`fdshpo.engine.EngineChoice`; None for
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

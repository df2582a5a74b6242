"""The outer update: sign-based, Rprop-like steps on the schedule's learned values.

Every learned value lambda keeps a step size s and the sign of its previous hypergradient. Given a
new hypergradient h:

    if sign(h) == -previous sign:   s <- s * decay                  (decay = 0.5 by default)
    if sign(h) == +previous sign:   s <- min(s * grow, MAX_GROWTH * s_0)   (grow = 1 by default)

(Rprop's two factors; ``grow`` > 1 lets a value that keeps moving the same way travel further
each outer step, up to MAX_GROWTH times its initial step size s_0, so that a few outer steps can
cover a wide range; the paper's loop has grow = 1),

then a value takes one of two kinds of step (per hyperparameter name):

    additive          lambda <- clip(lambda - sign(h) * s, lower, upper)
    multiplicative    lr, weight_decay:   lambda     <- clip(lambda * exp(-sign(h) * s), ...)
                      momentum:           1 - lambda <- (1 - lambda) * exp(+sign(h) * s)

Multiplicative steps move a value by a factor e^s, so a value near 0 (a small learning rate or
weight decay, a momentum near 1) moves as fast, relatively, as a large one; momentum steps act on
1 - mu, so momentum 0 is no trap. A multiplicative learning rate or weight decay never reaches 0:
its lower bound must be positive.

With ``backtrack=True`` the update also sees the validation loss L_s of the schedule lambda_s
that produced h (a sign-descent line search; every outer step measures L_s anyway):

    if L_s <= L_best:   lambda_best, L_best, h_best <- lambda_s, L_s, h;  step as above
    else:               every step size s <- s * decay, and step again from lambda_best along
                        -sign(h_best) (h, measured at a worse point, is not used)

so the search never wanders away from the best schedule it has measured: a step that made the
loss worse is retried shorter (a diverged run, L_s = inf, too).

A value has converged when its step is small against the value (s < tol * |lambda| for additive
steps, s < tol for multiplicative ones, whose s is already relative), or when it sits at a bound
and its last hypergradient pushes it outwards (the constrained optimum of the sign descent: a
value held at a bound of 0 converges). The outer loop stops when all learned values have. Only
the sign of the hypergradient is used, never its magnitude. A zero hypergradient moves nothing
and keeps the previous sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..schedule import HYPERPARAMETERS, Schedule, check_names

#: Initial outer step sizes per hyperparameter type (the paper's reference values).
DEFAULT_STEP_SIZES: dict[str, float] = {"lr": 0.1, "momentum": 0.1, "weight_decay": 3e-4}
#: Step-size factor on a sign flip, and the convergence tolerance (the paper's values).
DEFAULT_DECAY: float = 0.5
DEFAULT_TOL: float = 0.05
#: Step-size factor when a hypergradient keeps its sign (the paper's loop: 1, no growth), and the
#: most a step size can grow, as a multiple of its initial size.
DEFAULT_GROW: float = 1.0
MAX_GROWTH: float = 10.0
#: The kinds of step a learned value can take (module docstring).
STEP_KINDS = ("additive", "multiplicative")


@dataclass(frozen=True)
class SignState:
    """Per learned value: current step size and last non-zero hypergradient sign (0 = none yet).

    With backtracking also the best validation loss seen, and the learned values and
    hypergradient signs of the schedule that had it (``best_values`` None before the first).
    """

    step_sizes: dict[str, torch.Tensor]
    signs: dict[str, torch.Tensor]
    count: int = 0
    best_loss: float = math.inf
    best_values: dict[str, torch.Tensor] | None = None
    best_signs: dict[str, torch.Tensor] | None = None

    def to_dict(self) -> dict:
        def lists(d):
            return None if d is None else {n: v.tolist() for n, v in d.items()}

        return {"step_sizes": lists(self.step_sizes), "signs": lists(self.signs),
                "count": self.count,
                "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                "best_values": lists(self.best_values), "best_signs": lists(self.best_signs)}

    @classmethod
    def from_dict(cls, data: Mapping) -> SignState:
        def tensors(d):
            return None if d is None else {n: torch.tensor(v, dtype=torch.float64)
                                           for n, v in d.items()}

        best = data.get("best_loss")
        return cls(tensors(data["step_sizes"]), tensors(data["signs"]), int(data.get("count", 0)),
                   math.inf if best is None else float(best), tensors(data.get("best_values")),
                   tensors(data.get("best_signs")))


class SignOptimizer:
    """Sign-based outer optimiser over a :class:`~fdshpo.Schedule`.

    Args:
        step_sizes: initial step size per learned hyperparameter name (all > 0); names absent
            from it are not learned. Defaults to :data:`DEFAULT_STEP_SIZES`. For a name with
            multiplicative steps it is the log of the factor (0.5: x1.65 per step).
        decay: factor applied to a value's step size when its hypergradient's sign flips, in (0, 1].
        tol: convergence tolerance (module docstring).
        multiplicative: the learned names that take multiplicative steps (the others additive).
        backtrack: step from the best schedule measured so far when the validation loss got
            worse (module docstring); ``update`` then needs ``val_loss``.
        grow: factor applied to a value's step size when its hypergradient keeps its sign, >= 1
            (capped at MAX_GROWTH times the initial step size; 1: the paper's loop).

    The optimiser is stateless; its state is the explicit :class:`SignState`.
    """

    def __init__(self, step_sizes: Mapping[str, float] | None = None,
                 decay: float = DEFAULT_DECAY, tol: float = DEFAULT_TOL,
                 multiplicative: Sequence[str] = (), backtrack: bool = False,
                 grow: float = DEFAULT_GROW) -> None:
        step_sizes = dict(DEFAULT_STEP_SIZES if step_sizes is None else step_sizes)
        if not step_sizes:
            raise ValueError("step_sizes is empty; give a step size for each learned name")
        check_names(list(step_sizes), "step size")
        for name, size in step_sizes.items():
            if not (isinstance(size, (int, float)) and math.isfinite(size) and size > 0):
                raise ValueError(
                    f"the outer step size for {name!r} must be a positive number, got {size!r}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        if not (isinstance(grow, (int, float)) and 1 <= grow <= MAX_GROWTH):
            raise ValueError(f"grow must be a number in [1, {MAX_GROWTH:g}] (1: step sizes never "
                             f"grow, the paper's loop), got {grow!r}")
        if isinstance(multiplicative, str):
            multiplicative = (multiplicative,)
        check_names(list(multiplicative), "multiplicative step")
        unlearned = [n for n in multiplicative if n not in step_sizes]
        if unlearned:
            raise ValueError(f"{unlearned} take multiplicative steps but are not learned; give "
                             "them a step size or drop them from multiplicative")
        self.step_sizes = {n: float(step_sizes[n]) for n in HYPERPARAMETERS if n in step_sizes}
        self.decay = float(decay)
        self.tol = float(tol)
        self.multiplicative = tuple(n for n in HYPERPARAMETERS if n in multiplicative)
        self.backtrack = bool(backtrack)
        self.grow = float(grow)

    @property
    def learn(self) -> tuple[str, ...]:
        """The names this optimiser updates, in canonical order."""
        return tuple(self.step_sizes)

    def step_kind(self, name: str) -> str:
        """``"multiplicative"`` or ``"additive"``: the kind of step ``name`` takes."""
        return STEP_KINDS[name in self.multiplicative]

    def check_schedule(self, schedule: Schedule) -> None:
        """Raise ValueError when a multiplicative step cannot work on ``schedule``'s bounds."""
        for name in self.multiplicative:
            lower, upper = schedule.bounds[name]
            if name == "momentum":
                if not upper < 1:
                    raise ValueError(f"momentum takes multiplicative steps on 1 - momentum, so "
                                     f"its upper bound must be below 1, got {upper}")
            elif not lower > 0:
                raise ValueError(
                    f"{name} takes multiplicative steps, which never reach 0: give it a positive "
                    f"lower bound (e.g. {name}: [1e-6, {upper:g}]), got {lower:g}")

    def init(self, schedule: Schedule) -> SignState:
        """Every learned value starts with its type's step size and no previous sign.

        Raises ValueError when a multiplicative step cannot work on the schedule's bounds.
        """
        self.check_schedule(schedule)
        sizes = {n: torch.full_like(schedule.values[n], s) for n, s in self.step_sizes.items()}
        signs = {n: torch.zeros_like(schedule.values[n]) for n in self.step_sizes}
        return SignState(sizes, signs, 0)

    def update(self, schedule: Schedule, hypergradients: Mapping[str, torch.Tensor],
               state: SignState, val_loss: float | None = None) -> tuple[Schedule, SignState]:
        """Apply one sign step; returns the new schedule and state (inputs are not modified).

        ``val_loss`` is the validation loss of ``schedule`` (needed with ``backtrack``).

        Raises:
            ValueError: a learned name is missing, a shape differs from the schedule's, or a
                hypergradient is non-finite (nothing is applied then); no ``val_loss`` with
                ``backtrack``.
        """
        grads = {}
        for name in self.step_sizes:
            if name not in hypergradients:
                raise ValueError(f"no hypergradient for learned hyperparameter {name!r}")
            g = torch.as_tensor(hypergradients[name], dtype=torch.float64).reshape(-1)
            if g.shape != schedule.values[name].shape:
                raise ValueError(
                    f"hypergradient for {name!r} has {g.numel()} entries but the schedule has "
                    f"{schedule.values[name].numel()} segments")
            bad = (~torch.isfinite(g)).nonzero().flatten().tolist()
            if bad:
                raise ValueError(
                    f"hypergradient for {name!r} is not finite at segment(s) {bad} ({g.tolist()});"
                    " the outer update was not applied")
            grads[name] = g
        if self.backtrack:
            if val_loss is None:
                raise ValueError("a backtracking SignOptimizer needs the validation loss of the "
                                 "schedule: update(schedule, hypergradients, state, val_loss)")
            if val_loss > state.best_loss:  # worse than the best: shorter steps from the best
                sizes = {n: v * self.decay for n, v in state.step_sizes.items()}
                best = schedule.with_values(state.best_values)
                values = {n: self._step(n, best, state.best_signs[n], sizes[n])
                          for n in self.step_sizes}
                return (schedule.with_values(values),
                        SignState(sizes, state.signs, state.count + 1, state.best_loss,
                                  state.best_values, state.best_signs))
        new_values, new_sizes, new_signs = {}, {}, {}
        for name, g in grads.items():
            sign = torch.sign(g)
            sizes = state.step_sizes[name]
            agreement = sign * state.signs[name]
            cap = MAX_GROWTH * self.step_sizes[name]
            grown = torch.where(sizes < cap, (sizes * self.grow).clamp(max=cap), sizes)
            sizes = torch.where(agreement < 0, sizes * self.decay,
                                torch.where(agreement > 0, grown, sizes))
            new_values[name] = self._step(name, schedule, sign, sizes)
            new_sizes[name] = sizes
            new_signs[name] = torch.where(sign != 0, sign, state.signs[name])
        best = (state.best_loss, state.best_values, state.best_signs)
        if self.backtrack:
            best = (float(val_loss), {n: schedule.values[n] for n in self.step_sizes}, new_signs)
        return (schedule.with_values(new_values),
                SignState(new_sizes, new_signs, state.count + 1, *best))

    def _step(self, name: str, schedule: Schedule, sign: torch.Tensor, sizes: torch.Tensor
              ) -> torch.Tensor:
        value = schedule.values[name]
        lower, upper = schedule.bounds[name]
        if name not in self.multiplicative:
            moved = value - sign * sizes
        elif name == "momentum":
            moved = 1 - (1 - value) * torch.exp(sign * sizes)
        else:
            moved = value * torch.exp(-sign * sizes)
        return moved.clamp(lower, upper)

    def converged_mask(self, schedule: Schedule, state: SignState) -> dict[str, torch.Tensor]:
        """Per learned value: its step is small (module docstring) or it is held at a bound."""
        mask = {}
        for name, sizes in state.step_sizes.items():
            value, sign = schedule.values[name], state.signs[name]
            lower, upper = schedule.bounds[name]
            held = ((value <= lower) & (sign > 0)) | ((value >= upper) & (sign < 0))
            scale = 1.0 if name in self.multiplicative else value.abs()
            mask[name] = (sizes < self.tol * scale) | held
        return mask

    def converged(self, schedule: Schedule, state: SignState) -> bool:
        """True when every learned value has converged."""
        return all(bool(m.all()) for m in self.converged_mask(schedule, state).values())

"""Forward-mode hypergradients of the validation loss through a whole SGD-momentum run (FDS).

For every learned segment value lambda keep the tangents Z = d theta / d lambda and
C = d v / d lambda (each of size P). With H_t the minibatch Hessian at theta_t, step t does

    C <- mu_t * C + H_t Z + omega_t * Z + [lambda is the active momentum value]     * s_t v_t
                                        + [lambda is the active weight-decay value] * s_t theta_t
    Z <- Z - eta_t * C_new - [lambda is the active learning-rate value] * s_t v_{t+1}

(s_t = d h_t / d lambda: 1, or the base shape's factor of a shaped hyperparameter,
:meth:`fdshpo.Schedule.scale`) alongside the inner step of :mod:`fdshpo.engines.inner`, and at the
end

    hypergradient[lambda] = grad L(theta_T) . Z_T[lambda]                (exact; no rescaling)

with L the validation objective of :mod:`fdshpo.engines.objective` (the example-weighted mean over
the
whole split). With ``grad_clamp=c`` the step uses the clamped gradient clamp(g_t, -c, c), as
``torch.nn.utils.clip_grad_value_`` before ``torch.optim.SGD`` does, and the tangent update
differentiates through the clamp: H_t Z becomes m_t * (H_t Z) with m_t = [-c <= g_t <= c]
(torch's derivative of clamp). ``hvp_clamp`` clamps H_t Z elementwise as the paper's reference
code does; that is not a derivative of anything and changes the hypergradients (off by default).

The K learned values are the columns of a (K, P) matrix, ordered by the step their segment
starts, so the columns that are live at step t are a prefix: columns of segments that have not
started are exactly zero and are neither stored in the HVP pass nor updated. The Hessian-vector
products of all live columns are computed together in one batched pass, reverse-over-reverse or
forward-over-reverse (:mod:`fdshpo.engines.objective`); ``hvp="auto"`` (the default) picks
reverse-over-reverse on CPU and forward-over-reverse on CUDA, the faster form measured on each.
A step costs about one HVP per live column; memory is O(P * K) and does not grow with the
horizon. Measured costs of both engines: ``bench/results/engine.md``.

BatchNorm runs in train mode (batch statistics) for the training and the validation batches,
as in the paper's code; running statistics do not enter the hypergradient and are not tracked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from ..reproducible import aligned
from ..schedule import HYPERPARAMETERS, Schedule
from .base import (
    HypergradientResult,
    assemble_result,
    check_clamp,
    clamp_mask,
    ran_out,
    resolve_hvp,
    too_many,
)
from .core import ExactEngine
from .inner import LossFn, sgd_momentum_update
from .objective import Batch
from .replay import stream_from

if TYPE_CHECKING:
    from .base import EngineChoice


def _add_scaled(target: torch.Tensor, x: torch.Tensor, scale: float) -> None:
    """target += scale * x in place; d h_t / d lambda = scale for a shaped hyperparameter."""
    if scale == 1.0:
        target.add_(x)
    elif scale == -1.0:
        target.sub_(x)
    else:
        target.add_(x, alpha=scale)


class ForwardState(NamedTuple):
    """Everything an FDS inner run carries: O(P * K) memory, independent of the horizon.

    ``theta``/``velocity``: (P,); ``Z``/``C``: (K, P) tangents; ``train_losses``: (T,) losses of
    the steps done so far; ``step``: the next inner step. Passing a state to
    :meth:`ForwardEngine.advance` donates its tensors (they are updated in place).
    """

    step: int
    theta: torch.Tensor
    velocity: torch.Tensor
    Z: torch.Tensor
    C: torch.Tensor
    train_losses: torch.Tensor

    engine = "forward"

    @property
    def total_steps(self) -> int:
        """The value of ``step`` when the run is done (T)."""
        return len(self.train_losses)

    def to_tensors(self) -> dict:
        """The state as a dict of CPU tensors and ints (for ``torch.save``)."""
        return {"step": int(self.step), "theta": self.theta.cpu(),
                "velocity": self.velocity.cpu(), "Z": self.Z.cpu(), "C": self.C.cpu(),
                "train_losses": self.train_losses.cpu()}

    @classmethod
    def from_tensors(cls, data: dict, device="cpu") -> ForwardState:
        """The state of :meth:`to_tensors`' dict on ``device``, every tensor 64-byte aligned."""
        return cls(int(data["step"]), *(aligned(data[k].to(device)) for k in
                                        ("theta", "velocity", "Z", "C", "train_losses")))


class ForwardEngine(ExactEngine):
    """Tangent propagation for one model, loss and schedule; pure methods over ForwardState.

    Args:
        model, loss_fn, schedule, learn, grad_clamp, check_every, group: as for
            :class:`~fdshpo.engines.core.ExactEngine`.
        hvp_clamp: clamp every element of H Z to [-c, c], as the paper's reference code does
            (not exact; default off).
        hvp: how the batched Hessian-vector products are formed: "reverse" (reverse-over-
            reverse), "forward" (forward-over-reverse) or "auto" (reverse on CPU, forward on
            CUDA; the default). The results agree to rounding.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        schedule: Schedule,
        learn: Sequence[str] = HYPERPARAMETERS,
        grad_clamp: float | None = None,
        hvp_clamp: float | None = None,
        check_every: int = 100,
        hvp: str = "auto",
        group=None,
    ) -> None:
        super().__init__(model, loss_fn, schedule, learn, grad_clamp, check_every, group)
        check_clamp("hvp_clamp", hvp_clamp)
        self.hvp_clamp = hvp_clamp
        self.hvp = resolve_hvp(hvp, self.device)

    # -- state transitions ---------------------------------------------------------------------
    def init(self, theta: torch.Tensor | None = None, velocity: torch.Tensor | None = None
             ) -> ForwardState:
        """theta_0 from the model (or ``theta``), v_0 = 0 (or ``velocity``), zero tangents."""
        K, P, T = len(self.columns), self.layout.size, self.schedule.num_steps
        zeros = dict(device=self.device, dtype=self.dtype)
        theta = self.objective.theta0 if theta is None else theta
        velocity = torch.zeros(P, **zeros) if velocity is None else velocity
        return ForwardState(0, theta.clone(), velocity.clone(), torch.zeros(K, P, **zeros),
                            torch.zeros(K, P, **zeros), torch.full((T,), float("nan"), **zeros))

    def step(self, state: ForwardState, inputs: torch.Tensor, targets: torch.Tensor
             ) -> ForwardState:
        """One inner step with its tangent update (the equations in the module docstring)."""
        t, theta, velocity, Z, C, losses = state
        if t >= self.schedule.num_steps:
            raise ValueError(f"the horizon of {self.schedule.num_steps} steps is already done")
        inputs, targets = self.objective.to_device(inputs, targets)
        hp = self.schedule.at(t)
        eta, mu, omega = hp["lr"], hp["momentum"], hp["weight_decay"]
        k = self.columns.live(t)
        Z_live, C_live = Z[:k], C[:k]
        grad, loss, hvps = self.grad_and_hvps(theta, Z_live, inputs, targets, t, self.hvp)
        if self.grad_clamp is not None:
            hvps = hvps * clamp_mask(grad, self.grad_clamp)
            grad = grad.clamp(-self.grad_clamp, self.grad_clamp)
        if self.hvp_clamp is not None:
            hvps = hvps.clamp(-self.hvp_clamp, self.hvp_clamp)
        new_theta, new_velocity = sgd_momentum_update(theta, velocity, grad, eta, mu, omega)
        C_live.mul_(mu).add_(hvps).add_(Z_live, alpha=omega)
        if "momentum" in self._column:
            _add_scaled(C_live[self._active("momentum", t)], velocity,
                        self.schedule.scale("momentum", t))
        if "weight_decay" in self._column:
            _add_scaled(C_live[self._active("weight_decay", t)], theta,
                        self.schedule.scale("weight_decay", t))
        Z_live.add_(C_live, alpha=-eta)
        if "lr" in self._column:
            _add_scaled(Z_live[self._active("lr", t)], new_velocity,
                        -self.schedule.scale("lr", t))
        losses[t] = loss.detach()
        t += 1
        if t % self.check_every == 0 or t == self.schedule.num_steps:
            self.check_losses(losses, max(0, t - self.check_every), t)
        return ForwardState(t, new_theta, new_velocity, Z, C, losses)

    def advance(
        self,
        state: ForwardState,
        batches: Iterable[Batch],
        until: int | None = None,
        on_step: Callable[[ForwardState], None] | None = None,
    ) -> ForwardState:
        """Run steps until ``until`` (default: the horizon), one batch from ``batches`` each.

        ``on_step(state)`` is called after every step (progress, checkpoints).
        Raises ValueError when ``batches`` runs out early.
        """
        until = self.schedule.num_steps if until is None else until
        iterator = iter(batches)
        while state.step < until:
            try:
                inputs, targets = next(iterator)
            except StopIteration:
                raise ran_out(state.step, self.schedule.num_steps) from None
            state = self.step(state, inputs, targets)
            if on_step is not None:
                on_step(state)
        return state

    def finish(self, state: ForwardState, val_batches: Iterable[Batch],
               choice: EngineChoice | None = None) -> HypergradientResult:
        """Validation loss at theta_T and hypergradient = grad L(theta_T) @ Z_T."""
        if state.step != self.schedule.num_steps:
            raise ValueError(
                f"the inner run is at step {state.step} of {self.schedule.num_steps}; "
                "advance it to the horizon before computing the hypergradient")
        val_loss, val_grad = self.validation(state.theta, val_batches)
        val_loss, hyper = self.agreed(val_loss, state.Z @ val_grad)
        return assemble_result(val_loss, hyper, self.columns, self.schedule,
                               state.train_losses, state.theta, self.layout, choice)

    def run(self, state: ForwardState, train_batches: Iterable[Batch],
            val_batches: Iterable[Batch],
            on_step: Callable[[ForwardState], None] | None = None,
            choice: EngineChoice | None = None) -> HypergradientResult:
        """From ``state`` to the result: the batches of steps before ``state.step`` are
        skipped, and ``train_batches`` must hold exactly one batch per step (ValueError)."""
        iterator = iter(stream_from(train_batches, state.step))
        state = self.advance(state, iterator, on_step=on_step)
        for _ in iterator:
            raise too_many(self.schedule.num_steps)
        return self.finish(state, val_batches, choice)

"""Forward-mode hypergradients of the validation loss through a whole SGD-momentum run (FDS).

For every learned segment value lambda keep the tangents Z = d theta / d lambda and
C = d v / d lambda (each of size P). With H_t the minibatch Hessian at theta_t, step t does

    C <- mu_t * C + H_t Z + omega_t * Z + [lambda is the active momentum value]     * s_t v_t
                                        + [lambda is the active weight-decay value] * s_t theta_t
    Z <- Z - eta_t * C_new - [lambda is the active learning-rate value] * s_t v_{t+1}

(s_t = d h_t / d lambda: 1, or the base shape's factor of a shaped hyperparameter,
:meth:`fdshpo.Schedule.scale`)
alongside the inner step of :mod:`fdshpo.inner`, and at the end

    hypergradient[lambda] = grad L_val(theta_T) . Z_T[lambda]            (exact; no rescaling)

The K learned values are the columns of a (K, P) matrix, ordered by the step their segment
starts, so the columns that are live at step t are a prefix: columns of segments that have not
started are exactly zero and are neither stored in the HVP pass nor updated. The Hessian-vector
products of all live columns are computed together in one batched pass, in one of two exact
forms: reverse-over-reverse (one ``vjp`` of ``grad``, then ``vmap`` of its pullback over the K
live columns; H is symmetric so the pullback of Z is H Z) or forward-over-reverse (``vmap`` over
``jvp`` of ``grad``). ``hvp="auto"`` (the default) picks reverse-over-reverse on CPU and
forward-over-reverse on CUDA, the faster form measured on each (bench/results/engine.md: LeNet-5
on 2 CPU threads 7.8 vs 8.9 plain steps per FDS step; WRN-16-1 on an H200 9.2-10.2 vs 12.4-12.7).
Memory is O(P * K) and does not grow with the horizon.

BatchNorm runs in train mode (batch statistics) for the training and the validation batches,
as in the paper's code; running statistics do not enter the hypergradient and are not tracked.
"""

from __future__ import annotations

import bisect
import copy
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.func import (
    functional_call,
    grad_and_value,
    jvp,
    replace_all_batch_norm_modules_,
    vjp,
    vmap,
)

from .flat import ParamLayout
from .inner import InnerRunDiverged, LossFn, sgd_momentum_update
from .schedule import HYPERPARAMETERS, Schedule, check_names, segment_start

Batch = tuple[torch.Tensor, torch.Tensor]
HVP_MODES = ("auto", "reverse", "forward")

# torch loads its forward-AD decompositions through the deprecated torch.jit.script on first use
# and warns about its own internals; load them here, quietly, once.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    getattr(torch.autograd.forward_ad, "_maybe_load_decompositions", lambda: None)()


@dataclass(frozen=True)
class TangentColumns:
    """Which learned value each tangent column holds, columns sorted by their start step."""

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


@dataclass(frozen=True)
class HypergradientResult:
    """Validation loss at theta_T and its exact gradient w.r.t. every learned segment value.

    ``grads[name]`` is a float64 CPU tensor shaped like ``schedule.values[name]``;
    ``train_losses`` the (T,) training losses; ``params`` theta_T by parameter name.
    """

    val_loss: float
    grads: dict[str, torch.Tensor]
    train_losses: torch.Tensor
    params: dict[str, torch.Tensor]


class ForwardEngine:
    """Tangent propagation for one model, loss and schedule; pure methods over ForwardState.

    Args:
        model: the network; its parameters are theta_0. It is deep-copied, never modified.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        schedule: the hyperparameter schedule over the horizon.
        learn: names whose segment values get hypergradients.
        grad_clamp / hvp_clamp: optional elementwise clamps of the gradient / of H Z to
            [-c, c] as in the paper's reference code (default off: exact hypergradients).
        check_every: steps between checks for a non-finite training loss (each check syncs).
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
    ) -> None:
        learn = tuple(learn)
        if hvp not in HVP_MODES:
            raise ValueError(f"hvp must be one of {list(HVP_MODES)}, got {hvp!r}")
        if isinstance(learn, str) or not learn:
            raise ValueError(f"learn must name at least one of {list(HYPERPARAMETERS)}")
        check_names(learn)
        if len(set(learn)) != len(learn):
            raise ValueError(f"learn names a hyperparameter twice: {list(learn)}")
        for name, clamp in (("grad_clamp", grad_clamp), ("hvp_clamp", hvp_clamp)):
            if clamp is not None and not clamp > 0:
                raise ValueError(f"{name} must be positive or None, got {clamp}")
        self.schedule = schedule
        self.learn = learn
        self.loss_fn = loss_fn
        self.layout = ParamLayout.of(model)
        self.columns = TangentColumns.of(schedule, learn)
        self.grad_clamp, self.hvp_clamp = grad_clamp, hvp_clamp
        self.check_every = max(1, int(check_every))
        self.hvp = hvp
        template = next(p for p in model.parameters() if p.requires_grad)
        self.device, self.dtype = template.device, template.dtype
        if self.hvp == "auto":
            self.hvp = "forward" if self.device.type == "cuda" else "reverse"
        self._theta0 = self.layout.flatten_module(model)
        stateless = copy.deepcopy(model).train()
        replace_all_batch_norm_modules_(stateless)  # batch statistics, no running-stat writes
        for p in stateless.parameters():
            p.requires_grad_(False)
        self._model = stateless
        self._grad_and_loss = grad_and_value(self._loss_at)
        # column of the active segment of each learned name, per segment index
        self._column = {name: [self.columns.index(name, k)
                               for k in range(schedule.segments[name])] for name in learn}

    # -- the differentiated function -----------------------------------------------------------
    def _loss_at(self, theta: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor):
        outputs = functional_call(self._model, self.layout.unflatten(theta), (inputs,))
        return self.loss_fn(outputs, targets)

    def _grad_and_hvps(self, theta, tangents, inputs, targets):
        """(g, loss, H @ tangents) with all K tangents (rows) in one batched pass."""

        def grad_and_loss(th):
            return self._grad_and_loss(th, inputs, targets)

        if self.hvp == "reverse":  # H symmetric: the pullback of grad at Z is H Z
            grad, pullback, loss = vjp(grad_and_loss, theta, has_aux=True)
            (hvps,) = vmap(pullback)(tangents)
            return grad, loss, hvps

        def grad_and_hvp(tangent):
            return jvp(grad_and_loss, (theta,), (tangent,))

        (grad, loss), (hvps, _) = vmap(grad_and_hvp)(tangents)
        return grad[0], loss[0], hvps

    # -- state transitions ---------------------------------------------------------------------
    def init(self) -> ForwardState:
        """theta_0 from the model, v_0 = 0, all tangents zero, step 0."""
        K, P, T = len(self.columns), self.layout.size, self.schedule.num_steps
        zeros = dict(device=self.device, dtype=self.dtype)
        return ForwardState(0, self._theta0.clone(), torch.zeros(P, **zeros),
                            torch.zeros(K, P, **zeros), torch.zeros(K, P, **zeros),
                            torch.full((T,), float("nan"), **zeros))

    def step(self, state: ForwardState, inputs: torch.Tensor, targets: torch.Tensor
             ) -> ForwardState:
        """One inner step with its tangent update (the equations in the module docstring)."""
        t, theta, velocity, Z, C, losses = state
        if t >= self.schedule.num_steps:
            raise ValueError(f"the horizon of {self.schedule.num_steps} steps is already done")
        inputs = inputs.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        hp = self.schedule.at(t)
        eta, mu, omega = hp["lr"], hp["momentum"], hp["weight_decay"]
        k = self.columns.live(t)
        Z_live, C_live = Z[:k], C[:k]
        grad, loss, hvps = self._grad_and_hvps(theta, Z_live, inputs, targets)
        if self.grad_clamp is not None:
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
            self._check_losses(losses, t)
        return ForwardState(t, new_theta, new_velocity, Z, C, losses)

    def _active(self, name: str, step: int) -> int:
        return self._column[name][self.schedule.segment(name, step)]

    def _check_losses(self, losses: torch.Tensor, upto: int) -> None:
        since = max(0, upto - self.check_every)
        finite = torch.isfinite(losses[since:upto])
        if bool(finite.all()):
            return
        first = since + int((~finite).nonzero()[0])
        hp = self.schedule.at(first)
        raise InnerRunDiverged(
            f"the inner run diverged at step {first} of {self.schedule.num_steps}: training loss "
            f"{losses[first].item()} with lr={hp['lr']:.4g}, momentum={hp['momentum']:.4g}, "
            f"weight_decay={hp['weight_decay']:.4g}; lower the learning rate or its upper bound",
            first, hp)

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
                raise ValueError(
                    f"train_batches ran out after {state.step} steps but the schedule has "
                    f"{self.schedule.num_steps} steps; give exactly one batch per inner step"
                ) from None
            state = self.step(state, inputs, targets)
            if on_step is not None:
                on_step(state)
        return state

    def finish(self, state: ForwardState, val_batches: Iterable[Batch]) -> HypergradientResult:
        """Validation loss at theta_T and hypergradient = grad L_val(theta_T) @ Z_T."""
        if state.step != self.schedule.num_steps:
            raise ValueError(
                f"the inner run is at step {state.step} of {self.schedule.num_steps}; "
                "advance it to the horizon before computing the hypergradient")
        val_grad = torch.zeros_like(state.theta)
        val_loss = torch.zeros((), device=self.device, dtype=self.dtype)
        count = 0
        for inputs, targets in val_batches:
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            grad, loss = self._grad_and_loss(state.theta, inputs, targets)
            val_grad += grad
            val_loss += loss.detach()
            count += 1
        if count == 0:
            raise ValueError("val_batches is empty; give at least one validation batch")
        val_grad /= count
        val_loss = float(val_loss) / count
        hyper = (state.Z @ val_grad).to("cpu", torch.float64)
        grads = {name: torch.zeros(self.schedule.segments[name], dtype=torch.float64)
                 for name in self.learn}
        for i, (name, k) in enumerate(zip(self.columns.names, self.columns.segments)):
            grads[name][k] = hyper[i]
        if not (torch.isfinite(hyper).all() and torch.isfinite(torch.tensor(val_loss))):
            raise InnerRunDiverged(
                f"the validation loss ({val_loss}) or hypergradient is not finite although every "
                "training loss was; the run is numerically unstable: lower the learning rate",
                None, None)
        params = {n: p.detach().clone() for n, p in self.layout.unflatten(state.theta).items()}
        return HypergradientResult(val_loss, grads, state.train_losses.detach().cpu(), params)


def hypergradient(
    model: nn.Module,
    loss_fn: LossFn,
    train_batches: Iterable[Batch],
    val_batches: Iterable[Batch],
    schedule: Schedule,
    learn: Sequence[str] = HYPERPARAMETERS,
    *,
    grad_clamp: float | None = None,
    hvp_clamp: float | None = None,
    on_step: Callable[[ForwardState], None] | None = None,
    hvp: str = "auto",
) -> HypergradientResult:
    """Exact hypergradients of the mean validation loss w.r.t. the learned segment values.

    Runs ``schedule.num_steps`` SGD-momentum steps from the model's parameters, one batch of
    ``train_batches`` per step (any iterable, a generator too; the trajectory is not stored), then
    returns ``HypergradientResult(val_loss, grads, ...)`` with ``grads[name]`` shaped like
    ``schedule.values[name]`` for each name in ``learn``. The model is not modified.
    ``grad_clamp`` / ``hvp_clamp`` / ``hvp`` are :class:`ForwardEngine`'s options.

    Raises:
        ValueError: ``train_batches`` does not yield exactly ``num_steps`` batches, an empty
            ``val_batches``, or unknown names in ``learn``.
        InnerRunDiverged: the training loss, validation loss or hypergradient is non-finite
            (the message names the step and the hyperparameters in force).
    """
    engine = ForwardEngine(model, loss_fn, schedule, learn, grad_clamp, hvp_clamp, hvp=hvp)
    iterator = iter(train_batches)
    state = engine.advance(engine.init(), iterator, on_step=on_step)
    for _ in iterator:
        raise ValueError(
            f"train_batches yields more than the schedule's {schedule.num_steps} steps; "
            "give exactly one batch per inner step")
    return engine.finish(state, val_batches)

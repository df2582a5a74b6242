"""Checkpointed reverse-mode hypergradients: the same exact values as forward mode, at a cost
that does not depend on the number K of learned values.

Forward sweep, t = 0 .. T-1 (the inner step of :mod:`fdshpo.engines.inner`; g~_t = clamp(g_t, -c, c)
with ``grad_clamp=c``, else g_t):

    v_{t+1}     = mu_t v_t + g~_t + omega_t theta_t
    theta_{t+1} = theta_t - eta_t v_{t+1}

storing (theta_t, v_t) at every multiple of the interval k (``recompute_every``, default
ceil(sqrt(T))), at every step of the last stretch, and at T. Then L = L(theta_T), the validation
objective of :mod:`fdshpo.engines.objective`, and the adjoints (a_bar = dL/da through everything
after a):

    theta_bar_T = grad L(theta_T),   v_bar_T = 0
    for t = T-1 .. 0, with u_t = v_bar_{t+1} - eta_t theta_bar_{t+1} (the adjoint of v_{t+1}):
        dL/d eta_t   = -theta_bar_{t+1} . v_{t+1}
        dL/d mu_t    =  u_t . v_t
        dL/d omega_t =  u_t . theta_t
        v_bar_t      =  mu_t u_t
        theta_bar_t  =  theta_bar_{t+1} + omega_t u_t + H_t (m_t * u_t)

with H_t the minibatch Hessian at theta_t (one Hessian-vector product per step) and
m_t = [-c <= g_t <= c] the derivative of the clamp (1 without ``grad_clamp``). A learned value
lambda_{h,k} sets h_t = lambda_{h,k} s_h(t/T) on the steps t of its segment (s_h = 1, or the
base shape's factor of a shaped hyperparameter, :meth:`fdshpo.Schedule.scale`), so it gets

    dL/d lambda_{h,k} = sum over t in segment k of  s_h(t/T) dL/d h_t.

Backward sweep: one stretch between stored states at a time, from the end: recompute the
stretch's states from the stored one at its start (the same operations on the same batches, so
the same values bit for bit on the CPU), then step backwards through it. Work per inner step:
one gradient forward, one gradient + HVP backward, and one recomputed gradient for the steps
outside the last stretch that were not stored (none with ``recompute_every=1``). Memory:
at most ceil(T/k) + k states of 2P numbers (:func:`peak_states`), whatever K is; forward mode
needs 2KP instead.

The training batches are read again, backwards (:class:`fdshpo.engines.replay.BatchReplay`): pass a
list, a :class:`~fdshpo.data.ShuffledBatches` or another iterable that repeats itself; batches
read again are checked against fingerprints taken on the forward sweep. BatchNorm runs in train
mode with batch statistics, as in :mod:`fdshpo.engines.forward`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from ..reproducible import aligned, deterministic_kernels
from ..schedule import HYPERPARAMETERS, Schedule
from .base import (
    HypergradientResult,
    assemble_result,
    checked_interval,
    clamp_mask,
    default_interval,
    ran_out,
    resolve_hvp,
    stored_steps,
    too_many,
)
from .core import ExactEngine
from .inner import LossFn, sgd_momentum_update
from .objective import Batch
from .replay import BatchReplay, ReplayError, fingerprint, mismatch_error

if TYPE_CHECKING:
    from .base import EngineChoice


class ReverseState(NamedTuple):
    """Where a reverse-mode run stands; ``step`` counts progress from 0 to 2T.

    ``step`` <= T: forward steps done (``theta``/``velocity`` are theta_step, v_step); at T the
    validation objective is evaluated; T + j: j backward steps done (the next one is inner step
    T - 1 - j). ``stored``: {inner step: (theta, v)} trajectory states kept for the backward
    sweep; ``train_losses`` (T,); ``fingerprints`` (T, 3) of the batches; ``val_loss`` L(theta_T)
    (NaN before T); ``theta_bar``/``velocity_bar`` (P,) adjoints; ``hyper`` (K,) float64
    hypergradients so far, in :class:`~fdshpo.engines.base.TangentColumns` order. Passing a state to
    :meth:`ReverseEngine.advance` donates its tensors and ``stored``.
    """

    step: int
    theta: torch.Tensor
    velocity: torch.Tensor
    stored: dict[int, tuple[torch.Tensor, torch.Tensor]]
    train_losses: torch.Tensor
    fingerprints: torch.Tensor
    val_loss: torch.Tensor
    theta_bar: torch.Tensor
    velocity_bar: torch.Tensor
    hyper: torch.Tensor

    engine = "reverse"

    @property
    def total_steps(self) -> int:
        """The value of ``step`` when the run is done (2T)."""
        return 2 * len(self.train_losses)

    def to_tensors(self) -> dict:
        """The state as CPU tensors (for ``torch.save``). Of the stored trajectory states only
        step 0, the multiples of ceil(sqrt(T)) and the newest are kept: the backward sweep
        recomputes the others, bit for bit, so a checkpoint stays O(sqrt(T) P)."""
        every = default_interval(len(self.train_losses))
        newest = max(self.stored, default=0)
        kept = [t for t in sorted(self.stored) if t % every == 0 or t == newest]
        data = {k: getattr(self, k).cpu() for k in
                ("theta", "velocity", "train_losses", "fingerprints", "val_loss", "theta_bar",
                 "velocity_bar", "hyper")}
        data.update(step=int(self.step), stored_steps=kept,
                    stored_theta=torch.stack([self.stored[t][0].cpu() for t in kept]
                                             or [self.theta[:0].cpu()]),
                    stored_velocity=torch.stack([self.stored[t][1].cpu() for t in kept]
                                                or [self.velocity[:0].cpu()]))
        return data

    @classmethod
    def from_tensors(cls, data: dict, device="cpu") -> ReverseState:
        """The state of :meth:`to_tensors`' dict on ``device``; every tensor 64-byte aligned
        (a stored state is a row of a stacked tensor there), as in an uninterrupted run."""
        def load(tensor):
            return aligned(tensor.to(device))

        stored = {int(t): (load(th), load(v)) for t, th, v in
                  zip(data["stored_steps"], data["stored_theta"], data["stored_velocity"])}
        return cls(int(data["step"]), load(data["theta"]), load(data["velocity"]), stored,
                   *(load(data[k]) for k in ("train_losses", "fingerprints", "val_loss",
                                             "theta_bar", "velocity_bar", "hyper")))


class ReverseEngine(ExactEngine):
    """Checkpointed reverse mode for one model, loss and schedule (module docstring).

    Args:
        model, loss_fn, schedule, learn, grad_clamp, check_every, group: as for
            :class:`~fdshpo.engines.core.ExactEngine`.
        hvp: as for :class:`~fdshpo.engines.forward.ForwardEngine` (it forms the one HVP per step;
            with ``grad_clamp`` it is always reverse-over-reverse, which gives the gradient,
            hence the clamp's mask, before the product).
        recompute_every: the interval k between stored states (default ceil(sqrt(T)));
            1 stores every state and recomputes nothing (memory O(T P)).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        schedule: Schedule,
        learn: Sequence[str] = HYPERPARAMETERS,
        grad_clamp: float | None = None,
        check_every: int = 100,
        hvp: str = "auto",
        recompute_every: int | None = None,
        group=None,
    ) -> None:
        T = schedule.num_steps
        self.interval = checked_interval(recompute_every, T)
        super().__init__(model, loss_fn, schedule, learn, grad_clamp, check_every, group)
        self.hvp = "reverse" if grad_clamp is not None else resolve_hvp(hvp, self.device)
        self._keep = set(stored_steps(T, self.interval))

    # -- state transitions ---------------------------------------------------------------------
    def init(self, theta: torch.Tensor | None = None, velocity: torch.Tensor | None = None
             ) -> ReverseState:
        """theta_0 from the model (or ``theta``), v_0 = 0 (or ``velocity``), nothing else yet."""
        P, T = self.layout.size, self.schedule.num_steps
        zeros = dict(device=self.device, dtype=self.dtype)
        theta = (self.objective.theta0 if theta is None else theta).clone()
        velocity = torch.zeros(P, **zeros) if velocity is None else velocity.clone()
        return ReverseState(0, theta, velocity, {0: (theta, velocity)},
                            torch.full((T,), float("nan"), **zeros),
                            torch.zeros(T, 3, device=self.device, dtype=torch.float64),
                            torch.full((), float("nan"), **zeros), torch.zeros(P, **zeros),
                            torch.zeros(P, **zeros),
                            torch.zeros(len(self.columns), device=self.device,
                                        dtype=torch.float64))

    def inner_step(self, theta: torch.Tensor, velocity: torch.Tensor, inputs: torch.Tensor,
                   targets: torch.Tensor, t: int):
        """(theta_{t+1}, v_{t+1}, f_t): the forward sweep's step, also used to recompute."""
        grad, loss, _ = self.grad_and_hvps(theta, None, inputs, targets, t)
        if self.grad_clamp is not None:
            grad = grad.clamp(-self.grad_clamp, self.grad_clamp)
        hp = self.schedule.at(t)
        new_theta, new_velocity = sgd_momentum_update(
            theta, velocity, grad, hp["lr"], hp["momentum"], hp["weight_decay"])
        return new_theta, new_velocity, loss

    def backward_step(self, t: int, theta_t: torch.Tensor, v_t: torch.Tensor,
                      v_next: torch.Tensor, theta_bar: torch.Tensor, v_bar: torch.Tensor,
                      hyper: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor):
        """(theta_bar_t, v_bar_t) from the adjoints of step t + 1; adds step t's derivatives
        to ``hyper`` (the equations of the module docstring). Donates ``theta_bar``/``v_bar``."""
        hp = self.schedule.at(t)
        eta, mu, omega = hp["lr"], hp["momentum"], hp["weight_decay"]
        u = v_bar.add_(theta_bar, alpha=-eta)  # the adjoint of v_{t+1}
        scale = self.schedule.scale
        if "lr" in self._column:
            hyper[self._active("lr", t)] -= scale("lr", t) * torch.dot(theta_bar, v_next)
        if "momentum" in self._column:
            hyper[self._active("momentum", t)] += scale("momentum", t) * torch.dot(u, v_t)
        if "weight_decay" in self._column:
            hyper[self._active("weight_decay", t)] += (scale("weight_decay", t)
                                                       * torch.dot(u, theta_t))
        mask = None if self.grad_clamp is None else self._clamp_mask
        _, _, hvp = self.grad_and_hvps(theta_t, u, inputs, targets, t, self.hvp, mask,
                                       products_only=True)
        theta_bar.add_(u, alpha=omega).add_(hvp)
        return theta_bar, u.mul_(mu)

    def _clamp_mask(self, grad: torch.Tensor) -> torch.Tensor:
        return clamp_mask(grad, self.grad_clamp)

    def advance(
        self,
        state: ReverseState,
        batches: BatchReplay,
        val_batches: Iterable[Batch],
        until: int | None = None,
        on_step: Callable[[ReverseState], None] | None = None,
    ) -> ReverseState:
        """Run progress steps until ``until`` (default 2T, the end); ``on_step(state)`` after
        each. Raises ValueError when ``batches`` does not hold exactly T batches, and
        :class:`~fdshpo.engines.replay.ReplayError` when a batch read again differs."""
        T = self.schedule.num_steps
        until = 2 * T if until is None else until
        if state.step < min(until, T):
            state = self._forward_sweep(state, batches, val_batches, min(until, T), on_step)
        if T <= state.step < until:
            state = self._backward_sweep(state, batches, until, on_step)
        return state

    def _forward_sweep(self, state, batches: BatchReplay, val_batches, until, on_step):
        T = self.schedule.num_steps
        iterator = batches.stream(state.step)
        step, theta, velocity = state.step, state.theta, state.velocity
        while step < until:
            try:
                inputs, targets = next(iterator)
            except StopIteration:
                raise ran_out(step, T) from None
            inputs, targets = self.objective.to_device(inputs, targets)
            state.fingerprints[step] = fingerprint(inputs, targets)
            theta, velocity, loss = self.inner_step(theta, velocity, inputs, targets, step)
            state.train_losses[step] = loss.detach()
            step += 1
            if step in self._keep:
                state.stored[step] = (theta, velocity)
            if step % self.check_every == 0 or step == T:
                self.check_losses(state.train_losses, max(0, step - self.check_every), step)
            state = state._replace(step=step, theta=theta, velocity=velocity)
            if step == T:
                for _ in iterator:
                    raise too_many(T)
                val_loss, val_grad = self.validation(theta, val_batches)
                state = state._replace(val_loss=val_loss, theta_bar=val_grad,
                                       velocity_bar=torch.zeros_like(val_grad))
            if on_step is not None:
                on_step(state)
        return state

    def _backward_sweep(self, state, batches: BatchReplay, until, on_step):
        T = self.schedule.num_steps
        stored, hyper = state.stored, state.hyper
        theta_bar, v_bar = state.theta_bar, state.velocity_bar
        replayed: list[tuple[int, torch.Tensor]] = []  # (step, fingerprint), checked in bulk
        step = state.step
        while step < until:
            t = 2 * T - 1 - step
            if t not in stored:  # recompute the stretch from the nearest stored state
                start = max(s for s in stored if s < t)
                theta, velocity = stored[start]
                for u, (inputs, targets) in enumerate(batches.window(start, t), start):
                    inputs, targets = self.objective.to_device(inputs, targets)
                    replayed.append((u, fingerprint(inputs, targets)))
                    theta, velocity, _ = self.inner_step(theta, velocity, inputs, targets, u)
                    stored[u + 1] = (theta, velocity)
            inputs, targets = self.objective.to_device(*next(batches.window(t, t + 1)))
            replayed.append((t, fingerprint(inputs, targets)))
            (theta_t, v_t), (_, v_next) = stored[t], stored.pop(t + 1)
            theta_bar, v_bar = self.backward_step(t, theta_t, v_t, v_next, theta_bar, v_bar,
                                                  hyper, inputs, targets)
            step += 1
            if step % self.check_every == 0 or step == 2 * T:
                self._check_replayed(state.fingerprints, replayed)
            if step == 2 * T:
                stored.clear()
            state = state._replace(step=step, theta_bar=theta_bar, velocity_bar=v_bar)
            if on_step is not None:
                on_step(state)
        self._check_replayed(state.fingerprints, replayed)
        return state

    def _check_replayed(self, recorded: torch.Tensor, replayed: list) -> None:
        """ReplayError naming the first step whose batch read again differs (one sync). With a
        group every rank raises it, naming each rank whose shard differed (one gather of the
        ranks' outcomes), not only the rank whose shard it was."""
        if not replayed:
            return
        steps = [t for t, _ in replayed]
        same = (torch.stack([fp for _, fp in replayed]) == recorded[steps]).all(1)
        replayed.clear()
        error = None if bool(same.all()) else mismatch_error(steps[int((~same).nonzero()[0])])
        if self.shards is None:
            if error is not None:
                raise error
            return
        failed = self.shards.errors(None if error is None else str(error), "batch replay check")
        if failed:
            size = self.shards.world_size
            raise ReplayError("; ".join(f"rank {rank} of {size} of the data-parallel run: {text}"
                                        for rank, text in sorted(failed.items())))

    def finish(self, state: ReverseState, choice: EngineChoice | None = None
               ) -> HypergradientResult:
        """The result once the backward sweep is done (ValueError before)."""
        T = self.schedule.num_steps
        if state.step != 2 * T:
            raise ValueError(f"the reverse-mode run is at progress {state.step} of {2 * T}; "
                             "advance it to the end before computing the hypergradient")
        val_loss, hyper = self.agreed(state.val_loss, state.hyper)
        return assemble_result(val_loss, hyper, self.columns, self.schedule,
                               state.train_losses, state.theta, self.layout, choice)

    def run(self, state: ReverseState, train_batches: Iterable[Batch],
            val_batches: Iterable[Batch],
            on_step: Callable[[ReverseState], None] | None = None,
            choice: EngineChoice | None = None) -> HypergradientResult:
        """From ``state`` to the result (``train_batches``: batches of all T steps, which are
        read again; a one-shot iterator is a :class:`~fdshpo.engines.replay.ReplayError`)."""
        replay = BatchReplay(train_batches, self.schedule.num_steps)
        with deterministic_kernels(self.device):  # recomputed states must be bit for bit
            state = self.advance(state, replay, val_batches, on_step=on_step)
        return self.finish(state, choice)

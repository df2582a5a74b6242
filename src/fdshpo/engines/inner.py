"""The inner optimiser: SGD with momentum and coupled weight decay, as pure functions.

One step t with hyperparameters (eta_t, mu_t, omega_t) read from the schedule:

    g_t         = grad of loss(batch_t) at theta_t
    v_{t+1}     = mu_t * v_t + g_t + omega_t * theta_t          (v_0 = 0)
    theta_{t+1} = theta_t - eta_t * v_{t+1}

which is ``torch.optim.SGD(momentum=mu, dampening=0, nesterov=False, weight_decay=omega)`` with the
values set per step, whenever the momentum is non-zero from step 0 (torch starts its momentum
buffer only at the first step with non-zero momentum; here v_t follows the equation at every
step, which is what the hypergradient differentiates). The floating-point operations are done
in torch's order, so the trajectories agree to rounding on the same device.

``train`` runs that optimiser over a horizon with ordinary autograd (no tangents) through
``torch.func.functional_call``; BatchNorm layers use batch statistics in train mode and their
running statistics are tracked in ``InnerState.buffers`` (never differentiated).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from ..schedule import Schedule
from .base import InnerRunDiverged, ran_out
from .flat import ParamLayout

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class InnerState(NamedTuple):
    """Where an inner run stands: flat parameters, velocity, module buffers, next step index."""

    params: torch.Tensor
    velocity: torch.Tensor
    buffers: dict[str, torch.Tensor]
    step: int


def sgd_momentum_update(
    theta: torch.Tensor, velocity: torch.Tensor, grad: torch.Tensor,
    lr: float, momentum: float, weight_decay: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (theta_{t+1}, v_{t+1}) with v' = mu*v + (g + omega*theta), theta' = theta - eta*v'.

    The operation order is torch.optim.SGD's (weight decay added to the gradient first).
    """
    direction = grad.add(theta, alpha=weight_decay)
    new_velocity = velocity.mul(momentum).add_(direction)
    return theta.add(new_velocity, alpha=-lr), new_velocity


def init_state(model: nn.Module, layout: ParamLayout | None = None) -> InnerState:
    """theta_0 = the module's current parameters, v_0 = 0, buffers copied, step 0."""
    layout = layout or ParamLayout.of(model)
    theta = layout.flatten_module(model)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    return InnerState(theta, torch.zeros_like(theta), buffers, 0)


def loss_and_grad(
    model: nn.Module, loss_fn: LossFn, layout: ParamLayout, theta: torch.Tensor,
    buffers: dict[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, dloss/dtheta) at flat ``theta``; BatchNorm running stats in ``buffers`` update."""
    theta = theta.detach().requires_grad_(True)
    outputs = functional_call(model, {**layout.unflatten(theta), **buffers}, (inputs,))
    loss = loss_fn(outputs, targets)
    (grad,) = torch.autograd.grad(loss, theta)
    return loss.detach(), grad


def train(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    schedule: Schedule,
    state: InnerState | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> InnerState:
    """Run steps ``state.step .. schedule.num_steps - 1`` of SGD-momentum on ``batches``.

    ``model`` supplies the architecture and theta_0 (when ``state`` is None); it is not modified.
    ``batches`` must yield one (inputs, targets) pair per remaining step. ``on_step(t, loss)``
    is called after every step. Returns the final state; use :func:`load_state` to get a module.

    Raises:
        ValueError: too few batches for the horizon.
        InnerRunDiverged: the training loss became non-finite (names the step and values).
    """
    layout = ParamLayout.of(model)
    state = state or init_state(model, layout)
    theta, velocity, buffers, step = state
    buffers = {n: b.clone() for n, b in buffers.items()}
    was_training = model.training
    model.train()
    try:
        iterator = iter(batches)
        while step < schedule.num_steps:
            try:
                inputs, targets = next(iterator)
            except StopIteration:
                raise ran_out(step, schedule.num_steps, "batches") from None
            inputs, targets = inputs.to(theta.device), targets.to(theta.device)
            loss, grad = loss_and_grad(model, loss_fn, layout, theta, buffers, inputs, targets)
            if not torch.isfinite(loss):
                hp = schedule.at(step)
                raise InnerRunDiverged(
                    f"training diverged at inner step {step}: loss is {loss.item()} with "
                    f"lr={hp['lr']:.4g}, momentum={hp['momentum']:.4g}, "
                    f"weight_decay={hp['weight_decay']:.4g}; lower the learning rate or its bound",
                    step, hp)
            hp = schedule.at(step)
            theta, velocity = sgd_momentum_update(
                theta, velocity, grad, hp["lr"], hp["momentum"], hp["weight_decay"])
            if on_step is not None:
                on_step(step, loss)
            step += 1
    finally:
        model.train(was_training)
    return InnerState(theta, velocity, buffers, step)


def load_state(model: nn.Module, state: InnerState) -> nn.Module:
    """A deep copy of ``model`` holding the state's parameters and buffers."""
    trained = copy.deepcopy(model)
    layout = ParamLayout.of(trained)
    with torch.no_grad():
        params = dict(trained.named_parameters())
        for name, value in layout.unflatten(state.params).items():
            params[name].copy_(value)
        buffers = dict(trained.named_buffers())
        for name, value in state.buffers.items():
            buffers[name].copy_(value)
    return trained

"""Independent references for the engine's tests: the unrolled run in plain reverse-mode autograd.

Nothing here shares code with fdshpo's engine except ``Schedule`` (to read segment counts): the
trajectory is written out from the equations with ordinary tensors and ``torch.autograd``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_


def batch_statistics_copy(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorm layers always use batch statistics (no running statistics)."""
    clone = copy.deepcopy(model).train()
    replace_all_batch_norm_modules_(clone)
    return clone


#: Base shapes written out again from their equations (not fdshpo.shapes): factor(t, T).
SHAPE_FACTORS = {"constant": lambda t, T: 1.0, "linear": lambda t, T: 1.0 - t / T,
                 "cosine": lambda t, T: (1.0 + math.cos(math.pi * t / T)) / 2.0}


def unrolled_reverse_hypergradient(model, loss_fn, batches, val_batches, schedule, learn,
                                   grad_clamp=None):
    """(val_loss, {name: d val_loss / d segment values}) by backprop through the whole run.

    v_{t+1} = mu v_t + g_t + omega theta_t ; theta_{t+1} = theta_t - eta v_{t+1}, with
    (eta, mu, omega) = values[k(t)] * shape factor(t), k(t) = floor(t n / T), all kept in the
    autograd graph; g_t clamped to [-c, c] with ``grad_clamp=c``. The validation loss is the
    mean over every validation example: batch b's mean loss weighs len(b) / (total examples).
    """
    net = batch_statistics_copy(model)
    values = {n: v.detach().clone().to(next(model.parameters()).dtype).requires_grad_(n in learn)
              for n, v in schedule.values.items()}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    theta = [p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()
             if p.requires_grad]
    velocity = [torch.zeros_like(p) for p in theta]
    T = schedule.num_steps
    for t, (x, y) in enumerate(batches):
        hp = {n: v[t * v.numel() // T] * SHAPE_FACTORS[schedule.shapes[n]](t, T)
              for n, v in values.items()}
        loss = loss_fn(functional_call(net, dict(zip(names, theta)), (x,)), y)
        grads = torch.autograd.grad(loss, theta, create_graph=True)
        if grad_clamp is not None:
            grads = [g.clamp(-grad_clamp, grad_clamp) for g in grads]
        velocity = [hp["momentum"] * v + g + hp["weight_decay"] * p
                    for v, g, p in zip(velocity, grads, theta)]
        theta = [p - hp["lr"] * v for p, v in zip(theta, velocity)]
    val_losses = [len(y) * loss_fn(functional_call(net, dict(zip(names, theta)), (x,)), y)
                  for x, y in val_batches]
    val_loss = torch.stack(val_losses).sum() / sum(len(y) for _, y in val_batches)
    learned = [n for n in schedule.values if n in learn]
    grads = torch.autograd.grad(val_loss, [values[n] for n in learned])
    return float(val_loss.detach()), {n: g.detach().double() for n, g in zip(learned, grads)}


def sgd_reference_trajectory(model, loss_fn, batches, schedule, grad_clamp=None):
    """Train a deep copy with torch.optim.SGD, setting lr/momentum/weight_decay every step
    (after ``torch.nn.utils.clip_grad_value_(..., grad_clamp)`` when given)."""
    net = copy.deepcopy(model).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.0, weight_decay=0.0)
    for t, (x, y) in enumerate(batches):
        hp = schedule.at(t)
        for group in opt.param_groups:
            group["lr"], group["momentum"] = hp["lr"], hp["momentum"]
            group["weight_decay"] = hp["weight_decay"]
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        if grad_clamp is not None:
            torch.nn.utils.clip_grad_value_(net.parameters(), grad_clamp)
        opt.step()
    return net

"""Online hypergradient descent on the learning rate (Baydin et al., ICLR 2018), greedy.

With SGD-momentum as in :mod:`fdshpo.engines.inner` (theta_t = theta_{t-1} - eta_{t-1} v_t), the
loss of
step t depends on the previous learning rate through d theta_t / d eta_{t-1} = -v_t, so the
one-step (greedy) hypergradient is d f_t / d eta_{t-1} = -g_t . v_t and HD updates

    eta_t = clip(eta_{t-1} + beta * g_t . v_t, lower, upper)          (eta_0 given; v_0 = 0)

before the usual step v_{t+1} = mu v_t + g_t + omega theta_t, theta_{t+1} = theta_t - eta_t v_{t+1}.
g_t is the minibatch loss gradient (without the weight-decay term), as in the paper.

The ``hd`` method fills its budget with TPE trials over (eta_0, log beta, mu, omega); each trial
is one HD run over the horizon (its cost: T plain steps, the extra dot product is O(P) and not
counted) scored on the validation split. The schedule it returns is the learning-rate trajectory
eta_0 .. eta_{T-1} of the best trial (one segment per step) with constant mu and omega: retraining
replays that trajectory rather than adapting online again.

Fair start: the first trial is enqueued as (eta_0, beta, mu, omega) = (the initial lr at step 0,
the lower end of the beta range, the initial momentum and weight decay at step 0): the nearest
HD run to the initial schedule (beta -> 0 keeps eta_0 constant; eta_0 is used exactly at step 0,
where v_0 = 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import optuna
import torch
from torch import nn

from ..engines.flat import ParamLayout
from ..engines.inner import (
    InnerState,
    LossFn,
    init_state,
    load_state,
    loss_and_grad,
    sgd_momentum_update,
)
from ..schedule import Schedule
from ..tune.problem import ClassificationProblem
from .budget import CostModel, trial_ledger
from .fds import initial_schedule
from .search import constant_params, run_study, trial_cost
from .space import DIVERGED_LOSS, MethodResult, SearchSpace, score_model, validation_examples

#: Default log-uniform range of the hyper-learning-rate beta.
BETA_RANGE = (1e-6, 1e-1)


def hd_lr_update(lr: float, beta: float, grad: torch.Tensor, velocity: torch.Tensor,
                 lower: float, upper: float) -> float:
    """eta_t = clip(eta_{t-1} + beta * g_t . v_t, lower, upper)."""
    return min(max(lr + beta * float(torch.dot(grad, velocity)), lower), upper)


def hd_train(model: nn.Module, loss_fn: LossFn, batches: Iterable, num_steps: int, lr: float,
             beta: float, momentum: float, weight_decay: float,
             lr_bounds: tuple[float, float]) -> tuple[InnerState, torch.Tensor]:
    """Run ``num_steps`` SGD-momentum steps with HD on the learning rate.

    Returns the final state and the (T,) learning rates used at each step.
    Raises FloatingPointError when the training loss becomes non-finite.
    """
    layout = ParamLayout.of(model)
    theta, velocity, buffers, _ = init_state(model, layout)
    used = torch.empty(num_steps, dtype=torch.float64)
    iterator = iter(batches)
    model.train()
    for t in range(num_steps):
        inputs, targets = next(iterator)
        loss, grad = loss_and_grad(model, loss_fn, layout, theta, buffers,
                                   inputs.to(theta.device), targets.to(theta.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"HD training diverged at step {t} with lr={lr:.4g}")
        lr = hd_lr_update(lr, beta, grad, velocity, *lr_bounds)
        used[t] = lr
        theta, velocity = sgd_momentum_update(theta, velocity, grad, lr, momentum, weight_decay)
    return InnerState(theta, velocity, buffers, num_steps), used


def hd_search(problem: ClassificationProblem, space: SearchSpace, budget: float,
              cost_model: CostModel, seed: int = 0,
              beta_range: tuple[float, float] = BETA_RANGE,
              init: Mapping[str, object] | None = None) -> MethodResult:
    """TPE over HD's (eta_0, beta, mu, omega); returns the best trial's lr trajectory."""
    T = space.num_steps

    def run_trial(trial: optuna.trial.BaseTrial):
        lr0 = trial.suggest_float("lr", *space.bounds["lr"])
        beta = trial.suggest_float("beta", *beta_range, log=True)
        mu = trial.suggest_float("momentum", *space.bounds["momentum"])
        omega = trial.suggest_float("weight_decay", *space.bounds["weight_decay"])
        task = problem(0, 0, T)
        lrs = torch.full((T,), lr0, dtype=torch.float64)
        try:
            state, lrs = hd_train(task.model, nn.functional.cross_entropy, task.train_batches,
                                  T, lr0, beta, mu, omega, space.bounds["lr"])
            loss = score_model(load_state(task.model, state), task.val_batches)
        except FloatingPointError:
            loss = DIVERGED_LOSS
        schedule = Schedule(T, {"lr": lrs,
                                "momentum": torch.full((space.segments["momentum"],), mu),
                                "weight_decay": torch.full((space.segments["weight_decay"],),
                                                           omega)}, space.bounds)
        return loss, trial_ledger(T, validation_examples(problem)), schedule

    first = {**constant_params(initial_schedule(space, init)), "beta": beta_range[0]}
    return run_study("hd", optuna.samplers.TPESampler(seed=seed), run_trial, budget,
                     trial_cost(problem, space, cost_model), cost_model,
                     {"beta_range": list(beta_range)}, first=first)

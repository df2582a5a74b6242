"""Networks by name: shapes, parameter counts, initialisations, and exact hypergradients through
each of them (BatchNorm included) against reverse-mode autodiff of the unrolled run in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import fdshpo
from fdshpo.models import build_model, known_models

CASES = {  # name -> tiny input shape for the hypergradient check
    "mlp": (1, 6, 6),
    "lenet": (1, 28, 28),
    "wrn-16-1": (3, 8, 8),
}


@pytest.mark.parametrize("name, shape, params", [
    ("mlp", (1, 28, 28), 101_770),
    ("lenet", (1, 28, 28), 61_706),
    ("lenet", (3, 32, 32), 62_006),
    ("wrn-16-1", (3, 32, 32), 175_066),
    ("wrn-16-2", (3, 32, 32), 691_674),
    ("wrn-16-1", (1, 28, 28), 174_778),
])
def test_forward_shape_and_parameter_count(name, shape, params):
    model = build_model(name, shape, 10, seed=0)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(3, *shape)).shape == (3, 10)


def test_seeded_init_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model("wrn-16-1", (3, 32, 32), 10, seed=3)
    b = build_model("wrn-16-1", (3, 32, 32), 10, seed=3)
    c = build_model("wrn-16-1", (3, 32, 32), 10, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.stem.weight, c.stem.weight)


def test_xavier_init():
    model = build_model("lenet", (1, 28, 28), 10, seed=0, init="xavier")
    fc = model.classifier[1]  # Linear(400, 120)
    assert torch.count_nonzero(fc.bias) == 0
    expected = math.sqrt(2 / (400 + 120))
    assert abs(fc.weight.std().item() / expected - 1) < 0.03
    wrn = build_model("wrn-16-1", (3, 32, 32), 10, seed=0, init="xavier")
    assert torch.equal(wrn.bn.weight, torch.ones(64)) and torch.count_nonzero(wrn.fc.bias) == 0


def test_bad_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown network 'resnet50'; known networks are "
                                         r"\['lenet', 'mlp', 'wrn-D-K'\]"):
        build_model("resnet50", (3, 32, 32), 10, 0)
    with pytest.raises(ValueError, match="depth = 6n \\+ 4 >= 10.*wrn-15-1"):
        build_model("wrn-15-1", (3, 32, 32), 10, 0)
    with pytest.raises(ValueError, match="unknown initialisation 'he'; known initialisations "
                                         "are \\['default', 'xavier'\\]"):
        build_model("mlp", (1, 28, 28), 10, 0, init="he")
    assert "wrn-D-K" in known_models()


def reverse_mode_reference(model, loss_fn, batches, val, schedule):
    """d L_val(theta_T) / d segment values by autograd through the unrolled SGD-momentum run
    (BatchNorm in train mode: batch statistics for training and validation batches)."""
    T = schedule.num_steps
    values = {n: v.clone().requires_grad_(True) for n, v in schedule.values.items()}
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    velocity = [torch.zeros_like(p) for p in params]
    for t, (x, y) in enumerate(batches):
        seg = {n: t * v.numel() // T for n, v in values.items()}
        lr = values["lr"][seg["lr"]]
        mu = values["momentum"][seg["momentum"]]
        wd = values["weight_decay"][seg["weight_decay"]]
        out = functional_call(model, dict(zip(names, params)), (x,))
        grads = torch.autograd.grad(loss_fn(out, y), params, create_graph=True)
        velocity = [mu * v + g + wd * p for v, g, p in zip(velocity, grads, params)]
        params = [p - lr * v for p, v in zip(params, velocity)]
    loss = loss_fn(functional_call(model, dict(zip(names, params)), (val[0],)), val[1])
    return loss.item(), dict(zip(values, torch.autograd.grad(loss, list(values.values()))))


@pytest.mark.parametrize("name", list(CASES))
def test_hypergradient_through_network_matches_reverse_mode(name):
    shape, T, batch = CASES[name], 4, 4
    gen = torch.Generator().manual_seed(0)
    model = build_model(name, shape, 3, seed=0).double().train()
    xs = [torch.randn(batch, *shape, generator=gen, dtype=torch.float64) for _ in range(T)]
    ys = [torch.randint(0, 3, (batch,), generator=gen) for _ in range(T)]
    val = (torch.randn(6, *shape, generator=gen, dtype=torch.float64),
           torch.randint(0, 3, (6,), generator=gen))
    schedule = fdshpo.Schedule.constant(T, lr=0.05, momentum=0.5, weight_decay=1e-2,
                                        segments={"lr": 2, "momentum": 2, "weight_decay": 1})
    loss_fn = torch.nn.functional.cross_entropy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fdshpo.hypergradient(model, loss_fn, list(zip(xs, ys)), [val], schedule)
    for key, value in model.state_dict().items():  # the engine leaves the model untouched
        assert torch.equal(value, before[key]), key
    ref_loss, ref = reverse_mode_reference(model, loss_fn, zip(xs, ys), val, schedule)
    assert result.val_loss == pytest.approx(ref_loss, rel=1e-10)
    for key in ref:
        torch.testing.assert_close(result.grads[key], ref[key], rtol=1e-7, atol=1e-10)
        assert ref[key].abs().max() > 0

"""Contract suite over every method (FDS and each baseline), plus unit checks of the parts.

Contract: on the bundled sample with a tiny budget, every method returns a schedule inside the
search space's bounds, spends no more than its budget (modelled plain-step equivalents), and
repeats itself exactly with the same seed.
"""

import math

import pytest
import torch

from fdshpo.baselines import METHODS, SearchSpace, fit_segments, get_method, shape_values
from fdshpo.baselines.greedy import windows
from fdshpo.baselines.hd import hd_lr_update
from fdshpo.budget import CostModel, Ledger, calibrate, fds_run_ledger
from fdshpo.data.sample import load_fashion_mnist_sample
from fdshpo.problem import ClassificationProblem
from fdshpo.schedule import Schedule

#: A fixed price list, so the allocation (what each method can afford) is deterministic.
COSTS = CostModel(seconds_per_step=1e-3, fds_base=2.0, per_tangent=0.75,
                  per_eval_example=1 / 96, per_grad_example=1 / 32)
BUDGET = 240.0


@pytest.fixture(scope="module")
def problem():
    return ClassificationProblem(load_fashion_mnist_sample(), "mlp", batch_size=32,
                                 val_fraction=0.1, seed=3)


@pytest.fixture(scope="module")
def space():
    return SearchSpace(20, {"lr": 3, "momentum": 1, "weight_decay": 1},
                       {"lr": (0.0, 1.0), "momentum": (0.0, 0.99), "weight_decay": (0.0, 1e-2)})


@pytest.fixture(scope="module")
def results(problem, space):
    torch.set_num_threads(1)
    return {name: (method(problem, space, BUDGET, COSTS, seed=1),
                   method(problem, space, BUDGET, COSTS, seed=1))
            for name, method in METHODS.items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, results, space):
    first, again = results[name]
    assert first.method == name
    assert space.contains(first.schedule), first.schedule
    assert first.schedule.num_steps == space.num_steps
    assert first.cost <= BUDGET
    assert first.cost == first.ledger.cost(COSTS) > 0
    assert first.ledger.seconds > 0
    assert first.incumbents and all(i.cost <= BUDGET for i in first.incumbents)
    assert [i.cost for i in first.incumbents] == sorted(i.cost for i in first.incumbents)
    assert math.isfinite(first.val_loss) or first.val_loss == math.inf
    # seeded reproducibility: same arguments, same result
    assert again.schedule == first.schedule
    assert again.val_loss == first.val_loss
    assert again.ledger.with_seconds(0) == first.ledger.with_seconds(0)


def test_trial_methods_spend_nearly_the_whole_budget(results):
    costs = {n: results[n][0].cost for n in ("random", "tpe", "hd", "cosine", "linear")}
    assert max(costs.values()) <= BUDGET
    assert min(costs.values()) >= 0.9 * BUDGET, costs
    assert max(costs.values()) / min(costs.values()) < 1.1, costs


def test_searches_respect_the_space_segments(results, space):
    for name in ("random", "tpe", "fds", "greedy"):
        assert results[name][0].schedule.segments == dict(space.segments), name
    # the shapes and HD hold one learning-rate value per step
    for name in ("cosine", "hd"):
        assert results[name][0].schedule.segments["lr"] == space.num_steps


def test_different_seeds_sample_different_trials(problem, space):
    a = get_method("random")(problem, space, 60.0, COSTS, seed=0)
    b = get_method("random")(problem, space, 60.0, COSTS, seed=1)
    assert a.schedule != b.schedule


def test_budget_too_small_says_what_to_change(problem, space):
    with pytest.raises(ValueError, match="cannot pay for one random trial.*raise the budget"):
        get_method("random")(problem, space, 5.0, COSTS)
    with pytest.raises(ValueError, match="cannot pay for one FDS outer step"):
        get_method("fds")(problem, space, 5.0, COSTS)


def test_unknown_method_lists_known_names():
    with pytest.raises(ValueError, match="unknown method 'sgdr'; known methods are .*'tpe'"):
        get_method("sgdr")


def test_search_space_needs_finite_bounds():
    with pytest.raises(ValueError, match="bounds for 'lr' must be finite"):
        SearchSpace(10, {"lr": 2}, {"lr": (0, math.inf), "momentum": (0, 1),
                                     "weight_decay": (0, 1)})
    with pytest.raises(ValueError, match="needs bounds for 'weight_decay'"):
        SearchSpace(10, {"lr": 2}, {"lr": (0, 1), "momentum": (0, 1)})


def test_shapes():
    T = 8
    assert torch.equal(shape_values("constant", T, 0.5), torch.full((T,), 0.5, dtype=torch.float64))
    cos = shape_values("cosine", T, 1.0)
    assert cos[0] == 1.0 and float(cos[4]) == pytest.approx(0.5) and (cos.diff() < 0).all()
    lin = shape_values("linear", T, 2.0)
    assert torch.allclose(lin, 2.0 * (1 - torch.arange(T, dtype=torch.float64) / T))
    step = shape_values("step", T, 1.0)
    assert step.tolist() == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    # least-squares piecewise-constant fit over the shared segments floor(t n / T)
    assert fit_segments(lin, 2).tolist() == pytest.approx([1.625, 0.625])
    with pytest.raises(ValueError, match="unknown schedule shape 'warm'"):
        shape_values("warm", T, 1.0)


def test_hd_update_is_the_one_step_hypergradient():
    g, v = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.25])
    assert hd_lr_update(0.1, 0.01, g, v, 0.0, 1.0) == pytest.approx(0.1 + 0.01 * 1.0)
    assert hd_lr_update(0.1, 10.0, -g, v, 0.0, 1.0) == 0.0  # clipped to the bounds
    assert hd_lr_update(0.9, 10.0, g, v, 0.0, 1.0) == 1.0


def test_greedy_windows_are_the_union_of_segment_boundaries():
    space = SearchSpace(10, {"lr": 3, "momentum": 2, "weight_decay": 1},
                        {"lr": (0, 1), "momentum": (0, 1), "weight_decay": (0, 1)})
    assert windows(space) == [(0, 4), (4, 5), (5, 7), (7, 10)]


def test_ledger_costs_follow_the_model():
    schedule = Schedule.constant(6, 0.1, segments={"lr": 2})
    ledger = fds_run_ledger(schedule, ("lr", "momentum"), val_examples=64)
    # lr segments start at 0 and 3, momentum at 0: 2 live columns for 3 steps, then 3
    assert ledger == Ledger(fds_steps=6, fds_columns=2 * 3 + 3 * 3, grad_examples=64)
    assert ledger.cost(COSTS) == pytest.approx(6 * 2 + 15 * 0.75 + 64 / 32)
    total = ledger + Ledger(plain_steps=10, seconds=0.5)
    assert total.plain_steps == 10 and total.seconds == 0.5
    assert total.wall_steps(COSTS) == pytest.approx(500)
    with pytest.raises(ValueError, match="seconds_per_step must be positive"):
        CostModel(0.0, 1, 1, 1, 1)


def test_calibration_measures_positive_prices(problem, space):
    model = calibrate(problem, space.constant(0.1, 0.5, 0.0), steps=3, repeats=1)
    assert model.seconds_per_step > 0
    # an FDS step with all 5 columns live costs more than a plain step
    assert model.fds_step(5) > 1.0
    assert model.per_eval_example > 0 and model.per_grad_example > 0
    assert CostModel.from_dict(model.to_dict()) == model

"""Contract suite over every method (FDS and each baseline), plus unit checks of the parts.

Contract: on the bundled sample with a tiny budget, every method returns a schedule inside the
search space's bounds over the search horizon, spends no more than its budget (modelled
plain-step equivalents) and is charged for every training step and validation example it used
(counted independently, from the batches its tasks handed out), repeats itself exactly with the
same seed, starts from the initial schedule (black-box searches enqueue it), and (unless
budget-aware) returns at a budget b what its incumbent was after spending b of a larger budget.
"""

import math
import re
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from fdshpo import EnginePrices
from fdshpo.baselines import (
    BUDGET_AWARE,
    METHODS,
    SearchSpace,
    fit_segments,
    get_method,
    shape_values,
)
from fdshpo.baselines.budget import CostModel, Ledger, calibrate, fds_run_ledger
from fdshpo.baselines.greedy import windows
from fdshpo.baselines.hd import hd_lr_update
from fdshpo.baselines.hyperband import rung_steps, rungs, window
from fdshpo.baselines.minimum import minimum_budget
from fdshpo.baselines.search import shaped_schedule
from fdshpo.compare.comparison import pick_at
from fdshpo.data.sample import load_fashion_mnist_sample
from fdshpo.engines.inner import init_state, train
from fdshpo.schedule import Schedule
from fdshpo.tune.loop import InnerTask
from fdshpo.tune.problem import ClassificationProblem

#: A fixed price list, so the allocation (what each method can afford) is deterministic.
COSTS = CostModel(seconds_per_step=1e-3, engines=EnginePrices(forward_base=2.0, per_tangent=0.75),
                  per_eval_example=1 / 96, per_grad_example=1 / 32)
BUDGET = 240.0
#: Where every method starts (the fair start); inside SPACE's bounds.
INIT = {"lr": 0.07, "momentum": 0.3, "weight_decay": 1e-3}


class Counted:
    """Batches that count what is drawn from them into ``counts[key]`` (batches or examples)."""

    def __init__(self, batches, counts: dict, key: str, examples: bool) -> None:
        self.batches, self.counts, self.key, self.examples = batches, counts, key, examples

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for inputs, targets in self.batches:
            self.counts[self.key] += len(inputs) if self.examples else 1
            yield inputs, targets


@dataclass(frozen=True)
class CountingProblem(ClassificationProblem):
    """The real sample problem; its tasks also count the training steps and validation examples
    the method draws from them, so the ledger can be checked against what really ran."""

    counts: dict = field(default_factory=lambda: {"steps": 0, "val": 0}, compare=False)

    def __call__(self, outer_step: int, replica: int, num_steps: int) -> InnerTask:
        task = super().__call__(outer_step, replica, num_steps)
        return InnerTask(task.model, Counted(task.train_batches, self.counts, "steps", False),
                         Counted(task.val_batches, self.counts, "val", True))


@pytest.fixture(scope="module")
def problem():
    return ClassificationProblem(load_fashion_mnist_sample(), "mlp", batch_size=32,
                                 val_fraction=0.1, seed=3)


@pytest.fixture(scope="module")
def space():
    """Search horizon 20, final horizon 40 (hyperband trains there)."""
    return SearchSpace(20, {"lr": 3, "momentum": 1, "weight_decay": 1},
                       {"lr": (0.0, 1.0), "momentum": (0.0, 0.99), "weight_decay": (0.0, 1e-2)},
                       final_steps=40)


@pytest.fixture(scope="module")
def results(problem, space):
    """name -> (result, same again, (steps, val examples) drawn by the first run)."""
    torch.set_num_threads(1)
    out = {}
    for name, method in METHODS.items():
        if name in BUDGET_AWARE:  # greedy replays windows of the problem's own batch streams
            first, counts = method(problem, space, BUDGET, COSTS, seed=1), None
        else:
            counting = CountingProblem(problem.dataset, "mlp", batch_size=32, val_fraction=0.1,
                                       seed=3)
            first = method(counting, space, BUDGET, COSTS, seed=1)
            counts = (counting.counts["steps"], counting.counts["val"])
        out[name] = (first, method(problem, space, BUDGET, COSTS, seed=1), counts)
    return out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, results, space):
    first, again, _ = results[name]
    assert first.method == name
    assert space.contains(first.schedule), first.schedule
    assert first.schedule.num_steps == space.num_steps
    assert first.cost <= BUDGET
    assert first.cost == first.ledger.cost(COSTS) > 0
    assert first.ledger.seconds > 0
    assert first.incumbents and all(i.cost <= BUDGET for i in first.incumbents)
    assert [i.cost for i in first.incumbents] == sorted(i.cost for i in first.incumbents)
    # the last incumbent is the pick (a comparison reads picks from the incumbents)
    assert first.incumbents[-1].schedule == first.schedule
    assert first.incumbents[-1].val_loss == first.val_loss
    # a real validation loss: nothing diverges with these bounds on 20 steps (log 10 ~ 2.3 is
    # the loss of an untrained network)
    assert 0 < first.val_loss < 3, first.val_loss
    # seeded reproducibility: same arguments, same result
    assert again.schedule == first.schedule
    assert again.val_loss == first.val_loss
    assert again.ledger.with_seconds(0) == first.ledger.with_seconds(0)


@pytest.mark.parametrize("name", sorted(set(METHODS) - BUDGET_AWARE))
def test_method_is_charged_for_every_step_and_validation_example(name, results):
    result, _, (steps, val_examples) = results[name]
    ledger = result.ledger
    assert steps > 0 and val_examples > 0
    assert ledger.plain_steps + ledger.fds_steps == steps
    assert ledger.eval_examples + ledger.grad_examples == val_examples


def test_hyperband_trains_at_the_final_horizon_and_pays_for_pruned_trials(results, space):
    result, _, (steps, _) = results["hyperband"]
    log = result.details["trial_log"]
    assert result.details["final_steps"] == space.final_steps == 40
    assert result.details["rung_steps"] == [2, 5, 14]  # ceil(40 * 3^k / 27)
    complete = [t for t in log if t["outcome"] == "complete"]
    pruned = [t for t in log if t["outcome"] == "pruned"]
    assert complete and all(t["steps"] == 40 for t in complete)
    assert pruned and all(t["steps"] in (2, 5, 14) for t in pruned)
    # every step of every trial (pruned ones included) is in the ledger
    assert steps == sum(t["steps"] for t in log) == result.ledger.plain_steps
    assert result.details["first_trial"] == {"lr_0": 0.0, "lr_1": 0.0, "lr_2": 0.0,
                                             "momentum_0": 0.0, "weight_decay_0": 0.0}


def test_hyperband_rungs_and_windows():
    assert rung_steps(4680) == [174, 520, 1560]
    assert rung_steps(4680, 2, 8) == [585, 1170, 2340]
    # a short horizon rounds rungs together: one step, reported as the larger resource
    assert rungs(5) == [(1, 3), (2, 9)] and rungs(1) == []
    with pytest.raises(ValueError, match="max_resource must be a power of the reduction"):
        rung_steps(100, 3, 10)
    # training window by window continues the run exactly
    problem = ClassificationProblem(load_fashion_mnist_sample(), "mlp", batch_size=32)
    schedule = Schedule(27, {"lr": [0.3, 0.1, 0.05], "momentum": [0.5], "weight_decay": [1e-3]})
    task = problem(0, 0, 27)
    whole = train(task.model, nn.functional.cross_entropy, task.train_batches, schedule)
    batches, state = iter(task.train_batches), init_state(task.model)
    for a, b in ((0, 1), (1, 3), (3, 9), (9, 27)):
        state = train(task.model, nn.functional.cross_entropy, batches, window(schedule, a, b),
                      state._replace(step=0))
    assert torch.equal(state.params, whole.params)
    assert torch.equal(state.velocity, whole.velocity)


@pytest.mark.parametrize("name", sorted(set(METHODS) - BUDGET_AWARE))
def test_smaller_budget_returns_the_incumbent_of_a_larger_one(name, results, problem, space):
    """What a comparison relies on to run each method once at its largest budget."""
    larger = results[name][0]
    smaller = METHODS[name](problem, space, BUDGET / 2, COSTS, seed=1)
    pick = pick_at(larger, BUDGET / 2)
    assert pick.schedule == smaller.schedule
    assert pick.val_loss == smaller.val_loss


SEGMENT_START = {"lr_0": 0.07, "lr_1": 0.07, "lr_2": 0.07, "momentum_0": 0.3,
                 "weight_decay_0": 1e-3}


@pytest.mark.parametrize("name,first", [
    ("random", SEGMENT_START), ("tpe", SEGMENT_START), ("hyperband", SEGMENT_START),
    *((shape, INIT) for shape in ("constant", "step", "cosine", "linear")),
    ("hd", {**INIT, "beta": 1e-6}),
])
def test_black_box_searches_enqueue_the_initial_schedule_first(name, first, problem, space):
    budget, _ = minimum_budget(name, problem, space, COSTS)  # exactly one trial
    result = METHODS[name](problem, space, budget, COSTS, seed=5, init=INIT)
    assert result.details["first_trial"] == pytest.approx(first)
    tried = result.incumbents[0].schedule  # the only trial's schedule
    if name in ("random", "tpe", "hyperband"):
        assert tried == space.schedule(INIT)
    elif name == "hd":  # eta_0 is used at step 0 (v_0 = 0), then adapts by beta g.v
        assert tried.at(0) == pytest.approx(INIT)
    else:
        assert tried == shaped_schedule(space, name, *INIT.values())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_minimum_budget_is_what_the_method_itself_accepts(name, problem, space):
    cost, what = minimum_budget(name, problem, space, COSTS)
    with pytest.raises(ValueError, match=f"cannot pay for one {re.escape(what)}"):
        METHODS[name](problem, space, cost * (1 - 1e-9), COSTS)
    assert METHODS[name](problem, space, cost, COSTS).cost <= cost


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
    # the first trial is the enqueued fair start, so compare what the searches explored next
    a = get_method("random")(problem, space, 60.0, COSTS, seed=0)
    b = get_method("random")(problem, space, 60.0, COSTS, seed=1)
    assert a.details["trials"] == b.details["trials"] == 2
    assert a.details["sampled"][1] != b.details["sampled"][1]
    assert a.details["sampled"][0] == b.details["sampled"][0] == a.details["first_trial"]


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
        CostModel(0.0, EnginePrices(1, 1), 1, 1)


def test_calibration_measures_positive_prices(problem, space):
    model = calibrate(problem, space.constant(0.1, 0.5, 0.0), steps=3, repeats=1)
    # prices only (how FDS's step compares with a plain one is bench/engine.py's to measure)
    prices = model.engines
    assert model.seconds_per_step > 0 and prices.forward_base + prices.per_tangent > 0
    assert prices.reverse_step > 0 and prices.recompute > 0
    assert model.per_eval_example > 0 and model.per_grad_example > 0
    assert CostModel.from_dict(model.to_dict()) == model
    assert model.engine_prices() is prices


def test_a_cost_model_reads_and_writes_the_flat_keys_every_comparison_wrote():
    """Journals and --cost-model files keep their format; one without reverse-mode prices
    (written before reverse mode existed) prices only forward mode."""
    flat = {"seconds_per_step": 0.002, "fds_base": 2.0, "per_tangent": 0.75,
            "per_eval_example": 0.01, "per_grad_example": 0.03, "reverse_step": 2.5,
            "reverse_recompute": 1.0}
    model = CostModel.from_dict(flat)
    assert model.engines == EnginePrices(2.0, 0.75, 2.5, 1.0)
    assert model.to_dict() == flat
    old = CostModel.from_dict({k: v for k, v in flat.items() if "reverse" not in k})
    assert old.engine_prices() is None and not old.engines.has_reverse
    assert old.to_dict() == {**flat, "reverse_step": None, "reverse_recompute": None}
    with pytest.raises(ValueError, match="no reverse-mode prices"):
        Ledger(reverse_steps=3).cost(old)


def test_a_cost_model_that_prices_an_engine_step_below_a_plain_step_is_refused():
    """The issue's comparison priced a reverse-mode step at 0.30 plain steps: such a model
    cannot be built, and a stored one is refused with what to do."""
    with pytest.raises(ValueError) as info:
        CostModel(1e-3, EnginePrices(2.0, 0.75, reverse_step=0.30, recompute=0.2), 0.01, 0.03)
    assert str(info.value) == (
        "the cost model prices an FDS step below a plain step (a reverse-mode step at 0.30 "
        "plain steps), which cannot be: it was measured on a loaded machine; measure it again "
        "(fdshpo compare without --cost-model) or charge the calibrated prices")
    with pytest.raises(ValueError, match=r"a forward-mode step with one tangent at 0.60 plain"):
        CostModel.from_dict({"seconds_per_step": 0.002, "fds_base": 0.4, "per_tangent": 0.2,
                             "per_eval_example": 0.01, "per_grad_example": 0.03})


def test_calibrate_measures_again_then_falls_back_to_the_calibrated_prices(problem, space):
    from fdshpo.engines.prices import CALIBRATED_PRICES

    sane = EnginePrices(2.0, 0.75, reverse_step=2.5, recompute=1.0)
    insane = EnginePrices(2.0, 0.75, reverse_step=0.30, recompute=0.2)
    measured = iter([insane, sane])
    calls = []

    def measure(*args):
        calls.append(args)
        return 1e-3, next(measured), 0.01, 0.03

    schedule = space.constant(0.1, 0.5, 0.0)
    model = calibrate(problem, schedule, measure=measure)
    assert (len(calls), model.engines, model.note) == (2, sane, "")
    model = calibrate(problem, schedule, attempts=3,
                      measure=lambda *args: (1e-3, insane, 0.01, 0.03))
    assert model.engines == CALIBRATED_PRICES["cpu"]
    assert model.note == ("measured 3 times, each pricing an FDS step below a plain step "
                          "(last: a reverse-mode step at 0.30 plain steps; a loaded machine): "
                          "charged the calibrated CPU engine prices instead")
    assert CostModel.from_dict(model.to_dict()) == model


CHEAP_REVERSE = CostModel(1e-3, EnginePrices(2.0, 0.75, reverse_step=2.5, recompute=1.0),
                          1 / 96, 1 / 32)


def test_a_reverse_mode_run_is_charged_for_its_sweeps_and_recomputation():
    schedule = Schedule.constant(11, 0.1, segments={"lr": 3})
    ledger = fds_run_ledger(schedule, ("lr", "momentum"), 64, engine="reverse")
    # states stored at 0, 4, 8, 9, 10, 11 (interval ceil(sqrt(11)) = 4): 1-3 and 5-7 recomputed
    assert ledger == Ledger(reverse_steps=11, recomputed_steps=6, grad_examples=64)
    assert ledger.cost(CHEAP_REVERSE) == pytest.approx(11 * 2.5 + 6 * 1.0 + 64 / 32)
    every_state = fds_run_ledger(schedule, ("lr",), 64, engine="reverse", recompute_every=1)
    assert every_state.recomputed_steps == 0
    with pytest.raises(ValueError, match="no reverse-mode prices; measure one with "
                                         "fdshpo.baselines.budget.calibrate"):
        ledger.cost(COSTS)
    with pytest.raises(ValueError, match="resolve 'auto' with fds_engine first"):
        fds_run_ledger(schedule, ("lr",), 64, engine="auto")


def test_fds_is_charged_for_the_engine_it_runs(problem, space):
    from fdshpo.baselines.fds import initial_schedule
    from fdshpo.baselines.space import validation_examples

    result = get_method("fds")(problem, space, BUDGET, CHEAP_REVERSE, outer_steps=1)
    assert result.details["engine"]["engine"] == "reverse"
    assert "cheaper than forward by the comparison's measured cost model" in \
        result.details["engine"]["reason"]
    # every state of this small network fits: nothing recomputed, and charged so
    assert result.details["engine"]["recompute_every"] == 1
    run = fds_run_ledger(initial_schedule(space), ("lr", "momentum", "weight_decay"),
                         validation_examples(problem), engine="reverse", recompute_every=1)
    assert result.ledger.reverse_steps == run.reverse_steps and result.ledger.fds_steps == 0
    assert result.ledger.recomputed_steps == 0
    assert result.cost == pytest.approx(run.cost(CHEAP_REVERSE))
    assert minimum_budget("fds", problem, space, CHEAP_REVERSE)[0] == pytest.approx(result.cost)
    # without reverse-mode prices only the forward engine can be charged, so it runs
    forward = get_method("fds")(problem, space, BUDGET, COSTS, outer_steps=1)
    assert forward.details["engine"]["engine"] == "forward" and forward.ledger.fds_steps > 0
    # greedy too: each window's runs are charged for the engine they ran
    greedy = get_method("greedy")(problem, space, BUDGET, CHEAP_REVERSE)
    assert set(greedy.details["engines"]) == {"reverse"}
    assert greedy.ledger.fds_steps == 0 and greedy.ledger.reverse_steps > 0
    assert greedy.cost <= BUDGET


def test_fds_continues_on_doubled_horizons_each_outer_step_priced_for_its_own(problem, space):
    from fdshpo.baselines.fds import initial_schedule
    from fdshpo.baselines.space import validation_examples

    learn = ("lr", "momentum", "weight_decay")
    init = {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3}  # every value moves (none at 0)
    price = {t: fds_run_ledger(initial_schedule(space, init).stretched(t), learn,
                               validation_examples(problem), engine="forward").cost(COSTS)
             for t in (20, 40)}
    counting = CountingProblem(problem.dataset, "mlp", batch_size=32, val_fraction=0.1, seed=3)
    # tol 10: converged after every outer step, so each one continues on a doubled horizon
    result = get_method("fds")(counting, space, 10 * BUDGET, COSTS, tol=10.0, continue_to=40,
                               outer_steps=5, init=init)
    assert result.details["horizons"] == [20, 40] and result.details["converged"]
    assert counting.counts["steps"] == 20 + 40  # the inner steps that really ran
    assert result.cost == pytest.approx(price[20] + price[40])
    assert result.schedule.num_steps == 40  # best-validated on the longest horizon
    # a budget that pays the first outer step but not the longer second one stops after it
    short = get_method("fds")(problem, space, price[20] + price[40] / 2, COSTS, tol=10.0,
                              continue_to=40, outer_steps=5, init=init)
    assert short.details["horizons"] == [20] and short.cost == pytest.approx(price[20])
    # without continue_to the converged loop stops at the search horizon
    plain = get_method("fds")(problem, space, 10 * BUDGET, COSTS, tol=10.0, outer_steps=5,
                              init=init)
    assert plain.details["horizons"] == [20]


def test_trials_are_scored_with_the_objective_fds_differentiates():
    """One validation loss for every method: a trial's score is the value FDS reports for the
    same schedule on the same task, also with BatchNorm (each batch's statistics) and a short
    last validation batch (example-weighted)."""
    import dataclasses

    from nets import sample_subset_problem

    from fdshpo import hypergradient
    from fdshpo.baselines.space import evaluate_schedule

    problem = dataclasses.replace(sample_subset_problem(train=120, test=20, seed=4),
                                  network="wrn-10-1", val_batch_size=5)
    schedule = Schedule.constant(3, lr=0.05, momentum=0.5, weight_decay=1e-4)
    score, _ = evaluate_schedule(problem, schedule)
    task = problem(0, 0, 3)
    assert [len(y) for _, y in task.val_batches] == [5, 5, 2]  # 12 held out
    fds = hypergradient(task.model, torch.nn.functional.cross_entropy, task.train_batches,
                        task.val_batches, schedule, engine="forward")
    assert score == pytest.approx(fds.val_loss, rel=1e-5)

import json
import math

import pytest
import torch

from fdshpo import Schedule, SignOptimizer, SignState


def _schedule(lr=(0.5, 0.5), momentum=(0.5,), weight_decay=(0.0,), bounds=None):
    return Schedule(10, {"lr": list(lr), "momentum": list(momentum),
                         "weight_decay": list(weight_decay)}, bounds or {})


def _step(opt, schedule, state, lr, momentum=(1.0,), weight_decay=(1.0,)):
    grads = {"lr": torch.tensor(lr, dtype=torch.float64),
             "momentum": torch.tensor(momentum, dtype=torch.float64),
             "weight_decay": torch.tensor(weight_decay, dtype=torch.float64)}
    return opt.update(schedule, {n: grads[n] for n in opt.learn}, state)


def test_moves_against_the_sign_by_the_step_size_ignoring_magnitude():
    opt = SignOptimizer({"lr": 0.1})
    schedule = _schedule()
    state = opt.init(schedule)
    schedule, state = _step(opt, schedule, state, lr=[1e-9, -1e9])
    assert schedule.values["lr"].tolist() == pytest.approx([0.4, 0.6])
    assert schedule.values["momentum"].tolist() == [0.5]  # not learned: untouched


def test_a_sign_flip_halves_that_values_step_only():
    opt = SignOptimizer({"lr": 0.1})
    schedule = _schedule()
    state = opt.init(schedule)
    script = [([1, 1], [0.4, 0.4], [0.1, 0.1]),
              ([-1, 1], [0.45, 0.3], [0.05, 0.1]),    # first value flipped: 0.1 -> 0.05
              ([1, 1], [0.425, 0.2], [0.025, 0.1]),   # flipped again
              ([1, 1], [0.4, 0.1], [0.025, 0.1])]     # same sign: step kept
    for grads, values, sizes in script:
        schedule, state = _step(opt, schedule, state, lr=grads)
        assert schedule.values["lr"].tolist() == pytest.approx(values)
        assert state.step_sizes["lr"].tolist() == pytest.approx(sizes)


def test_values_are_clipped_to_their_bounds():
    opt = SignOptimizer({"lr": 0.3, "weight_decay": 1e-3})
    schedule = _schedule(lr=(0.2, 0.9), bounds={"lr": (0.0, 1.0), "weight_decay": (0.0, 1e-2)})
    state = opt.init(schedule)
    schedule, state = _step(opt, schedule, state, lr=[1, -1], weight_decay=[1])
    assert schedule.values["lr"].tolist() == pytest.approx([0.0, 1.0])
    assert schedule.values["weight_decay"].tolist() == [0.0]


def test_convergence_when_every_step_is_below_tol_times_the_value():
    opt = SignOptimizer({"lr": 0.1}, decay=0.5, tol=0.05)
    schedule = _schedule(lr=(0.5,))
    state = opt.init(schedule)
    flips = 0
    while not opt.converged(schedule, state):
        schedule, state = _step(opt, schedule, state, lr=[(-1) ** flips])
        flips += 1
        assert flips < 20
    # 0.1 * 0.5^k < 0.05 * ~0.45 first holds after 3 halvings (4 updates)
    assert flips == 4
    assert state.step_sizes["lr"].item() < 0.05 * schedule.values["lr"].item()


def test_zero_hypergradient_moves_nothing_and_keeps_the_previous_sign():
    opt = SignOptimizer({"lr": 0.1})
    schedule = _schedule(lr=(0.5,))
    state = opt.init(schedule)
    schedule, state = _step(opt, schedule, state, lr=[1])
    schedule, state = _step(opt, schedule, state, lr=[0])
    assert schedule.values["lr"].tolist() == pytest.approx([0.4])
    schedule, state = _step(opt, schedule, state, lr=[-1])  # flips against the kept sign
    assert state.step_sizes["lr"].tolist() == pytest.approx([0.05])


def test_non_finite_hypergradients_are_never_applied():
    opt = SignOptimizer({"lr": 0.1})
    schedule = _schedule()
    state = opt.init(schedule)
    with pytest.raises(ValueError, match=r"hypergradient for 'lr' is not finite at segment\(s\) "
                                         r"\[1\].*the outer update was not applied"):
        _step(opt, schedule, state, lr=[1.0, float("nan")])
    assert schedule.values["lr"].tolist() == [0.5, 0.5]


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="outer step size for 'lr' must be a positive number, "
                                         "got -0.1"):
        SignOptimizer({"lr": -0.1})
    with pytest.raises(ValueError, match=r"unknown step size name\(s\) \['eta'\]"):
        SignOptimizer({"eta": 0.1})
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\]"):
        SignOptimizer({"lr": 0.1}, decay=1.5)
    opt = SignOptimizer({"lr": 0.1})
    with pytest.raises(ValueError, match="hypergradient for 'lr' has 3 entries but the schedule "
                                         "has 2 segments"):
        _step(opt, _schedule(), opt.init(_schedule()), lr=[1, 1, 1])


def test_state_round_trips_through_plain_dicts():
    opt = SignOptimizer()
    schedule = _schedule()
    schedule, state = _step(opt, schedule, opt.init(schedule), lr=[1, -1])
    again = SignState.from_dict(state.to_dict())
    assert again.count == 1
    for name in state.step_sizes:
        assert torch.equal(again.step_sizes[name], state.step_sizes[name])
        assert torch.equal(again.signs[name], state.signs[name])


# -- multiplicative steps and convergence at a bound ------------------------------------------
def test_multiplicative_steps_scale_lr_and_weight_decay_and_act_on_one_minus_momentum():
    opt = SignOptimizer({"lr": 0.5, "momentum": 0.5, "weight_decay": 0.5},
                        multiplicative=("lr", "momentum", "weight_decay"))
    schedule = _schedule(lr=(0.2, 0.2), momentum=(0.0,), weight_decay=(1e-4,),
                         bounds={"lr": (1e-6, 1.0), "weight_decay": (1e-8, 1e-2)})
    schedule, state = _step(opt, schedule, opt.init(schedule), lr=[1, -1], momentum=[-1],
                            weight_decay=[1])
    e = math.exp(0.5)
    assert schedule.values["lr"].tolist() == pytest.approx([0.2 / e, 0.2 * e])
    # momentum 0 is no trap: 1 - mu goes from 1 to 1/e
    assert schedule.values["momentum"].tolist() == pytest.approx([1 - 1 / e])
    assert schedule.values["weight_decay"].tolist() == pytest.approx([1e-4 / e])


def test_a_multiplicative_value_near_zero_converges_by_its_relative_step():
    # additive steps would need s < tol * 1e-5; multiplicative steps are relative: s < tol
    opt = SignOptimizer({"weight_decay": 0.4}, tol=0.05, multiplicative=("weight_decay",))
    schedule = _schedule(weight_decay=(1e-5,), bounds={"weight_decay": (1e-9, 1e-2)})
    state = opt.init(schedule)
    updates = 0
    while not opt.converged(schedule, state):
        schedule, state = _step(opt, schedule, state, lr=[0, 0], weight_decay=[(-1) ** updates])
        updates += 1
        assert updates < 20
    # 0.4 halved at every flip: 0.4 * 0.5^k < 0.05 first at k = 4 (the 5th update)
    assert updates == 5 and state.step_sizes["weight_decay"].item() == pytest.approx(0.025)
    assert 1e-6 < schedule.values["weight_decay"].item() < 1e-4


def test_a_value_held_at_its_bound_by_its_hypergradient_has_converged():
    # the old rule (s < tol * |lambda|) never held at lambda = 0
    opt = SignOptimizer({"weight_decay": 1e-3}, tol=0.05)
    schedule = _schedule(weight_decay=(1e-3,), bounds={"weight_decay": (0.0, 1e-2)})
    state = opt.init(schedule)
    schedule, state = _step(opt, schedule, state, lr=[0, 0], weight_decay=[1])
    assert schedule.values["weight_decay"].tolist() == [0.0]
    assert opt.converged_mask(schedule, state)["weight_decay"].tolist() == [True]
    # pushed back inwards, it is free again
    schedule, state = _step(opt, schedule, state, lr=[0, 0], weight_decay=[-1])
    assert opt.converged_mask(schedule, state)["weight_decay"].tolist() == [False]
    # the same at a positive lower bound with multiplicative steps
    opt = SignOptimizer({"lr": 1.0}, multiplicative=("lr",))
    schedule = _schedule(lr=(1e-3, 0.5), bounds={"lr": (1e-3, 1.0)})
    schedule, state = _step(opt, schedule, opt.init(schedule), lr=[1, 1])
    assert schedule.values["lr"].tolist() == pytest.approx([1e-3, 0.5 / math.e])
    assert opt.converged_mask(schedule, state)["lr"].tolist() == [True, False]


def test_multiplicative_steps_that_cannot_work_are_refused_with_the_fix():
    opt = SignOptimizer({"lr": 0.5, "momentum": 0.5}, multiplicative=("lr", "momentum"))
    with pytest.raises(ValueError, match=r"lr takes multiplicative steps, which never reach 0: "
                                         r"give it a positive lower bound \(e\.g\. lr: \[1e-6, 1\]"
                                         r"\), got 0"):
        opt.init(_schedule(bounds={"lr": (0.0, 1.0)}))
    with pytest.raises(ValueError, match="momentum takes multiplicative steps on 1 - momentum, "
                                         "so its upper bound must be below 1, got 1.0"):
        opt.init(_schedule(bounds={"lr": (1e-6, 1.0), "momentum": (0.0, 1.0)}))
    with pytest.raises(ValueError, match=r"\['weight_decay'\] take multiplicative steps but are "
                                         "not learned"):
        SignOptimizer({"lr": 0.5}, multiplicative=("weight_decay",))


def test_backtracking_steps_again_from_the_best_schedule_with_shorter_steps():
    opt = SignOptimizer({"lr": 0.1}, backtrack=True)
    schedule = _schedule(lr=(0.5, 0.5))
    state = opt.init(schedule)

    def step(schedule, state, lr, loss):
        return opt.update(schedule, {"lr": torch.tensor(lr, dtype=torch.float64)}, state, loss)

    schedule, state = step(schedule, state, [1, -1], 1.0)  # first: the best so far
    assert schedule.values["lr"].tolist() == pytest.approx([0.4, 0.6])
    schedule, state = step(schedule, state, [-1, -1], 2.0)  # worse: back to the best, shorter
    assert schedule.values["lr"].tolist() == pytest.approx([0.45, 0.55])
    assert state.step_sizes["lr"].tolist() == pytest.approx([0.05, 0.05])
    assert state.best_loss == 1.0 and state.best_values["lr"].tolist() == [0.5, 0.5]
    schedule, state = step(schedule, state, [1, 1], 0.5)  # better: a new best, steps as usual
    assert state.best_loss == 0.5 and state.best_values["lr"].tolist() == pytest.approx(
        [0.45, 0.55])
    assert state.step_sizes["lr"].tolist() == pytest.approx([0.05, 0.025])  # second flipped
    assert schedule.values["lr"].tolist() == pytest.approx([0.40, 0.525])
    schedule, state = step(schedule, state, [1, 1], math.inf)  # a diverged run is worse too
    assert schedule.values["lr"].tolist() == pytest.approx([0.425, 0.5375])
    again = SignState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.best_loss == 0.5 and torch.equal(again.best_values["lr"],
                                                  state.best_values["lr"])
    fresh = SignState.from_dict(json.loads(json.dumps(opt.init(schedule).to_dict())))
    assert math.isinf(fresh.best_loss) and fresh.best_values is None
    with pytest.raises(ValueError, match="a backtracking SignOptimizer needs the validation "
                                         "loss of the schedule"):
        opt.update(schedule, {"lr": torch.tensor([1.0, 1.0])}, state)


def test_a_kept_sign_grows_the_step_by_grow_up_to_its_cap_and_a_flip_still_decays_it():
    opt = SignOptimizer({"lr": 0.1}, grow=2.0)
    schedule = _schedule(lr=(5.0,), bounds={"lr": (-100.0, 100.0)})
    state = opt.init(schedule)
    sizes = []
    for _ in range(6):  # the same sign every time: 0.1 (first), then x2 up to 10 x 0.1
        schedule, state = _step(opt, schedule, state, lr=[1.0])
        sizes.append(state.step_sizes["lr"].item())
    assert sizes == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert schedule.values["lr"].item() == pytest.approx(5.0 - sum(sizes))
    schedule, state = _step(opt, schedule, state, lr=[-1.0])  # a flip halves it
    assert state.step_sizes["lr"].item() == pytest.approx(0.5)
    schedule, state = _step(opt, schedule, state, lr=[0.0])   # no sign: unchanged
    assert state.step_sizes["lr"].item() == pytest.approx(0.5)


def test_grow_1_is_the_papers_loop_and_bad_grow_is_refused():
    plain, grown = SignOptimizer({"lr": 0.1}), SignOptimizer({"lr": 0.1}, grow=1.0)
    a = b = _schedule()
    sa, sb = plain.init(a), grown.init(b)
    for g in ([1, -1], [1, 1], [-1, 1]):
        a, sa = _step(plain, a, sa, lr=g)
        b, sb = _step(grown, b, sb, lr=g)
    assert a == b and torch.equal(sa.step_sizes["lr"], sb.step_sizes["lr"])
    for bad in (0.5, 11, float("nan")):
        with pytest.raises(ValueError, match=r"grow must be a number in \[1, 10\]"):
            SignOptimizer({"lr": 0.1}, grow=bad)

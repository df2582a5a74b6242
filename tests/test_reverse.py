"""Checkpointed reverse mode: the references of the forward engine, and what is its own."""

import copy

import pytest
import torch
from nets import batches_for, tiny_conv_bn, tiny_mlp
from reference import unrolled_reverse_hypergradient

from fdshpo import EnginePrices, Schedule, hypergradient, validation_loss
from fdshpo.data import ShuffledBatches
from fdshpo.engines.base import CALIBRATED_PRICES, recomputed_steps, stored_steps
from fdshpo.engines.inner import load_state, train
from fdshpo.engines.replay import ReplayError
from fdshpo.engines.reverse import ReverseEngine

LOSS = torch.nn.functional.cross_entropy
T = 11  # default interval ceil(sqrt(11)) = 4: 11 is not a multiple of it
SCHEDULE = Schedule(T, {"lr": [0.1, 0.2, 0.05], "momentum": [0.9, 0.6],
                        "weight_decay": [1e-2, 3e-3]})
ALL = ("lr", "momentum", "weight_decay")


def _case(kind, steps=T):
    model = tiny_mlp() if kind == "mlp" else tiny_conv_bn()
    data = "mlp" if kind == "mlp" else "conv"
    return model, batches_for(data, steps), batches_for(data, 2, batch=16, seed=7)


def _max_rel(ours, ref):
    return max(float((ours[n] - ref[n]).abs().max() / ref[n].abs().max()) for n in ref)


CASES = [(kind, learn, None) for kind in ("mlp", "conv_bn")
         for learn in (ALL, ("lr",), ("momentum", "weight_decay"))]
CASES += [("conv_bn", ALL, 1), ("conv_bn", ALL, 3)]  # every state stored; 11 = 3 * 3 + 2


@pytest.mark.parametrize(("kind", "learn", "recompute_every"), CASES)
def test_reverse_mode_equals_reverse_mode_through_the_unrolled_run(kind, learn,
                                                                    recompute_every):
    model, train_batches, val = _case(kind)
    result = hypergradient(model, LOSS, train_batches, val, SCHEDULE, learn=learn,
                           engine="reverse", recompute_every=recompute_every)
    ref_loss, ref = unrolled_reverse_hypergradient(model, LOSS, train_batches, val, SCHEDULE,
                                                   learn)
    assert result.engine.engine == "reverse" and result.engine.reason == "requested"
    assert set(result.grads) == set(learn)
    for name in learn:
        assert result.grads[name].shape == SCHEDULE.values[name].shape
        assert result.grads[name].dtype == torch.float64
    assert result.val_loss == pytest.approx(ref_loss, rel=1e-12)
    assert _max_rel(result.grads, ref) < 1e-8


def test_reverse_mode_agrees_with_central_finite_differences():
    model, train_batches, val = _case("conv_bn")
    result = hypergradient(model, LOSS, train_batches, val, SCHEDULE, engine="reverse")
    eps = 1e-6

    def loss_at(schedule):
        return validation_loss(load_state(model, train(model, LOSS, train_batches, schedule)),
                               val, LOSS)

    for name, values in SCHEDULE.values.items():
        for k in range(values.numel()):
            up, down = values.clone(), values.clone()
            up[k] += eps
            down[k] -= eps
            fd = (loss_at(SCHEDULE.with_values({name: up}))
                  - loss_at(SCHEDULE.with_values({name: down}))) / (2 * eps)
            assert result.grads[name][k].item() == pytest.approx(fd, rel=1e-5, abs=1e-9), \
                (name, k)


@pytest.mark.parametrize("kind", ["mlp", "conv_bn"])
def test_forward_and_reverse_engines_agree_to_1e_10(kind):
    steps = 23
    model, train_batches, val = _case(kind, steps)
    schedule = Schedule.constant(steps, lr=0.1, momentum=0.8, weight_decay=1e-2,
                                 segments={"lr": 7, "momentum": 2, "weight_decay": 3})
    fwd = hypergradient(model, LOSS, train_batches, val, schedule, engine="forward")
    rev = hypergradient(model, LOSS, train_batches, val, schedule, engine="reverse")
    assert rev.val_loss == fwd.val_loss  # the same trajectory
    assert _max_rel(rev.grads, fwd.grads) < 1e-10
    for name in fwd.params:
        assert torch.equal(rev.params[name], fwd.params[name])


def test_recomputation_is_bit_exact_whatever_the_interval():
    model, train_batches, val = _case("conv_bn")
    results = [hypergradient(model, LOSS, train_batches, val, SCHEDULE, engine="reverse",
                             recompute_every=k).grads for k in (1, 2, 4, 5, T)]
    for other in results[1:]:
        for name in results[0]:
            assert torch.equal(other[name], results[0][name]), name


def test_stored_states_and_recomputed_steps_follow_the_interval():
    assert stored_steps(11, 4) == [0, 4, 8, 9, 10, 11]  # the last stretch is kept whole
    assert recomputed_steps(11, 4) == 6  # steps 1-3 and 5-7
    assert recomputed_steps(11, 1) == 0
    assert stored_steps(1, 1) == [0, 1]


def test_segments_not_reached_by_the_backward_sweep_are_exactly_zero():
    model, train_batches, val = _case("mlp")
    engine = ReverseEngine(model, LOSS, SCHEDULE)
    from fdshpo.engines.replay import BatchReplay

    replay = BatchReplay(train_batches, T)
    # progress T + 4: the backward sweep has done inner steps 10, 9, 8, 7 (lr segment 2 is
    # steps 8-10, segment 1 steps 4-7, segment 0 steps 0-3)
    state = engine.advance(engine.init(), replay, val, until=T + 4)
    hyper = state.hyper
    assert hyper[engine.columns.index("lr", 0)] == 0
    assert hyper[engine.columns.index("lr", 1)] != 0
    assert hyper[engine.columns.index("lr", 2)] != 0
    assert hyper[engine.columns.index("momentum", 0)] == 0  # steps 0-5
    assert hyper[engine.columns.index("weight_decay", 0)] == 0


def test_a_one_step_horizon():
    model, train_batches, val = _case("conv_bn", 1)
    schedule = Schedule.constant(1, lr=0.1, momentum=0.9, weight_decay=1e-3)
    result = hypergradient(model, LOSS, train_batches, val, schedule, engine="reverse")
    _, ref = unrolled_reverse_hypergradient(model, LOSS, train_batches, val, schedule, ALL)
    assert _max_rel(result.grads, ref) < 1e-8
    assert result.grads["momentum"].item() == 0.0  # v_0 = 0: momentum has no effect


@pytest.mark.parametrize("engine", ["forward", "reverse"])
def test_gradient_clamp_is_differentiated_exactly(engine):
    model, train_batches, val = _case("conv_bn")
    clamp = 0.05
    grads = torch.autograd.grad(LOSS(model(train_batches[0][0]), train_batches[0][1]),
                                list(model.parameters()))
    assert any(bool((g.abs() > clamp).any()) for g in grads)  # the clamp is active
    assert all(bool((g.abs() < clamp).any()) for g in grads[:1])
    result = hypergradient(model, LOSS, train_batches, val, SCHEDULE, engine=engine,
                           grad_clamp=clamp)
    _, ref = unrolled_reverse_hypergradient(model, LOSS, train_batches, val, SCHEDULE, ALL,
                                            grad_clamp=clamp)
    _, unclamped = unrolled_reverse_hypergradient(model, LOSS, train_batches, val, SCHEDULE,
                                                  ALL)
    assert _max_rel(result.grads, ref) < 1e-8
    assert _max_rel(unclamped, ref) > 1e-3  # the clamp changes the answer


def test_validation_loss_is_the_mean_over_every_example():
    model, train_batches, _ = _case("mlp")
    x, y = batches_for("mlp", 1, batch=37, seed=3)[0]
    uneven = [(x[:16], y[:16]), (x[16:32], y[16:32]), (x[32:], y[32:])]  # 16, 16, 5
    trained = load_state(model, train(model, LOSS, train_batches, SCHEDULE))
    with torch.no_grad():
        whole = LOSS(trained(x), y).item()
    assert validation_loss(trained, uneven, LOSS) == pytest.approx(whole, rel=1e-13)
    for engine in ("forward", "reverse"):
        result = hypergradient(model, LOSS, train_batches, uneven, SCHEDULE, engine=engine)
        assert result.val_loss == pytest.approx(whole, rel=1e-13)
        _, ref = unrolled_reverse_hypergradient(model, LOSS, train_batches, uneven, SCHEDULE,
                                                ALL)
        assert _max_rel(result.grads, ref) < 1e-8
    batch_means = sum(LOSS(trained(a), b).item() for a, b in uneven) / 3
    assert abs(batch_means - whole) > 1e-3  # the old mean of batch means was another number


def test_reverse_mode_refuses_a_generator_and_says_what_to_pass():
    model, train_batches, val = _case("mlp")
    with pytest.raises(ReplayError, match=r"one-shot iterator .*pass a list of batches, a "
                                          r"fdshpo\.data\.ShuffledBatches.*engine='forward'"):
        hypergradient(model, LOSS, (b for b in train_batches), val, SCHEDULE, engine="reverse")


def test_auto_falls_back_to_forward_for_a_generator():
    model, train_batches, val = _case("mlp")
    fast_reverse = EnginePrices(forward_base=1.0, per_tangent=1.0, reverse_step=1e-3,
                                recompute=1e-3)
    result = hypergradient(model, LOSS, (b for b in train_batches), val, SCHEDULE,
                           prices=fast_reverse)
    assert result.engine.engine == "forward"
    assert "one-shot iterator" in result.engine.reason
    listed = hypergradient(model, LOSS, train_batches, val, SCHEDULE, prices=fast_reverse)
    assert listed.engine.engine == "reverse"
    assert "cheaper than forward by the given prices" in listed.engine.reason
    assert _max_rel(listed.grads, result.grads) < 1e-10


def test_auto_is_deterministic_by_default_and_can_measure():
    model, train_batches, val = _case("mlp")
    first, again = (hypergradient(model, LOSS, train_batches, val, SCHEDULE) for _ in range(2))
    assert first.engine == again.engine  # calibrated prices: the same choice every time
    assert "by the calibrated CPU prices" in first.engine.reason
    assert first.engine.prices == CALIBRATED_PRICES["cpu"]
    for name in first.grads:
        assert torch.equal(first.grads[name], again.grads[name])
    by_k = {learn: hypergradient(model, LOSS, train_batches, val, SCHEDULE, learn=learn).engine
            for learn in (("lr",), ALL)}  # 3 learned values against 7
    assert by_k[("lr",)].cost["reverse"] == by_k[ALL].cost["reverse"]  # independent of K
    assert by_k[("lr",)].cost["forward"] < by_k[ALL].cost["forward"]
    measured = hypergradient(model, LOSS, train_batches, val, SCHEDULE, prices="measure")
    assert "prices measured on the first batch" in measured.engine.reason
    prices = measured.engine.prices
    assert min(prices.forward_base, prices.reverse_step, prices.recompute) > 0
    assert prices.per_tangent >= 0  # a tangent of a tiny network may cost nothing measurable
    assert set(measured.engine.cost) == {"forward", "reverse"}


def test_auto_keeps_within_the_memory_limit():
    model, train_batches, val = _case("mlp")
    fast_reverse = EnginePrices(1.0, 1.0, 1e-3, 1e-3)
    choice = hypergradient(model, LOSS, train_batches, val, SCHEDULE, prices=fast_reverse,
                           memory_limit=1).engine  # nothing fits: the smaller state
    smaller = min(choice.memory, key=choice.memory.get)
    assert choice.engine == smaller and "is the smaller" in choice.reason
    limit = (choice.memory["forward"] + choice.memory["reverse"]) // 2
    fits = hypergradient(model, LOSS, train_batches, val, SCHEDULE, prices=fast_reverse,
                         memory_limit=limit).engine
    assert fits.engine == smaller and "fits in the" in fits.reason


def test_auto_stores_every_state_when_they_all_fit():
    """Item 5 of issue 20: no recomputed steps when the whole trajectory fits in the limit;
    one state every ceil(sqrt(T)) steps when only that fits; the same hypergradient."""
    model, train_batches, val = _case("mlp")
    fast_reverse = EnginePrices(1.0, 1.0, 1e-3, 1e-3)
    roomy = hypergradient(model, LOSS, train_batches, val, SCHEDULE, prices=fast_reverse,
                          memory_limit=2**30)
    assert (roomy.engine.engine, roomy.engine.recompute_every) == ("reverse", 1)
    assert roomy.engine.cost["reverse"] == pytest.approx(T * 1e-3)  # nothing recomputed
    tight = hypergradient(model, LOSS, train_batches, val, SCHEDULE, prices=fast_reverse,
                          memory_limit=roomy.engine.memory["reverse"] - 1)
    assert (tight.engine.engine, tight.engine.recompute_every) == ("reverse", 4)
    assert tight.engine.memory["reverse"] < roomy.engine.memory["reverse"]
    for name in roomy.grads:
        assert torch.equal(roomy.grads[name], tight.grads[name])
    given = hypergradient(model, LOSS, train_batches, val, SCHEDULE, prices=fast_reverse,
                          memory_limit=2**30, recompute_every=3)
    assert given.engine.recompute_every == 3  # an interval that is given is kept


def test_a_stream_that_changes_when_read_again_is_an_error():
    model, train_batches, val = _case("mlp")

    class Reshuffling:  # re-iterable, but every pass gives another order
        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            order = train_batches if self.passes == 1 else train_batches[::-1]
            return iter(order)

    with pytest.raises(ReplayError, match=r"different batch for step \d+ when read again"):
        hypergradient(model, LOSS, Reshuffling(), val, SCHEDULE, engine="reverse")

    class Shrinking(Reshuffling):  # yields fewer batches on later passes
        def __iter__(self):
            self.passes += 1
            return iter(train_batches if self.passes == 1 else train_batches[:2])

    with pytest.raises(ReplayError, match="ran out before step 10 when read again"):
        hypergradient(model, LOSS, Shrinking(), val, SCHEDULE, engine="reverse")


def test_shuffled_batches_are_replayed_by_index(tmp_path):
    model = tiny_mlp()
    gen = torch.Generator().manual_seed(0)
    stream = ShuffledBatches(torch.randn(40, 6, generator=gen, dtype=torch.float64),
                             torch.randint(0, 3, (40,), generator=gen), 8, T, seed=3)
    val = batches_for("mlp", 2, batch=16, seed=7)
    fwd = hypergradient(model, LOSS, stream, val, SCHEDULE, engine="forward")
    rev = hypergradient(model, LOSS, stream, val, SCHEDULE, engine="reverse")
    assert _max_rel(rev.grads, fwd.grads) < 1e-10
    assert torch.equal(list(stream.window(5, 7))[1][0], list(stream)[6][0])


def test_wrong_number_of_batches_is_reported_in_reverse_mode():
    model, train_batches, val = _case("mlp")
    with pytest.raises(ValueError, match="train_batches ran out after 10 steps but the schedule "
                                         "has 11 steps"):
        hypergradient(model, LOSS, train_batches[:10], val, SCHEDULE, engine="reverse")
    with pytest.raises(ValueError, match="yields more than the schedule's 11 steps"):
        hypergradient(model, LOSS, train_batches + train_batches[:1], val, SCHEDULE,
                      engine="reverse")


def test_engine_options_are_checked():
    model, train_batches, val = _case("mlp")
    with pytest.raises(ValueError, match=r"engine must be one of \['auto', 'forward', "
                                         r"'reverse'\], got 'backward'"):
        hypergradient(model, LOSS, train_batches, val, SCHEDULE, engine="backward")
    with pytest.raises(ValueError, match="hvp_clamp clamps forward mode's tangent products"):
        hypergradient(model, LOSS, train_batches, val, SCHEDULE, engine="reverse", hvp_clamp=1.0)
    with pytest.raises(ValueError, match="recompute_every must be a positive int"):
        hypergradient(model, LOSS, train_batches, val, SCHEDULE, engine="reverse",
                      recompute_every=0)
    auto = hypergradient(model, LOSS, train_batches, val, SCHEDULE, hvp_clamp=1.0)
    assert auto.engine.engine == "forward" and "hvp_clamp" in auto.engine.reason


def test_reverse_mode_leaves_the_model_untouched_and_works_in_float32():
    model, train_batches, val = _case("conv_bn")
    before = copy.deepcopy(model.state_dict())
    exact = hypergradient(model, LOSS, train_batches, val, SCHEDULE, engine="reverse").grads
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    f32 = hypergradient(copy.deepcopy(model).float(), LOSS,
                        [(x.float(), y) for x, y in train_batches],
                        [(x.float(), y) for x, y in val], SCHEDULE, engine="reverse").grads
    assert _max_rel(f32, exact) < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("hvp", ["reverse", "forward"])
def test_cuda_matches_cpu(hvp):
    model, train_batches, val = _case("conv_bn")
    cpu = hypergradient(model, LOSS, train_batches, val, SCHEDULE, engine="reverse").grads

    def on_gpu(batches):
        return [(x.cuda(), y.cuda()) for x, y in batches]

    cuda = hypergradient(copy.deepcopy(model).cuda(), LOSS, on_gpu(train_batches), on_gpu(val),
                         SCHEDULE, engine="reverse", hvp=hvp).grads
    assert _max_rel(cuda, cpu) < 1e-8

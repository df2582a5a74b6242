import copy
import functools

import pytest
import torch
from nets import batches_for, tiny_conv_bn, tiny_mlp
from reference import sgd_reference_trajectory, unrolled_reverse_hypergradient

import fdshpo
from fdshpo import InnerRunDiverged, Schedule, hypergradient
from fdshpo.engines.forward import ForwardEngine

forward_mode = functools.partial(hypergradient, engine="forward")

LOSS = torch.nn.functional.cross_entropy
T = 11
SCHEDULE = Schedule(T, {"lr": [0.1, 0.2, 0.05], "momentum": [0.9, 0.6],
                        "weight_decay": [1e-2, 3e-3]})


def _case(kind):
    model = tiny_mlp() if kind == "mlp" else tiny_conv_bn()
    data = "mlp" if kind == "mlp" else "conv"
    return model, batches_for(data, T), batches_for(data, 2, batch=16, seed=7)


def _assert_rel_close(ours, ref, rtol):
    for name in ref:
        err = (ours[name] - ref[name]).abs().max() / ref[name].abs().max()
        assert err < rtol, f"{name}: relative error {err:.3g}"


@pytest.mark.parametrize("hvp", ["reverse", "forward"])
@pytest.mark.parametrize("kind", ["mlp", "conv_bn"])
@pytest.mark.parametrize("learn", [("lr", "momentum", "weight_decay"), ("lr",),
                                   ("momentum", "weight_decay")])
def test_hypergradients_equal_reverse_mode_through_the_unrolled_run(kind, learn, hvp):
    model, train, val = _case(kind)
    result = forward_mode(model, LOSS, train, val, SCHEDULE, learn=learn, hvp=hvp)
    ref_loss, ref = unrolled_reverse_hypergradient(model, LOSS, train, val, SCHEDULE, learn)
    assert set(result.grads) == set(learn)
    for name in learn:
        assert result.grads[name].shape == SCHEDULE.values[name].shape
        assert result.grads[name].dtype == torch.float64
    assert result.val_loss == pytest.approx(ref_loss, rel=1e-12)
    _assert_rel_close(result.grads, ref, 1e-8)


SHAPED = Schedule(T, {"lr": [0.2, 0.3, 0.1], "momentum": [0.9, 0.6],
                     "weight_decay": [1e-2, 3e-3]},
                  shapes={"lr": "linear", "momentum": "cosine", "weight_decay": "linear"})


@pytest.mark.parametrize("engine", ["forward", "reverse"])
@pytest.mark.parametrize("kind", ["mlp", "conv_bn"])
def test_shaped_hypergradients_equal_reverse_mode_through_the_unrolled_run(kind, engine):
    # h_t = lambda_k(t) * shape(t / T): the segment values scale a base shape, so each step's
    # derivative is scaled by the shape factor, in either engine
    model, train, val = _case(kind)
    result = hypergradient(model, LOSS, train, val, SHAPED, engine=engine)
    assert result.engine.engine == engine
    ref_loss, ref = unrolled_reverse_hypergradient(model, LOSS, train, val, SHAPED,
                                                   fdshpo.HYPERPARAMETERS)
    assert result.val_loss == pytest.approx(ref_loss, rel=1e-12)
    _assert_rel_close(result.grads, ref, 1e-8)
    reference = dict(sgd_reference_trajectory(model, LOSS, train, SHAPED).named_parameters())
    for name, value in result.params.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-11, atol=1e-13)


def test_hypergradients_agree_with_central_finite_differences():
    model, train, val = _case("conv_bn")
    result = forward_mode(model, LOSS, train, val, SCHEDULE)
    eps = 1e-6
    for name, values in SCHEDULE.values.items():
        for k in range(values.numel()):
            losses = []
            for sign in (1, -1):
                shifted = values.clone()
                shifted[k] += sign * eps
                schedule = SCHEDULE.with_values({name: shifted})
                losses.append(forward_mode(model, LOSS, train, val, schedule, learn=(name,))
                              .val_loss)
            fd = (losses[0] - losses[1]) / (2 * eps)
            assert result.grads[name][k].item() == pytest.approx(fd, rel=1e-5, abs=1e-9), \
                (name, k)


def test_segment_hypergradients_sum_to_the_single_value_hypergradient():
    model, train, val = _case("mlp")
    shared = Schedule.constant(T, lr=0.1, momentum=0.8, weight_decay=1e-2)
    split = Schedule.constant(T, lr=0.1, momentum=0.8, weight_decay=1e-2,
                              segments={"lr": 4, "momentum": 3, "weight_decay": 5})
    one = forward_mode(model, LOSS, train, val, shared).grads
    many = forward_mode(model, LOSS, train, val, split).grads
    for name in one:
        assert many[name].sum().item() == pytest.approx(one[name].item(), rel=1e-10)


@pytest.mark.parametrize("grad_clamp", [None, 0.05])
@pytest.mark.parametrize("engine", ["forward", "reverse"])
def test_final_parameters_equal_torch_optim_sgd(engine, grad_clamp):
    model, train, val = _case("conv_bn")
    result = hypergradient(model, LOSS, train, val, SCHEDULE, engine=engine,
                           grad_clamp=grad_clamp)
    reference = dict(sgd_reference_trajectory(model, LOSS, train, SCHEDULE, grad_clamp)
                     .named_parameters())
    unclamped = dict(sgd_reference_trajectory(model, LOSS, train, SCHEDULE).named_parameters())
    for name, value in result.params.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-11, atol=1e-13)
    if grad_clamp is not None:  # clip_grad_value_ changed the trajectory, and so did we
        assert any(not torch.allclose(reference[n], unclamped[n]) for n in reference)


def test_accepts_generators_and_leaves_the_model_untouched():  # forward mode reads them once
    model, train, val = _case("conv_bn")
    before = copy.deepcopy(model.state_dict())
    from_list = forward_mode(model, LOSS, train, val, SCHEDULE)
    from_gen = forward_mode(model, LOSS, (b for b in train), iter(val), SCHEDULE)
    for name in from_list.grads:
        assert torch.equal(from_list.grads[name], from_gen.grads[name])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert from_list.train_losses.shape == (T,)
    assert torch.isfinite(from_list.train_losses).all()


def test_float32_models_work_and_stay_close_to_float64():
    model, train, val = _case("mlp")
    exact = forward_mode(model, LOSS, train, val, SCHEDULE).grads
    f32 = [(x.float(), y) for x, y in train]
    approx = forward_mode(copy.deepcopy(model).float(), LOSS, f32,
                           [(x.float(), y) for x, y in val], SCHEDULE).grads
    _assert_rel_close(approx, exact, 1e-3)


def _state_bytes(state) -> int:
    """Bytes of the distinct tensors an engine's state holds (stored trajectory included)."""
    tensors = [t for t in state if isinstance(t, torch.Tensor)]
    for value in state:
        if isinstance(value, dict):
            tensors += [t for pair in value.values() for t in pair]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


@pytest.mark.parametrize("engine", ["forward", "reverse"])
def test_state_memory_of_real_runs_at_two_horizons(engine):
    """Peak bytes of the state over whole runs 10x apart in length: flat for forward mode,
    O(sqrt(T)) stored states for reverse mode; no autograd history kept across steps."""
    model = tiny_conv_bn()  # BatchNorm: where torch.func's pullback carries autograd history
    x, y = batches_for("conv", 1)[0]
    peaks = {}
    for horizon in (8, 80):
        schedule = Schedule.constant(horizon, lr=0.1, momentum=0.5, segments={"lr": 7})
        peak = [0]

        def watch(state, peak=peak):
            assert not any(t.requires_grad for t in state if isinstance(t, torch.Tensor))
            peak[0] = max(peak[0], _state_bytes(state))

        hypergradient(model, LOSS, [(x, y)] * horizon, [(x, y)], schedule, engine=engine,
                      on_step=watch)
        peaks[horizon] = peak[0]
    P, f64 = sum(p.numel() for p in model.parameters()), 8
    losses = 72 * f64  # the (T,) training losses grow by 72 entries
    if engine == "forward":  # theta, v, Z and C of 9 columns: 20 P, whatever the horizon
        assert peaks[8] == 20 * P * f64 + 8 * f64
        assert peaks[80] - peaks[8] == losses
    else:  # stored (theta, v) pairs grow like sqrt(T), bounded by the engine's own count
        from fdshpo.engines.base import peak_states

        fingerprints = 72 * 3 * f64
        pairs = (peaks[80] - peaks[8] - losses - fingerprints) / (2 * P * f64)
        assert 8 <= pairs <= peak_states(80, 9) - peak_states(8, 3) == 12, pairs  # 72 if all
        # were stored


def test_columns_of_segments_not_started_stay_exactly_zero():
    model, train, _ = _case("mlp")
    engine = ForwardEngine(model, LOSS, SCHEDULE)
    state = engine.advance(engine.init(), train, until=5)  # lr segment 2 starts at step 8
    column = engine.columns.index("lr", 2)
    assert engine.columns.live(4) <= column
    assert torch.count_nonzero(state.Z[column]) == 0 and torch.count_nonzero(state.C[column]) == 0


def test_reference_clamps_are_off_by_default_and_change_the_result_when_on():
    model, train, val = _case("mlp")
    exact = forward_mode(model, LOSS, train, val, SCHEDULE).grads
    clamped = forward_mode(model, LOSS, train, val, SCHEDULE, hvp_clamp=1e-3).grads
    assert any(not torch.allclose(exact[n], clamped[n]) for n in exact)


def test_wrong_number_of_batches_is_reported():
    model, train, val = _case("mlp")
    with pytest.raises(ValueError, match="train_batches ran out after 10 steps but the schedule "
                                         "has 11 steps"):
        forward_mode(model, LOSS, train[:10], val, SCHEDULE)
    with pytest.raises(ValueError, match="yields more than the schedule's 11 steps"):
        forward_mode(model, LOSS, train + train[:1], val, SCHEDULE)
    with pytest.raises(ValueError, match="val_batches is empty"):
        forward_mode(model, LOSS, train, [], SCHEDULE)


def test_unknown_hvp_mode_is_reported():
    model, train, val = _case("mlp")
    with pytest.raises(ValueError,
                       match=r"hvp must be one of \['auto', 'reverse', 'forward'\], got 'fwd'"):
        forward_mode(model, LOSS, train, val, SCHEDULE, hvp="fwd")


def test_unknown_or_empty_learn_is_reported():
    model, train, val = _case("mlp")
    with pytest.raises(ValueError, match=r"unknown hyperparameter name\(s\) \['beta'\]"):
        forward_mode(model, LOSS, train, val, SCHEDULE, learn=("lr", "beta"))
    with pytest.raises(ValueError, match="learn must name at least one"):
        forward_mode(model, LOSS, train, val, SCHEDULE, learn=())


def test_divergence_reports_the_inner_step_where_it_happened():
    model, train, val = _case("mlp")
    # from step 6 on, theta is multiplied by ~1e200 per step: it overflows at step 7 or 8
    schedule = Schedule(T, {"lr": [0.1, 1e100], "momentum": [0.9], "weight_decay": [0.0, -1e100]},
                        bounds={"lr": (0.0, 1e101), "weight_decay": (-1e101, 1.0)})
    with pytest.raises(InnerRunDiverged, match=r"the inner run diverged at step \d+ of 11"
                                               r".*lower the learning rate") as info:
        forward_mode(model, LOSS, train, val, schedule)
    assert info.value.step >= 6  # lr segment 1 starts at step 6; earlier steps were finite
    assert info.value.hyperparameters["lr"] == 1e100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model, train, val = _case("conv_bn")
    cpu = forward_mode(model, LOSS, train, val, SCHEDULE).grads
    def on_gpu(batches):
        return [(x.cuda(), y.cuda()) for x, y in batches]

    cuda = forward_mode(copy.deepcopy(model).cuda(), LOSS, on_gpu(train), on_gpu(val),
                         SCHEDULE).grads
    _assert_rel_close(cuda, cpu, 1e-8)


def test_public_api_names():
    assert fdshpo.hypergradient is hypergradient
    assert fdshpo.Schedule is Schedule

import pytest
import torch
from nets import batches_for, tiny_conv_bn, tiny_mlp
from reference import sgd_reference_trajectory

from fdshpo import Schedule
from fdshpo.engines.inner import load_state, train

LOSS = torch.nn.functional.cross_entropy


@pytest.mark.parametrize("kind", ["mlp", "conv_bn"])
def test_trajectory_equals_torch_optim_sgd_with_the_schedule_applied_per_step(kind):
    model = tiny_mlp() if kind == "mlp" else tiny_conv_bn()
    T = 13  # not divisible by any segment count below
    schedule = Schedule(T, {"lr": [0.1, 0.05, 0.2], "momentum": [0.9, 0.5],
                            "weight_decay": [1e-3, 0.0, 5e-3, 1e-2]})
    batches = batches_for("mlp" if kind == "mlp" else "conv", T)
    reference = sgd_reference_trajectory(model, LOSS, batches, schedule)
    state = train(model, LOSS, batches, schedule)
    ours = load_state(model, state)
    for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=name)
    if kind == "conv_bn":  # running statistics are tracked, not frozen
        assert not torch.equal(ours[1].running_mean, model[1].running_mean)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_training_does_not_modify_the_model_nor_its_mode(mode):
    model = tiny_conv_bn()
    model.train(mode == "train")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, LOSS, batches_for("conv", 3), Schedule.constant(3, lr=0.1, momentum=0.9))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(m.training == (mode == "train") for m in model.modules())


def test_too_few_batches_is_reported_with_the_counts():
    with pytest.raises(ValueError, match="batches ran out after 2 steps but the schedule has 5"):
        train(tiny_mlp(), LOSS, batches_for("mlp", 2), Schedule.constant(5, lr=0.1))


def test_divergence_names_the_step_and_hyperparameters():
    # weight decay of -1e100 with lr 1e100 multiplies theta by ~1e200 per step: inf by step 2
    schedule = Schedule.constant(6, lr=1e100, weight_decay=-1e100,
                                 bounds={"lr": (0, 1e101), "weight_decay": (-1e101, 0)})
    with pytest.raises(FloatingPointError, match=r"training diverged at inner step [1-5]: loss is "
                                                 r".*lr=1e\+100.*lower the learning rate"):
        train(tiny_mlp(), LOSS, batches_for("mlp", 6), schedule)

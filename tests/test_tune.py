import pytest
import torch
from nets import sample_subset_problem

from fdshpo import Schedule, SignOptimizer
from fdshpo.evaluate import retrain_and_test
from fdshpo.tune import TuneState, combine_hypergradients, tune

HORIZON = 12


@pytest.fixture(scope="module")
def problem():
    return sample_subset_problem(train=400, test=200, seed=3)


def _initial():
    return Schedule.constant(HORIZON, lr=0.05, momentum=0.5, weight_decay=1e-4,
                             segments={"lr": 3}, bounds={"lr": (0.0, 1.0)})


def test_tune_records_every_outer_step_and_moves_the_schedule(problem):
    seen = []
    result = tune(problem, _initial(), SignOptimizer(), outer_steps=3, callback=seen.append)
    assert len(result.history) == 3 and len(seen) == 3
    assert [r.outer_step for r in result.history] == [0, 1, 2]
    assert result.history[0].schedule == _initial().to_dict()
    assert result.schedule != _initial()
    for record in result.history:
        assert set(record.hypergradients) == {"lr", "momentum", "weight_decay"}
        assert len(record.hypergradients["lr"]) == 3
        assert record.val_loss > 0 and record.seconds > 0
    assert seen[-1].schedule == result.schedule


def test_resuming_from_a_checkpointed_state_equals_an_uninterrupted_run(problem):
    full = tune(problem, _initial(), SignOptimizer(), outer_steps=3)
    states = []
    tune(problem, _initial(), SignOptimizer(), outer_steps=1, callback=states.append)
    restored = TuneState.from_dict(states[-1].to_dict())  # through plain data, as on disk
    resumed = tune(problem, _initial(), SignOptimizer(), outer_steps=3, resume=restored)
    assert resumed.schedule == full.schedule
    assert [r.hypergradients for r in resumed.history] == [r.hypergradients for r in full.history]


def test_replicas_are_averaged_before_the_sign_step(problem):
    result = tune(problem, _initial(), SignOptimizer(), outer_steps=1, replicas=2)
    record = result.history[0]
    assert len(record.replica_hypergradients) == 2
    assert record.replica_hypergradients[0] != record.replica_hypergradients[1]
    mean = combine_hypergradients(record.replica_hypergradients)
    assert record.hypergradients == {n: v.tolist() for n, v in mean.items()}


def test_the_loop_stops_once_every_value_has_converged(problem):
    # step sizes far below 50% of every value: converged after the first update
    optimizer = SignOptimizer({"lr": 1e-4, "momentum": 1e-4, "weight_decay": 1e-8}, tol=0.5)
    result = tune(problem, _initial(), optimizer, outer_steps=5)
    assert result.converged and len(result.history) == 1


def test_bad_budgets_are_refused(problem):
    with pytest.raises(ValueError, match="outer_steps must be a positive int, got 0"):
        tune(problem, _initial(), outer_steps=0)
    with pytest.raises(ValueError, match="replicas must be a positive int, got 0"):
        tune(problem, _initial(), replicas=0)


def test_retraining_with_a_learned_schedule_reports_test_accuracy(problem):
    evaluation = retrain_and_test(problem, _initial(), num_steps=24)
    assert 0.0 <= evaluation.test_accuracy <= 1.0
    assert evaluation.num_steps == 24
    assert torch.isfinite(torch.tensor(evaluation.test_loss))
    # a useful schedule beats chance (10 classes) on the sample
    assert evaluation.test_accuracy > 0.3

"""The final retraining: its own seeds, and a diverged retraining as a result."""

from __future__ import annotations

import pytest
from nets import sample_subset_problem

from fdshpo import InnerRunDiverged, Schedule
from fdshpo.seeds import PURPOSES, derive_seed
from fdshpo.tune.retrain import is_collapsed, retrain_and_evaluate, retrain_and_test


@pytest.fixture(scope="module")
def problem():
    return sample_subset_problem(train=400, test=200, seed=3)


def test_a_diverged_retraining_is_reported_with_the_step_and_values(problem):
    unstable = Schedule.constant(24, lr=12.0, momentum=0.9)
    with pytest.raises(InnerRunDiverged, match=r"training diverged at inner step 17: .* "
                                               r"with lr=12, momentum=0\.9"):
        retrain_and_test(problem, unstable)
    evaluation = retrain_and_evaluate(problem, unstable)
    assert evaluation.test_accuracy is None and evaluation.backoff is None
    assert evaluation.diverged["step"] == 17
    assert evaluation.diverged["hyperparameters"] == {"lr": 12.0, "momentum": 0.9,
                                                      "weight_decay": 0.0}


def test_halve_lr_retrains_once_with_halved_learning_rates_and_says_so(problem):
    unstable = Schedule.constant(24, lr=12.0, momentum=0.9)
    evaluation = retrain_and_evaluate(problem, unstable, on_diverged="halve_lr")
    assert evaluation.diverged is None and 0.0 <= evaluation.test_accuracy <= 1.0
    assert evaluation.backoff["lr_scale"] == 0.5
    assert evaluation.backoff["first_attempt"]["step"] == 17
    halved = retrain_and_test(problem, Schedule.constant(24, lr=6.0, momentum=0.9))
    assert evaluation.test_accuracy == halved.test_accuracy
    # diverging twice reports the second attempt
    hopeless = retrain_and_evaluate(problem, Schedule.constant(24, lr=1e4, momentum=0.9),
                                    on_diverged="halve_lr")
    assert hopeless.diverged["hyperparameters"]["lr"] == 5e3
    with pytest.raises(ValueError, match=r"on_diverged must be one of \['report', 'halve_lr'\]"):
        retrain_and_evaluate(problem, unstable, on_diverged="retry")


def test_every_random_stream_of_a_run_has_a_seed_of_its_own(problem):
    seeds = [problem.split_seed(s) for s in range(5)]
    seeds += [problem.init_seed(r) for r in range(5)]
    seeds += [problem.order_seed(s, r) for s in range(5) for r in range(5)]
    seeds += [derive_seed(problem.seed, "retrain-init"), derive_seed(problem.seed,
                                                                     "retrain-order")]
    assert len(set(seeds)) == len(seeds) == 37
    # the old sums collided: split_seed(s) == order_seed(s, 0)
    assert problem.split_seed(0) != problem.order_seed(0, 0)
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(7, "order", 1, 2) == derive_seed(7, "order", 1, 2)  # a function of inputs
    assert derive_seed(7, "order", 1, 2) != derive_seed(7, "order", 2, 1)
    with pytest.raises(ValueError, match=r"unknown seed purpose 'dropout'; known: "
                                         + str(sorted(PURPOSES)).replace("[", r"\[")):
        derive_seed(0, "dropout")


def test_without_resampling_every_outer_step_sees_outer_step_0s_split_and_batches(problem):
    import dataclasses

    import torch

    fixed = dataclasses.replace(problem, resample=False)
    for outer_step in (1, 4):
        assert fixed.split_seed(outer_step) == problem.split_seed(0)
        assert fixed.order_seed(outer_step, 2) == problem.order_seed(0, 2)
        same, fresh, first = fixed(outer_step, 0, 5), problem(outer_step, 0, 5), problem(0, 0, 5)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(same.train_batches, first.train_batches))
        assert not all(torch.equal(a[0], b[0])
                       for a, b in zip(fresh.train_batches, first.train_batches))
        assert torch.equal(same.val_batches[0][0], first.val_batches[0][0])
    assert fixed.order_seed(1, 0) != fixed.order_seed(1, 1)  # replicas still differ


def test_a_retraining_that_learns_nothing_is_flagged_collapsed(problem):
    frozen = retrain_and_test(problem, Schedule.constant(24, lr=0.0))  # the untrained network
    assert frozen.diverged is None and frozen.test_accuracy == pytest.approx(0.115)
    assert frozen.collapsed is True
    trained = retrain_and_test(problem, Schedule.constant(24, lr=0.05))
    assert trained.test_accuracy == pytest.approx(0.65) and trained.collapsed is False
    assert retrain_and_evaluate(problem, Schedule.constant(24, lr=0.0)).collapsed is True
    # a tenth of the way from chance to 100%: 19% for 10 classes, 55% for 2
    assert is_collapsed(0.189, 10) and not is_collapsed(0.191, 10)
    assert is_collapsed(0.549, 2) and not is_collapsed(0.551, 2)

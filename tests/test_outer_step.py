"""The outer step every runner takes: combining replicas, the divergence policy, the record,
and the selection rule, checked against hand-computed numbers (no training here)."""

from __future__ import annotations

import json
import math

import pytest

from fdshpo import InnerRunDiverged, Schedule, SignOptimizer
from fdshpo.tune.step import OuterStep, ReplicaResult, select_schedule


def _schedule(lr=(0.5, 0.5)):
    return Schedule(10, {"lr": list(lr), "momentum": [0.5], "weight_decay": [0.0]},
                    {"lr": (0.0, 1.0), "weight_decay": (0.0, 0.1)})


def _outer(replicas=2, **options):
    return OuterStep(SignOptimizer({"lr": 0.1, "momentum": 0.1, "weight_decay": 1e-3}),
                     replicas, **options)


def _result(replica, lr, momentum, weight_decay, loss, seconds=1.0, outer_step=0):
    return ReplicaResult(outer_step, replica, loss, {"lr": lr, "momentum": [momentum],
                                                     "weight_decay": [weight_decay]}, seconds)


def _diverged(replica, step=7, outer_step=0):
    error = InnerRunDiverged(f"the inner run diverged at step {step} of 10", step,
                             {"lr": 0.9, "momentum": 0.5, "weight_decay": 0.0})
    return ReplicaResult.of_divergence(outer_step, replica, error, seconds=0.5)


def test_apply_takes_the_sign_of_the_replica_mean_and_records_the_step():
    outer = _outer()
    results = [_result(0, [1.0, -3.0], 2.0, -1.0, 0.25, seconds=2.0),
               _result(1, [2.0, 1.0], -4.0, -1.0, 0.75, seconds=3.0)]
    # mean: lr [1.5, -1.0], momentum -1.0, weight decay -1.0
    state = outer.apply(outer.init(_schedule()), list(reversed(results)))  # any order
    assert state.schedule.values["lr"].tolist() == pytest.approx([0.4, 0.6])
    assert state.schedule.values["momentum"].tolist() == pytest.approx([0.6])
    assert state.schedule.values["weight_decay"].tolist() == pytest.approx([1e-3])
    record = state.history[0]
    assert record.hypergradients == {"lr": [1.5, -1.0], "momentum": [-1.0],
                                     "weight_decay": [-1.0]}
    assert record.replica_hypergradients == [results[0].grads, results[1].grads]
    assert record.val_loss == 0.5 and record.replica_val_losses == [0.25, 0.75]
    assert record.seconds == 5.0  # compute spent: the sum over replicas, whoever ran them
    assert record.schedule == _schedule().to_dict() and record.diverged_replicas == []
    assert state.next_outer_step == 1 and not state.converged


def test_a_diverged_replica_lowers_every_learning_rate_by_its_step():
    outer = _outer()
    state = outer.apply(outer.init(_schedule()),
                        [_result(0, [-1.0, -1.0], 1.0, 1.0, 0.3), _diverged(1)])
    assert state.schedule.values["lr"].tolist() == pytest.approx([0.4, 0.4])
    assert state.schedule.values["momentum"].tolist() == [0.5]  # zero hypergradient: unmoved
    record = state.history[0]
    assert record.diverged_replicas == [1] and math.isinf(record.val_loss)
    assert record.hypergradients == {"lr": [1.0, 1.0], "momentum": [0.0],
                                     "weight_decay": [0.0]}


def test_the_raise_policy_names_the_replica_the_step_and_the_values():
    outer = _outer(on_diverged="raise")
    with pytest.raises(InnerRunDiverged, match="replica 1 of outer step 0: the inner run "
                                               "diverged at step 7 of 10") as info:
        outer.apply(outer.init(_schedule()), [_result(0, [1.0, 1.0], 1.0, 1.0, 0.3),
                                              _diverged(1)])
    assert info.value.step == 7 and info.value.hyperparameters["lr"] == 0.9


def test_replica_results_cross_json_as_kfp_passes_them():
    for result in (_result(1, [1.5, -2.0], 0.5, 1e-9, 0.4), _diverged(0)):
        data = json.loads(json.dumps(result.to_dict()))
        data["replica"] = float(data["replica"])  # KFP returns list numbers as floats
        assert ReplicaResult.from_dict(data) == result


def test_apply_refuses_results_of_another_step_or_a_missing_replica():
    outer = _outer()
    state = outer.init(_schedule())
    with pytest.raises(ValueError, match=r"outer step 0 needs the results of replicas 0\.\.1 of "
                                         r"that step, got \(outer step, replica\) \[\(0, 0\)\]"):
        outer.apply(state, [_result(0, [1.0, 1.0], 1.0, 1.0, 0.3)])
    with pytest.raises(ValueError, match=r"got \(outer step, replica\) \[\(0, 0\), \(1, 1\)\]"):
        outer.apply(state, [_result(0, [1.0, 1.0], 1.0, 1.0, 0.3),
                            _result(1, [1.0, 1.0], 1.0, 1.0, 0.3, outer_step=1)])
    with pytest.raises(ValueError, match=r"on_diverged must be one of \['lower_lr', 'raise'\], "
                                         "got 'skip'"):
        _outer(on_diverged="skip")


def test_best_selection_returns_the_best_validated_schedule_and_last_the_last_iterate():
    outer = _outer(replicas=1)
    state = outer.init(_schedule())
    script = [([1.0, 1.0], 0.5), ([1.0, -1.0], 0.3), (None, math.inf), ([-1.0, 1.0], 0.3),
              ([1.0, 1.0], 0.4)]
    for s, (lr, loss) in enumerate(script):
        result = (_diverged(0, outer_step=s) if lr is None
                  else _result(0, lr, 1.0, 1.0, loss, outer_step=s))
        state = outer.apply(state, [result])
    # 0.3 twice: the later one (outer step 3) wins; the diverged step never does
    assert select_schedule(state, "best") == Schedule.from_dict(state.history[3].schedule)
    assert select_schedule(state, "last") == state.schedule
    assert select_schedule(state, "best") != state.schedule
    with pytest.raises(ValueError, match=r"the selection rule must be one of \['best', 'last'\], "
                                         "got 'first'"):
        select_schedule(state, "first")


def test_best_selection_before_any_finished_inner_run_is_the_current_schedule():
    outer = _outer(replicas=1)
    state = outer.apply(outer.init(_schedule()), [_diverged(0)])
    assert select_schedule(state, "best") == state.schedule


def test_a_converged_loop_with_continue_to_goes_on_over_a_doubled_horizon_from_its_best():
    tolerant = SignOptimizer({"lr": 0.1}, tol=10.0)  # converged after every step
    outer = OuterStep(tolerant, 1, continue_to=25)
    state = outer.init(_schedule())
    losses = iter([0.5, 0.3, 0.9])
    while not state.converged:
        s = state.next_outer_step
        state = outer.apply(state, [ReplicaResult(s, 0, next(losses), {"lr": [1.0, -1.0]}, 1.0)])
    used = [r.schedule for r in state.history]
    assert [u["num_steps"] for u in used] == [10, 20, 25]  # doubled, then held at continue_to
    assert all(r.converged for r in state.history)
    # each longer horizon starts from the best-validated schedule (not the unmeasured last
    # iterate [0.4, 0.6]), stretched, with fresh step sizes
    assert used[1]["values"]["lr"] == used[2]["values"]["lr"] == [0.5, 0.5]
    assert state.history[1].step_sizes == {"lr": [0.1, 0.1]}
    # at continue_to the loop stops after its last sign step
    assert state.schedule.num_steps == 25
    assert state.schedule.values["lr"].tolist() == pytest.approx([0.4, 0.6])
    # "best" compares losses on the longest horizon only: 0.9 at 25 steps, not 0.3 at 20
    assert state.best_record().outer_step == 2
    assert select_schedule(state).num_steps == 25


def test_without_continue_to_a_converged_loop_stops_and_a_bad_continue_to_is_refused():
    outer = OuterStep(SignOptimizer({"lr": 0.1}, tol=10.0), 1)
    state = outer.apply(outer.init(_schedule()),
                        [ReplicaResult(0, 0, 0.5, {"lr": [1.0, -1.0]}, 1.0)])
    assert state.converged and state.schedule.num_steps == 10
    for bad in (0, -5, 2.5, "final"):
        with pytest.raises(ValueError, match="continue_to must be None or a positive number"):
            OuterStep(SignOptimizer(), continue_to=bad)

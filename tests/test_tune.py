import math

import pytest
import torch
from nets import sample_subset_problem

from fdshpo import Schedule, SignOptimizer
from fdshpo.tune.loop import InnerProgress, OuterProgress, TuneState, tune
from fdshpo.tune.retrain import retrain_and_test

HORIZON = 12


@pytest.fixture(scope="module")
def problem():
    return sample_subset_problem(train=400, test=200, seed=3)


def _initial():
    return Schedule.constant(HORIZON, lr=0.05, momentum=0.5, weight_decay=1e-4,
                             segments={"lr": 3}, bounds={"lr": (0.0, 1.0)})


def test_tune_records_every_outer_step_and_moves_the_schedule(problem, capsys):
    seen = []
    result = tune(problem, _initial(), SignOptimizer(), outer_steps=3, callback=seen.append)
    assert len(result.history) == 3 and len(seen) == 3
    assert [r.outer_step for r in result.history] == [0, 1, 2]
    assert result.history[0].schedule == _initial().to_dict()
    assert result.state.schedule != _initial()
    for record in result.history:
        assert set(record.hypergradients) == {"lr", "momentum", "weight_decay"}
        assert len(record.hypergradients["lr"]) == 3
        assert record.val_loss > 0 and record.seconds > 0
    assert seen[-1].schedule == result.state.schedule
    assert capsys.readouterr() == ("", "")  # the core prints nothing


def test_resuming_from_a_checkpointed_state_equals_an_uninterrupted_run(problem):
    full = tune(problem, _initial(), SignOptimizer(), outer_steps=3)
    states = []
    tune(problem, _initial(), SignOptimizer(), outer_steps=1, callback=states.append)
    restored = TuneState.from_dict(states[-1].to_dict())  # through plain data, as on disk
    resumed = tune(problem, _initial(), SignOptimizer(), outer_steps=3, resume=restored)
    assert resumed.state.schedule == full.state.schedule
    assert resumed.schedule == full.schedule
    assert [r.hypergradients for r in resumed.history] == [r.hypergradients for r in full.history]


def test_replicas_are_averaged_before_the_sign_step(problem):
    sizes = {"lr": 0.1, "momentum": 0.1, "weight_decay": 1e-4}
    result = tune(problem, _initial(), SignOptimizer(sizes), outer_steps=1, replicas=2)
    record = result.history[0]
    r0, r1 = record.replica_hypergradients
    assert r0 != r1
    for name in sizes:  # the mean and the sign step, by hand
        mean = [(a + b) / 2 for a, b in zip(r0[name], r1[name])]
        assert record.hypergradients[name] == pytest.approx(mean, rel=1e-12)
        before = _initial().values[name].tolist()
        after = [min(max(v - math.copysign(sizes[name], g), 0.0), math.inf) if g else v
                 for v, g in zip(before, mean)]
        assert result.state.schedule.values[name].tolist() == pytest.approx(after)


def test_the_loop_stops_once_every_value_has_converged(problem):
    # step sizes far below 50% of every value: converged after the first update
    optimizer = SignOptimizer({"lr": 1e-4, "momentum": 1e-4, "weight_decay": 1e-8}, tol=0.5)
    result = tune(problem, _initial(), optimizer, outer_steps=5)
    assert result.converged and len(result.history) == 1


def test_progress_reports_every_inner_and_outer_step_in_order(problem):
    events = []
    tune(problem, _initial(), SignOptimizer(), outer_steps=2, replicas=2, progress=events.append,
         engine="forward")  # T progress steps per inner run (reverse mode: 2T)
    inner = [e for e in events if isinstance(e, InnerProgress)]
    outer = [e for e in events if isinstance(e, OuterProgress)]
    assert len(inner) == 2 * 2 * HORIZON and [e.record.outer_step for e in outer] == [0, 1]
    assert [(e.outer_step, e.replica, e.step) for e in inner[:HORIZON + 1]] == [
        (0, 0, t) for t in range(1, HORIZON + 1)] + [(0, 1, 1)]
    assert events[2 * HORIZON] == outer[0]  # after both replicas of step 0, before step 1


def test_bad_budgets_and_rules_are_refused(problem):
    with pytest.raises(ValueError, match="outer_steps must be a positive int, got 0"):
        tune(problem, _initial(), outer_steps=0)
    with pytest.raises(ValueError, match="replicas must be a positive int, got 0"):
        tune(problem, _initial(), replicas=0)
    with pytest.raises(ValueError, match=r"the selection rule must be one of \['best', 'last'\]"):
        tune(problem, _initial(), select="median")


def test_a_learned_schedule_retrains_better_than_a_poor_initial_one(problem):
    poor = Schedule.constant(HORIZON, lr=0.002, segments={"lr": 3},
                             bounds={"lr": (0.0, 1.0), "weight_decay": (0.0, 0.01)})
    result = tune(problem, poor, SignOptimizer({"lr": 0.1}), outer_steps=4)
    assert all(v > 10 * 0.002 for v in result.schedule.values["lr"].tolist())
    before = retrain_and_test(problem, poor, num_steps=24)
    after = retrain_and_test(problem, result.schedule, num_steps=24)
    assert after.num_steps == 24 and torch.isfinite(torch.tensor(after.test_loss))
    assert after.test_accuracy > before.test_accuracy + 0.2, (before, after)


def test_each_outer_step_records_and_prints_its_engine(problem):
    import io

    from fdshpo.tune.console import ConsoleProgress

    events, out = [], io.StringIO()
    with ConsoleProgress(out) as console:
        def progress(event):
            events.append(event)
            console(event)

        result = tune(problem, _initial(), SignOptimizer(), outer_steps=2, engine="reverse",
                      progress=progress)
    assert [r.engine["engine"] for r in result.history] == ["reverse", "reverse"]
    lines = out.getvalue().splitlines()
    assert sum("engine reverse (reverse: requested)" in line for line in lines) == 2
    inner = [e for e in events if isinstance(e, InnerProgress)]
    assert {e.num_steps for e in inner} == {2 * HORIZON}  # the backward sweep counts too
    restored = TuneState.from_dict(result.state.to_dict())
    assert restored.history[1].engine == result.history[1].engine


def test_measured_prices_are_measured_once_per_run(problem):
    result = tune(problem, _initial(), SignOptimizer(), outer_steps=2, prices="measure")
    first, second = (r.engine for r in result.history)
    assert "prices measured on the first batch" in first["reason"]
    assert "by the given prices" in second["reason"] and second["prices"] == first["prices"]
    assert second["engine"] == first["engine"]

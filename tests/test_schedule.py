import math

import pytest
import torch

from fdshpo import Schedule
from fdshpo.schedule import segment_index, segment_start


def test_segment_of_step_is_floor_t_n_over_T():
    T, n = 10, 3
    assert [segment_index(t, n, T) for t in range(T)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    for k in range(n):
        start = segment_start(k, n, T)
        assert segment_index(start, n, T) == k
        assert start == 0 or segment_index(start - 1, n, T) == k - 1


def test_at_reads_the_active_segment_of_each_type():
    s = Schedule(7, {"lr": [0.1, 0.2, 0.3], "momentum": [0.9], "weight_decay": [1e-4, 2e-4]})
    assert [s.at(t)["lr"] for t in range(7)] == [0.1, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3]
    assert [s.at(t)["weight_decay"] for t in range(7)] == [1e-4] * 4 + [2e-4] * 3
    assert s.at(6)["momentum"] == 0.9
    assert s.segments == {"lr": 3, "momentum": 1, "weight_decay": 2}


def test_constant_fills_every_segment():
    s = Schedule.constant(100, lr=0.05, momentum=0.9, weight_decay=5e-4,
                          segments={"lr": 7, "momentum": 1, "weight_decay": 1})
    assert s.values["lr"].tolist() == [0.05] * 7
    assert s.values["lr"].dtype == torch.float64
    assert s.at(99) == {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


def test_round_trip_through_json_keeps_values_and_bounds():
    s = Schedule.constant(50, lr=0.1, momentum=0.5, segments={"lr": 4},
                          bounds={"lr": (0.0, 1.0), "weight_decay": (-1.0, math.inf)})
    again = Schedule.from_json(s.to_json())
    assert again == s
    assert again.bounds["lr"] == (0.0, 1.0)
    assert again.bounds["weight_decay"] == (-1.0, math.inf)


def test_stretched_keeps_segment_values_over_a_new_horizon():
    s = Schedule(4, {"lr": [1.0, 2.0], "momentum": [0.0], "weight_decay": [0.0]})
    longer = s.stretched(8)
    assert [longer.at(t)["lr"] for t in range(8)] == [1.0] * 4 + [2.0] * 4


def test_more_segments_than_steps_is_refused_with_a_fix():
    with pytest.raises(ValueError, match=r"'lr' has 8 segments but the horizon is only 5 steps"):
        Schedule.constant(5, lr=0.1, segments={"lr": 8})


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown segment name\(s\) \['learning_rate'\]; known "
                                         r"names are \['lr', 'momentum', 'weight_decay'\]"):
        Schedule.constant(5, lr=0.1, segments={"learning_rate": 2})


def test_bounds_that_exclude_the_initial_value_are_refused():
    with pytest.raises(ValueError, match=r"'momentum' values \[0\.95\] lie outside the bounds "
                                         r"\[0\.0, 0\.9\]; change the initial value or widen"):
        Schedule.constant(5, lr=0.1, momentum=0.95, bounds={"momentum": (0.0, 0.9)})


def test_missing_values_and_bad_horizon_are_refused():
    with pytest.raises(ValueError, match="missing values for \\['weight_decay'\\]"):
        Schedule(5, {"lr": [0.1], "momentum": [0.0]})
    with pytest.raises(ValueError, match="num_steps must be at least 1"):
        Schedule.constant(0, lr=0.1)
    with pytest.raises(ValueError, match="not all finite"):
        Schedule(5, {"lr": [float("nan")], "momentum": [0.0], "weight_decay": [0.0]})


def test_step_outside_the_horizon_is_an_index_error():
    s = Schedule.constant(5, lr=0.1)
    with pytest.raises(IndexError, match=r"step 5 is outside the horizon \[0, 5\)"):
        s.at(5)


def test_a_base_shape_scales_the_segment_values_and_stretches_with_the_horizon():
    s = Schedule(8, {"lr": [0.4, 0.2], "momentum": [0.9], "weight_decay": [0.0]},
                 shapes={"lr": "linear"})
    # lr_t = lambda_k(t) * (1 - t / 8)
    assert [s.at(t)["lr"] for t in range(8)] == pytest.approx(
        [0.4, 0.35, 0.3, 0.25, 0.1, 0.075, 0.05, 0.025])
    assert [s.scale("lr", t) for t in (0, 4)] == [1.0, 0.5] and s.scale("momentum", 3) == 1.0
    assert s.at(3)["momentum"] == 0.9
    long = s.stretched(16)
    assert long.shapes["lr"] == "linear" and long.at(8)["lr"] == pytest.approx(0.2 * 0.5)
    again = Schedule.from_dict(s.to_dict())
    assert again == s and again != Schedule(8, s.values, s.bounds)  # the shape counts
    assert Schedule.from_dict({"num_steps": 8, "values": s.to_dict()["values"]}).shapes == {
        "lr": "constant", "momentum": "constant", "weight_decay": "constant"}
    with pytest.raises(ValueError, match=r"unknown schedule shape\(s\) \{'lr': 'exp'\}; known "
                                         r"shapes are \['constant', 'step', 'cosine', 'linear'\]"):
        Schedule(8, s.values, shapes={"lr": "exp"})


def test_plots_trace_a_shaped_schedule_step_by_step_and_a_plain_one_by_segments():
    from fdshpo.report.plots import schedules_png, step_curve

    s = Schedule(8, {"lr": [0.4, 0.2], "momentum": [0.9], "weight_decay": [0.0]},
                 shapes={"lr": "linear"})
    xs, ys = step_curve(s.values["lr"].tolist(), 8, s.shapes["lr"])
    assert xs == list(range(9)) and ys[:8] == pytest.approx([s.at(t)["lr"] for t in range(8)])
    assert step_curve([0.4, 0.2], 8) == ([0, 4, 4, 8], [0.4, 0.4, 0.2, 0.2])
    for form in (s, s.to_dict()):  # a Schedule or its stored dict
        assert schedules_png([("shaped", form)]).startswith(b"\x89PNG")

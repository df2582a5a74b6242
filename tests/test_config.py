"""The experiment config: the shipped configs load, round-trip, and bad ones are refused with
messages that name the key and what is allowed."""

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from fdshpo.config.experiment import (
    DEFAULT_CONFIG_BOUNDS,
    DataConfig,
    ExperimentConfig,
    OuterConfig,
    ResourcesConfig,
    RetrainConfig,
    ScheduleConfig,
    StoreConfig,
    load_config,
)
from fdshpo.errors import UserError
from fdshpo.schedule import Schedule
from fdshpo.tune.sign import SignOptimizer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    config = load_config(path)
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    schedule = config.initial_schedule()
    assert isinstance(schedule, Schedule)
    assert schedule.segments == config.schedule.segments
    assert config.optimizer().learn == config.learn


def test_demo_config_is_the_bundled_sample():
    config = load_config(ROOT / "configs" / "demo.yaml")
    assert config.data.dataset == "fashion-mnist-sample"
    assert config.resources.gpus == 0
    assert config.learn == ("lr", "momentum", "weight_decay")


def minimal() -> dict:
    return {"experiment": "x", "network": "mlp", "data": {"dataset": "fashion-mnist-sample"},
            "schedule": {"horizon": 20}}


def write(tmp_path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_fill_a_minimal_config(tmp_path):
    config = load_config(write(tmp_path, minimal()))
    assert config.schedule.segments == {"lr": 7, "momentum": 1, "weight_decay": 1}  # the paper's
    assert config.outer.replicas == 1 and config.store.uri == "./fdshpo-store"
    assert config.checkpoint_every == 200
    assert config.network_init == "default" and config.engine == "auto"
    assert config.outer_step().engine_options == {"engine": "auto"}
    assert (config.data.val_batch_size, config.data.augment) == (1000, False)
    assert config.data.resample is True
    assert config.compare.methods is None and config.compare.budget_runs is None


def test_the_problem_follows_every_setting_the_benchmarks_use(tmp_path):
    from fdshpo.data.sample import load_fashion_mnist_sample

    data = minimal()
    data["network_init"] = "xavier"
    data["data"].update(batch_size=64, val_fraction=0.2, val_batch_size=250, augment=True,
                        resample=False)
    data["compare"] = {"methods": "fds, linear", "seeds": [3, 4], "budget_runs": [2, 8]}
    config = load_config(write(tmp_path, data))
    assert (config.compare.methods, config.compare.seeds, config.compare.budget_runs) == (
        ["fds", "linear"], [3, 4], [2.0, 8.0])
    problem = config.problem(load_fashion_mnist_sample(), "cpu")
    assert (problem.init, problem.augment, problem.val_batch_size) == ("xavier", True, 250)
    assert problem.resample is False
    assert (problem.batch_size, problem.val_fraction, problem.network) == (64, 0.2, "mlp")
    task = problem(0, 0, 3)
    assert [len(x) for x, _ in task.val_batches] == [250, 250, 250, 250]  # 1000 held out
    assert ExperimentConfig.from_dict(config.to_dict()) == config


def test_every_default_comes_from_the_dataclasses(tmp_path):
    """The loader writes no default of its own: a minimal config equals the dataclasses'
    defaults, and the configured optimiser's decay and tolerance are the library's."""
    config = load_config(write(tmp_path, minimal()))
    assert config == ExperimentConfig("x", "mlp", DataConfig("fashion-mnist-sample"),
                                      ScheduleConfig(horizon=20))
    assert (config.outer, config.retrain, config.store, config.resources) == (
        OuterConfig(), RetrainConfig(), StoreConfig(), ResourcesConfig())
    library = SignOptimizer()
    ours = config.optimizer()
    assert (ours.decay, ours.tol) == (library.decay, library.tol)
    assert config.initial_schedule().bounds == {
        n: tuple(b) for n, b in DEFAULT_CONFIG_BOUNDS.items()}


def test_a_config_without_outer_gets_the_settings_measured_best(tmp_path):
    """No ``outer:`` block (and no start, bounds or shapes): the settings
    configs/bench-cpu-fmnist-mlp.yaml was measured with (bench/results/ablation-*.md)."""
    data = minimal()
    assert "outer" not in data
    config = load_config(write(tmp_path, data))
    o, s = config.outer, config.schedule
    assert o.step_sizes == {"lr": 0.3, "momentum": 0.3, "weight_decay": 0.3}
    assert o.multiplicative == ["lr", "momentum", "weight_decay"]
    assert (o.backtrack, o.select, o.decay, o.tol) == (True, "best", 0.5, 0.05)
    assert (o.grow, o.continue_to) == (1.0, "off")  # bench/results/ablation-*.md: no gain
    assert s.initial == {"lr": 0.05, "momentum": 0.5, "weight_decay": 1e-5}
    assert s.bounds == {"lr": [1e-4, 1.0], "momentum": [0.0, 0.99],
                        "weight_decay": [1e-6, 0.01]}
    assert s.shapes == {"lr": "linear"}
    bench = load_config(ROOT / "configs" / "bench-cpu-fmnist-mlp.yaml")
    assert replace(bench.outer, max_steps=o.max_steps) == o
    assert (bench.schedule.initial, bench.schedule.bounds, bench.schedule.shapes) == (
        s.initial, s.bounds, s.shapes)
    optimizer = config.optimizer()
    assert (optimizer.multiplicative, optimizer.backtrack, optimizer.grow) == (
        ("lr", "momentum", "weight_decay"), True, 1.0)


@pytest.mark.parametrize("value,expected", [("off", None), (False, None), ("final", 300),
                                            (150, 150)])
def test_continue_to_reaches_the_outer_step(tmp_path, value, expected):
    data = minimal()
    data["retrain"] = {"horizon": 300}
    data["outer"] = {"continue_to": value, "grow": 2}
    config = load_config(write(tmp_path, data))
    assert config.continue_horizon == expected
    assert config.outer_step().continue_to == expected
    assert config.optimizer().grow == 2.0
    assert load_config(write(tmp_path, config.to_dict())) == config  # round-trips


def test_multiplicative_steps_from_the_default_start_move_every_value(tmp_path):
    config = load_config(write(tmp_path, minimal()))
    optimizer, schedule = config.optimizer(), config.initial_schedule()
    state = optimizer.init(schedule)
    for sign in (1.0, -1.0):
        grads = {n: torch.full_like(v, sign) for n, v in schedule.values.items()}
        moved, _ = optimizer.update(schedule, grads, state, val_loss=1.0)
        for name, values in schedule.values.items():
            assert (moved.values[name] != values).all(), (name, sign)


def test_the_learned_names_alone_step_multiplicatively_by_default(tmp_path):
    data = minimal()
    data["outer"] = {"step_sizes": {"lr": 0.2}}
    assert load_config(write(tmp_path, data)).outer.multiplicative == ["lr"]


ZERO_START = (
    "schedule.initial.weight_decay is 0, but weight_decay takes multiplicative steps "
    "(outer.multiplicative; by default every learned name), which scale a value and cannot "
    "move it from 0: start it above 0 (the default start is weight_decay: 1e-05, inside a "
    "positive lower bound such as schedule.bounds.weight_decay: [1e-06, 0.01]), or give it "
    "additive steps (leave weight_decay out of outer.multiplicative and give "
    "outer.step_sizes.weight_decay an additive size, the paper's is 0.0003)")


@pytest.mark.parametrize("bounds", [None, {"weight_decay": [0.0, 0.01]}])
def test_a_zero_start_with_multiplicative_steps_says_what_to_change(tmp_path, bounds):
    """Never a silent no-op: whatever the bounds, a value of exactly 0 that would take
    multiplicative steps is refused, naming both ways out."""
    data = minimal()
    data["schedule"]["initial"] = {"weight_decay": 0.0}
    if bounds:
        data["schedule"]["bounds"] = bounds
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path, data))
    assert str(info.value) == f"{tmp_path / 'c.yaml'}: {ZERO_START}"


def test_a_zero_start_with_additive_steps_is_the_papers_loop_and_moves(tmp_path):
    data = minimal()
    data["schedule"].update(initial={"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0},
                            bounds={"lr": [0.0, 1.0], "weight_decay": [0.0, 0.01]}, shapes={})
    data["outer"] = {"step_sizes": {"lr": 0.1, "momentum": 0.1, "weight_decay": 3e-4},
                     "multiplicative": [], "backtrack": False}
    config = load_config(write(tmp_path, data))
    assert config.schedule.shapes == {} and config.outer.multiplicative == []
    optimizer, schedule = config.optimizer(), config.initial_schedule()
    grads = {n: -torch.ones_like(v) for n, v in schedule.values.items()}
    moved, _ = optimizer.update(schedule, grads, optimizer.init(schedule))
    assert moved.values["lr"].tolist() == [0.1] * 7
    assert moved.values["weight_decay"].tolist() == [3e-4]


def test_names_left_out_of_segments_take_the_default(tmp_path):
    data = minimal()
    data["schedule"]["segments"] = {"lr": 5}
    data["outer"] = {"step_sizes": {"lr": 0.2}}
    config = load_config(write(tmp_path, data))
    assert config.schedule.segments == {"lr": 5, "momentum": 1, "weight_decay": 1}
    assert config.learn == ("lr",) and config.outer.step_sizes == {"lr": 0.2}


def edit(path: str, value):
    data = minimal()
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()

BAD = [
    ("engine", "backward", "engine must be one of ['auto', 'forward', 'reverse'], got "
                           "'backward'"),
    ("experiment", DELETE, "missing required key 'experiment'"),
    ("schedule", DELETE, "missing required section 'schedule'"),
    ("schedule.horizon", DELETE, "missing required key 'schedule.horizon'"),
    ("data.dataset", DELETE, "missing required key 'data.dataset'"),
    ("schedule.horizon", "100", "schedule.horizon must be an integer, got '100'"),
    ("schedule.horizon", 0, "schedule.horizon must be >= 1, got 0"),
    ("data.batch_size", 1.5, "data.batch_size must be an integer"),
    ("data.val_fraction", 1.5, "data.val_fraction must be in (0.0, 1.0), got 1.5"),
    ("network", "resnet", "network: unknown network 'resnet'; allowed: lenet, mlp, wrn-D-K"),
    ("data.dataset", "imagenet", "data.dataset: unknown dataset 'imagenet'; allowed: "),
    ("schedule.segments", {"lr": 30}, "schedule.segments.lr is 30 but schedule.horizon is only "
                                      "20 steps; use at most 20 segments or a longer horizon"),
    ("schedule.segments", {"learning_rate": 3},
     "schedule.segments: unknown hyperparameter 'learning_rate'; allowed: lr, momentum, "
     "weight_decay"),
    ("schedule.bounds", {"lr": [1.0, 0.5]},
     "schedule.bounds.lr is impossible: lower 1.0 is not below upper 0.5"),
    ("schedule.bounds", {"momentum": [0.5]}, "schedule.bounds.momentum must be [lower, upper]"),
    ("schedule.initial", {"lr": 2.0}, "schedule.bounds", ),
    ("outer.step_sizes", {"lr": -0.1}, "outer.step_sizes.lr must be a positive number"),
    ("outer.replicas", 0, "outer.replicas must be between 1 and 256, got 0"),
    ("outer.decay", 2, "outer.decay must be in (0.0, 1.0], got 2.0"),
    ("outer.warm_start", "yes", "outer.warm_start must be true or false"),
    ("outer.max_step", 3, "unknown key(s) ['max_step'] in 'outer'; allowed keys: step_sizes"),
    ("horizon", 3, "unknown key(s) ['horizon'] at the top level; allowed keys: experiment"),
    ("resources.gpus", -1, "resources.gpus must be between 0 and 16, got -1"),
    ("resources.memory", "lots", "resources.memory must be a Kubernetes quantity"),
    ("resources.tolerations", [{"key": "k", "effect": "Sometimes"}],
     "resources.tolerations[0].effect must be NoSchedule, PreferNoSchedule or NoExecute"),
    ("experiment", "my experiment", "experiment must be 1-63 letters, digits"),
    ("network_init", "he", "network_init: unknown initialisation 'he'; allowed: default, xavier"),
    ("data.val_batch_size", 0, "data.val_batch_size must be >= 1, got 0"),
    ("data.augment", "crop", "data.augment must be true or false, got 'crop'"),
    ("compare.methods", [], "compare.methods must be a list of method names"),
    ("compare.seeds", [0, -1], "compare.seeds must be a list of distinct integers >= 0"),
    ("compare.budget_runs", [4, 0], "compare.budget_runs must be a list of positive numbers "
                                    "(budgets in runs of the final job)"),
    ("compare.budget", [4], "unknown key(s) ['budget'] in 'compare'; allowed keys: methods"),


    ("outer.select", "first", "outer.select must be one of ['best', 'last'], got 'first'"),
    ("outer.on_diverged", "skip",
     "outer.on_diverged must be one of ['lower_lr', 'raise'], got 'skip'"),
    ("outer.multiplicative", ["eta"], "outer.multiplicative must be a list of hyperparameter "
                                      "names from ['lr', 'momentum', 'weight_decay']"),
    ("schedule.bounds", {"lr": [0.0, 1.0]}, "outer.multiplicative: lr takes multiplicative "
                                            "steps, which never reach 0: give it a positive "
                                            "lower bound"),
    ("schedule.shapes", {"lr": "exp"}, "schedule.shapes maps hyperparameter names"),
    ("outer.grow", 0.5, "outer.grow must be in [1, 10] (1: step sizes never grow, the paper's "
                        "loop), got 0.5"),
    ("outer.grow", 20, "outer.grow must be in [1, 10] (1: step sizes never grow, the paper's "
                       "loop), got 20"),
    ("outer.continue_to", "longer", "outer.continue_to must be off, final (the final job's "
                                    "horizon, retrain.horizon) or a number of inner steps, got "
                                    "'longer'"),
    ("outer.continue_to", 5, "outer.continue_to is 5 inner steps, shorter than "
                             "schedule.horizon"),
    ("retrain.on_diverged", "retry",
     "retrain.on_diverged must be one of ['report', 'halve_lr'], got 'retry'"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[b[0] + str(i) for i, b in
                                                          enumerate(BAD)])
def test_bad_configs_name_the_key(tmp_path, key, value, message):
    data = edit(key, value)
    if key == "schedule.initial":
        data["schedule"]["bounds"] = {"lr": [0.0, 1.0]}
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path, data))
    assert message in str(info.value)


def test_initial_outside_bounds_message(tmp_path):
    data = minimal()
    data["schedule"].update(initial={"lr": 2.0}, bounds={"lr": [0.0, 1.0]})
    with pytest.raises(UserError, match=r"schedule.initial.lr = 2.0 lies outside "
                                        r"schedule.bounds.lr \[0.0, 1.0\]"):
        load_config(write(tmp_path, data))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(UserError, match="must be a mapping of keys, got list"):
        load_config(tmp_path / "list.yaml")


def test_a_network_and_a_dataset_registered_in_code_are_accepted(tmp_path):
    """The config reads the registries (fdshpo.models, fdshpo.data) rather than lists of its
    own: what a user registers is accepted, and an unknown name lists the registered ones."""
    from torch import nn

    from fdshpo.data import known_datasets, load_dataset, register_dataset
    from fdshpo.data.registry import _LOADERS
    from fdshpo.models import register_model
    from fdshpo.models.registry import _BUILDERS

    register_model("tiny-linear-test", lambda shape, classes: nn.Sequential(
        nn.Flatten(), nn.Linear(int(math.prod(shape)), classes)))
    register_dataset("sample-copy-test", lambda request: load_dataset("fashion-mnist-sample"))
    try:
        data = minimal()
        data["network"] = "tiny-linear-test"
        data["data"]["dataset"] = "sample-copy-test"
        config = load_config(write(tmp_path, data))
        assert (config.network, config.data.dataset) == ("tiny-linear-test", "sample-copy-test")
        data["network"] = "resnet"
        with pytest.raises(UserError, match="allowed: lenet, mlp, tiny-linear-test, wrn-D-K"):
            load_config(write(tmp_path, data))
        data["network"], data["data"]["dataset"] = "mlp", "imagenet"
        with pytest.raises(UserError) as error:
            load_config(write(tmp_path, data))
        assert str(error.value).endswith("data.dataset: unknown dataset 'imagenet'; allowed: "
                                         + ", ".join(known_datasets()))
        assert "sample-copy-test" in known_datasets()
    finally:
        del _BUILDERS["tiny-linear-test"]
        del _LOADERS["sample-copy-test"]

"""The experiment config: the shipped configs load, round-trip, and bad ones are refused with
messages that name the key and what is allowed."""

import math
from pathlib import Path

import pytest
import yaml

from fdshpo.config.experiment import (
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
from fdshpo.schedule import DEFAULT_BOUNDS, Schedule
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
    defaults, and the configured optimiser equals the library's default one."""
    config = load_config(write(tmp_path, minimal()))
    assert config == ExperimentConfig("x", "mlp", DataConfig("fashion-mnist-sample"),
                                      ScheduleConfig(horizon=20))
    assert (config.outer, config.retrain, config.store, config.resources) == (
        OuterConfig(), RetrainConfig(), StoreConfig(), ResourcesConfig())
    library = SignOptimizer()
    ours = config.optimizer()
    assert (ours.step_sizes, ours.decay, ours.tol) == (library.step_sizes, library.decay,
                                                       library.tol)
    assert config.initial_schedule().bounds == DEFAULT_BOUNDS


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
    ("outer.multiplicative", ["lr"], "outer.multiplicative: lr takes multiplicative steps, which "
                                     "never reach 0: give it a positive lower bound"),
    ("schedule.shapes", {"lr": "exp"}, "schedule.shapes maps hyperparameter names"),
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

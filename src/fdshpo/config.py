"""One YAML file describes an experiment, validated into frozen dataclasses before anything runs.

Layout (every key except ``experiment``, ``data.dataset``, ``network`` and ``schedule.horizon``
has a default)::

    experiment: demo                  # name; runs are grouped by it in the store
    seed: 0                           # every seed is derived from it (see fdshpo.problem)
    checkpoint_every: 200             # inner checkpoint interval in steps (0: results only)
    data:      {dataset: fashion-mnist-sample, root: null, batch_size: 128, val_fraction: 0.05,
                val_batch_size: 1000,  # examples per batch when scoring the validation split
                augment: false}        # random 4-pixel crop + horizontal flip of training batches
    network: mlp                      # mlp, lenet or wrn-D-K
    network_init: default             # default (PyTorch's) or xavier (the paper's)
    schedule:
      horizon: 200                    # inner steps per outer step
      segments: {lr: 5, momentum: 1, weight_decay: 1}
      initial:  {lr: 0.01, momentum: 0.0, weight_decay: 0.0}
      bounds:   {lr: [0, 1], momentum: [0, 0.999], weight_decay: [0, 0.01]}
    outer:
      step_sizes: {lr: 0.1, momentum: 0.3, weight_decay: 3.0e-4}   # names learned
      decay: 0.5
      tol: 0.05
      max_steps: 6                    # outer-step budget (pipeline levels)
      replicas: 1                     # inner runs per outer step (ParallelFor)
      warm_start: false               # start from the experiment's latest schedule in the store
    retrain: {horizon: null, seed: null}   # the final job; null: the schedule's horizon / seed + 1
    compare:                          # `fdshpo compare` (flags override); null: its defaults
      methods: null                   # e.g. [fds, random, hd, linear, hyperband]
      seeds: null                     # null: [seed]
      budget_runs: null               # budgets in runs of the final job; null: [2, 4, 8, 16]
    store: {uri: ./fdshpo-store, endpoint: null}
    resources:
      gpus: 0                         # per training component; > 0 requests accelerators
      gpu_type: null                  # e.g. nvidia.com/gpu or an accelerator type
      cpu: null                       # e.g. "4"
      memory: null                    # e.g. "16G"
      node_selector: {}               # label: value
      tolerations: []                 # [{key, operator, value, effect}]
      credentials_secret: null        # Secret with the store keys, e.g. mlpipeline-minio-artifact
      retries: 2                      # retries of the training components (they resume)
      image: null                     # component image; default fdshpo.image.component_image()

:func:`load_config` raises :class:`~fdshpo.errors.UserError` naming the key, what it got and
what is allowed. The core never imports this module (it needs ``yaml``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .models.init import INITS
from .schedule import DEFAULT_BOUNDS, HYPERPARAMETERS

#: Datasets known before fdshpo.data grows a registry (kept in sync with it when it exists).
KNOWN_DATASETS = ("fashion-mnist-sample", "fashion-mnist", "mnist", "cifar10")
NETWORK_PATTERN = re.compile(r"^(mlp|lenet|wrn-\d+-\d+)$")
NETWORKS_ALLOWED = "mlp, lenet or wrn-D-K (e.g. wrn-16-1)"
TOLERATION_KEYS = ("key", "operator", "value", "effect", "toleration_seconds")
#: Secret keys KFP's MinIO secret uses, mapped to the environment variables the store reads.
SECRET_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}


def dataset_names() -> tuple[str, ...]:
    """Names ``data.dataset`` accepts: fdshpo.data's registry when it has one."""
    try:
        from .data import dataset_names as registry  # type: ignore[attr-defined]
    except ImportError:
        return KNOWN_DATASETS
    return tuple(registry())


@dataclass(frozen=True)
class DataConfig:
    dataset: str
    root: str | None = None
    batch_size: int = 128
    val_fraction: float = 0.05
    val_batch_size: int = 1000
    augment: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    horizon: int
    segments: dict[str, int] = field(default_factory=lambda: {"lr": 7, "momentum": 1,
                                                              "weight_decay": 1})
    initial: dict[str, float] = field(default_factory=lambda: {"lr": 0.0, "momentum": 0.0,
                                                               "weight_decay": 0.0})
    bounds: dict[str, list] = field(default_factory=dict)


@dataclass(frozen=True)
class OuterConfig:
    step_sizes: dict[str, float] = field(default_factory=lambda: {"lr": 0.1, "momentum": 0.1,
                                                                  "weight_decay": 3e-4})
    decay: float = 0.5
    tol: float = 0.05
    max_steps: int = 10
    replicas: int = 1
    warm_start: bool = False


@dataclass(frozen=True)
class RetrainConfig:
    horizon: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class CompareConfig:
    methods: list[str] | None = None
    seeds: list[int] | None = None
    budget_runs: list[float] | None = None


@dataclass(frozen=True)
class StoreConfig:
    uri: str = "./fdshpo-store"
    endpoint: str | None = None


@dataclass(frozen=True)
class ResourcesConfig:
    gpus: int = 0
    gpu_type: str | None = None
    cpu: str | None = None
    memory: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict] = field(default_factory=list)
    credentials_secret: str | None = None
    retries: int = 2
    image: str | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment. ``to_dict``/``from_dict`` round-trip it (JSON-ready)."""

    experiment: str
    network: str
    data: DataConfig
    schedule: ScheduleConfig
    outer: OuterConfig = field(default_factory=OuterConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    seed: int = 0
    checkpoint_every: int = 200
    network_init: str = "default"
    compare: CompareConfig = field(default_factory=CompareConfig)

    @property
    def learn(self) -> tuple[str, ...]:
        """Learned hyperparameters: those with an outer step size, in canonical order."""
        return tuple(n for n in HYPERPARAMETERS if n in self.outer.step_sizes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ExperimentConfig:
        """Validate a plain mapping (a parsed YAML document) into a config."""
        return _validate(data)

    # -- objects the library uses --------------------------------------------------------------
    def initial_schedule(self):
        """The configured initial :class:`~fdshpo.Schedule`."""
        from .schedule import Schedule

        s = self.schedule
        return Schedule.constant(s.horizon, segments=s.segments, bounds=self.bounds(),
                                 **s.initial)

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {n: (_bound(lo, -math.inf), _bound(hi, math.inf))
                for n, (lo, hi) in self.schedule.bounds.items()}

    def optimizer(self):
        """The configured :class:`~fdshpo.SignOptimizer`."""
        from .outer import SignOptimizer

        return SignOptimizer(self.outer.step_sizes, self.outer.decay, self.outer.tol)

    def problem(self, dataset, device: str = "cpu"):
        """The configured :class:`~fdshpo.problem.ClassificationProblem` over ``dataset``."""
        from .problem import ClassificationProblem

        d = self.data
        return ClassificationProblem(dataset, self.network, batch_size=d.batch_size,
                                     val_fraction=d.val_fraction, val_batch_size=d.val_batch_size,
                                     seed=self.seed, device=device, augment=d.augment,
                                     init=self.network_init)


def _bound(value, default: float) -> float:
    return default if value is None else float(value)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML experiment config.

    Raises:
        UserError: the file is missing or not YAML, or a key is missing, unknown, of the wrong
            type or out of range (the message names the key and the allowed values).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    try:
        return _validate(data)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


# -- validation --------------------------------------------------------------------------------
def _validate(data: Any) -> ExperimentConfig:
    if not isinstance(data, Mapping):
        raise UserError(f"the config must be a mapping of keys, got {type(data).__name__}")
    top = _section(data, "", ExperimentConfig)
    experiment = _str(top, "experiment", required=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", experiment):
        raise UserError(f"experiment must be 1-63 letters, digits, '.', '_' or '-' (starting "
                        f"with a letter or digit), got {experiment!r}")
    network = _str(top, "network", required=True)
    if not NETWORK_PATTERN.match(network):
        raise UserError(f"network: unknown network {network!r}; allowed: {NETWORKS_ALLOWED}")
    seed = _int(top, "seed", default=0, minimum=0)
    checkpoint_every = _int(top, "checkpoint_every", default=200, minimum=0)
    network_init = _str(top, "network_init") or "default"
    if network_init not in INITS:
        raise UserError(f"network_init: unknown initialisation {network_init!r}; allowed: "
                        f"{', '.join(INITS)}")

    d = _section(top.get("data"), "data", DataConfig, required=True)
    names = dataset_names()
    dataset = _str(d, "dataset", "data.", required=True)
    if dataset not in names:
        raise UserError(f"data.dataset: unknown dataset {dataset!r}; allowed: {', '.join(names)}")
    data_cfg = DataConfig(
        dataset=dataset, root=_str(d, "root", "data."),
        batch_size=_int(d, "batch_size", "data.", default=128, minimum=1),
        val_fraction=_float(d, "val_fraction", "data.", default=0.05, low=0.0, high=1.0,
                            open_interval=True),
        val_batch_size=_int(d, "val_batch_size", "data.", default=1000, minimum=1),
        augment=_bool(d, "augment", "data.", default=False))

    s = _section(top.get("schedule"), "schedule", ScheduleConfig, required=True)
    horizon = _int(s, "horizon", "schedule.", required=True, minimum=1)
    segments = _per_name(s, "segments", "schedule.", default={}, kind="int")
    segments = {n: segments.get(n, 1) for n in HYPERPARAMETERS}
    for name, n in segments.items():
        if n < 1:
            raise UserError(f"schedule.segments.{name} must be at least 1, got {n}")
        if n > horizon:
            raise UserError(f"schedule.segments.{name} is {n} but schedule.horizon is only "
                            f"{horizon} steps; use at most {horizon} segments or a longer horizon")
    initial = _per_name(s, "initial", "schedule.", default={}, kind="float")
    initial = {n: initial.get(n, 0.0) for n in HYPERPARAMETERS}
    bounds = _bounds(s.get("bounds"))
    for name in HYPERPARAMETERS:
        lo, hi = (_bound(b, d) for b, d in zip(bounds[name], (-math.inf, math.inf)))
        if not initial[name] >= lo or not initial[name] <= hi:
            raise UserError(f"schedule.initial.{name} = {initial[name]} lies outside "
                            f"schedule.bounds.{name} [{lo}, {hi}]; change one of them")
    sched_cfg = ScheduleConfig(horizon, segments, initial, bounds)

    o = _section(top.get("outer"), "outer", OuterConfig)
    step_sizes = _per_name(o, "step_sizes", "outer.",
                           default=dict(OuterConfig().step_sizes), kind="float")
    if not step_sizes:
        raise UserError("outer.step_sizes is empty; give a step size for each hyperparameter to "
                        f"learn, from {list(HYPERPARAMETERS)}")
    for name, size in step_sizes.items():
        if not (math.isfinite(size) and size > 0):
            raise UserError(f"outer.step_sizes.{name} must be a positive number, got {size}")
    outer_cfg = OuterConfig(
        step_sizes={n: step_sizes[n] for n in HYPERPARAMETERS if n in step_sizes},
        decay=_float(o, "decay", "outer.", default=0.5, low=0.0, high=1.0),
        tol=_float(o, "tol", "outer.", default=0.05, low=0.0, high=math.inf),
        max_steps=_int(o, "max_steps", "outer.", default=10, minimum=1, maximum=100),
        replicas=_int(o, "replicas", "outer.", default=1, minimum=1, maximum=256),
        warm_start=_bool(o, "warm_start", "outer.", default=False))

    r = _section(top.get("retrain"), "retrain", RetrainConfig)
    retrain_cfg = RetrainConfig(horizon=_int(r, "horizon", "retrain.", minimum=1),
                                seed=_int(r, "seed", "retrain.", minimum=0))

    st = top.get("store")
    if isinstance(st, str):
        st = {"uri": st}
    st = _section(st, "store", StoreConfig)
    store_cfg = StoreConfig(uri=_str(st, "uri", "store.") or StoreConfig.uri,
                            endpoint=_str(st, "endpoint", "store."))

    res = _section(top.get("resources"), "resources", ResourcesConfig)
    node_selector = res.get("node_selector") or {}
    if not isinstance(node_selector, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool))
            for k, v in node_selector.items()):
        raise UserError("resources.node_selector must map label names to values, e.g. "
                        "{cloud.google.com/gke-accelerator: nvidia-tesla-a100}")
    resources_cfg = ResourcesConfig(
        gpus=_int(res, "gpus", "resources.", default=0, minimum=0, maximum=16),
        gpu_type=_str(res, "gpu_type", "resources."),
        cpu=_quantity(res, "cpu"), memory=_quantity(res, "memory"),
        node_selector={k: str(v) for k, v in node_selector.items()},
        tolerations=_tolerations(res.get("tolerations")),
        credentials_secret=_str(res, "credentials_secret", "resources."),
        retries=_int(res, "retries", "resources.", default=2, minimum=0, maximum=10),
        image=_str(res, "image", "resources."))

    return ExperimentConfig(experiment, network, data_cfg, sched_cfg, outer_cfg, retrain_cfg,
                            store_cfg, resources_cfg, seed, checkpoint_every, network_init,
                            _compare(top.get("compare")))


def _compare(value: Any) -> CompareConfig:
    c = _section(value, "compare", CompareConfig)
    methods = c.get("methods")
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if methods is not None and (not isinstance(methods, list) or not methods or not all(
            isinstance(m, str) and m for m in methods)):
        raise UserError(f"compare.methods must be a list of method names, e.g. [fds, random, "
                        f"linear, hyperband], got {methods!r}")
    seeds = c.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)
            or len(set(seeds)) != len(seeds)):
        raise UserError(f"compare.seeds must be a list of distinct integers >= 0, e.g. "
                        f"[0, 1, 2], got {seeds!r}")
    runs = c.get("budget_runs")
    if runs is not None and (not isinstance(runs, list) or not runs or not all(
            isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n)
            and n > 0 for n in runs)):
        raise UserError(f"compare.budget_runs must be a list of positive numbers (budgets in "
                        f"runs of the final job), e.g. [2, 4, 8, 16], got {runs!r}")
    return CompareConfig(methods, seeds, None if runs is None else [float(n) for n in runs])


def _section(value: Any, name: str, cls, required: bool = False) -> Mapping:
    if value is None:
        if required:
            allowed = ", ".join(f.name for f in fields(cls))
            raise UserError(f"missing required section {name!r} (keys: {allowed})")
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"{name or 'the config'} must be a mapping, got {type(value).__name__}")
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        where = f"in {name!r}" if name else "at the top level"
        raise UserError(f"unknown key(s) {unknown} {where}; allowed keys: {', '.join(allowed)}")
    return value


def _missing(prefix: str, key: str):
    raise UserError(f"missing required key {prefix + key!r}")


def _str(m: Mapping, key: str, prefix: str = "", required: bool = False) -> str | None:
    value = m.get(key)
    if value is None:
        return _missing(prefix, key) if required else None
    if not isinstance(value, str) or not value:
        raise UserError(f"{prefix}{key} must be a non-empty string, got {value!r}")
    return value


def _int(m: Mapping, key: str, prefix: str = "", default=None, required: bool = False,
         minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = m.get(key)
    if value is None:
        return _missing(prefix, key) if required else default
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{prefix}{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        rng = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise UserError(f"{prefix}{key} must be {rng}, got {value}")
    return value


def _float(m: Mapping, key: str, prefix: str, default: float, low: float, high: float,
           open_interval: bool = False) -> float:
    value = m.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{prefix}{key} must be a number, got {value!r}")
    value = float(value)
    ok = (low < value < high) if open_interval else (low < value <= high)
    if not ok:
        rng = f"in ({low}, {high})" if open_interval else f"in ({low}, {high}]"
        raise UserError(f"{prefix}{key} must be {rng}, got {value}")
    return value


def _bool(m: Mapping, key: str, prefix: str, default: bool) -> bool:
    value = m.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UserError(f"{prefix}{key} must be true or false, got {value!r}")
    return value


def _per_name(m: Mapping, key: str, prefix: str, default: dict, kind: str) -> dict:
    value = m.get(key)
    if value is None:
        return default
    if not isinstance(value, Mapping):
        raise UserError(f"{prefix}{key} must map hyperparameter names "
                        f"({', '.join(HYPERPARAMETERS)}) to values, got {value!r}")
    out = {}
    for name, v in value.items():
        if name not in HYPERPARAMETERS:
            raise UserError(f"{prefix}{key}: unknown hyperparameter {name!r}; allowed: "
                            f"{', '.join(HYPERPARAMETERS)}")
        if kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise UserError(f"{prefix}{key}.{name} must be an integer, got {v!r}")
            out[name] = v
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UserError(f"{prefix}{key}.{name} must be a number, got {v!r}")
            out[name] = float(v)
    return out


def _bounds(value: Any) -> dict[str, list]:
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise UserError("schedule.bounds must map hyperparameter names to [lower, upper]")
    out = {}
    for name in value:
        if name not in HYPERPARAMETERS:
            raise UserError(f"schedule.bounds: unknown hyperparameter {name!r}; allowed: "
                            f"{', '.join(HYPERPARAMETERS)}")
    for name in HYPERPARAMETERS:
        default = [None if math.isinf(b) else b for b in DEFAULT_BOUNDS[name]]
        pair = value.get(name, default)
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(
                b is None or (isinstance(b, (int, float)) and not isinstance(b, bool))
                for b in pair)):
            raise UserError(f"schedule.bounds.{name} must be [lower, upper] (numbers or null "
                            f"for unbounded), got {pair!r}")
        lo, hi = (None if b is None else float(b) for b in pair)
        if lo is not None and hi is not None and not lo < hi:
            raise UserError(f"schedule.bounds.{name} is impossible: lower {lo} is not below "
                            f"upper {hi}")
        out[name] = [lo, hi]
    return out


_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def _quantity(m: Mapping, key: str) -> str | None:
    value = m.get(key)
    if value is None:
        return None
    value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else value
    if not isinstance(value, str) or not _QUANTITY.match(value):
        example = '"4" or "500m"' if key == "cpu" else '"16G" or "8Gi"'
        raise UserError(f"resources.{key} must be a Kubernetes quantity such as {example}, "
                        f"got {value!r}")
    return value


def _tolerations(value: Any) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise UserError("resources.tolerations must be a list of mappings with keys "
                        f"{', '.join(TOLERATION_KEYS)}")
    out = []
    for i, t in enumerate(value):
        unknown = sorted(str(k) for k in t if k not in TOLERATION_KEYS)
        if unknown:
            raise UserError(f"resources.tolerations[{i}]: unknown key(s) {unknown}; allowed: "
                            f"{', '.join(TOLERATION_KEYS)}")
        if t.get("operator", "Equal") not in ("Equal", "Exists"):
            raise UserError(f"resources.tolerations[{i}].operator must be Equal or Exists, got "
                            f"{t['operator']!r}")
        if t.get("effect") not in (None, "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise UserError(f"resources.tolerations[{i}].effect must be NoSchedule, "
                            f"PreferNoSchedule or NoExecute, got {t['effect']!r}")
        out.append(dict(t))
    return out

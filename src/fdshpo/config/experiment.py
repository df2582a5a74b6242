"""One YAML file describes an experiment, validated into frozen dataclasses before anything runs.

Every key, with its default (the dataclass fields below are the only place defaults are written;
``experiment``, ``network``, ``data.dataset`` and ``schedule.horizon`` are required)::

    experiment: NAME                  # required; runs are grouped by it in the store
    seed: 0                           # every seed is derived from it (see fdshpo.tune.problem)
    checkpoint_every: 200             # inner checkpoint interval in steps (0: results only)
    engine: auto                      # hypergradient engine: auto (the cheaper that fits),
                                      # forward or reverse (fdshpo.engines.choose)
    data:
      dataset: NAME                   # required: fashion-mnist-sample, fashion-mnist, mnist, ...
      root: null                      # data root; null: $FDSHPO_DATA_ROOT or ~/.cache/fdshpo
      batch_size: 128
      val_fraction: 0.05              # share of the training set held out for validation
      val_batch_size: 1000            # examples per batch when scoring the validation split
      augment: false                  # random 4-pixel crop + horizontal flip of training batches
      resample: true                  # a fresh split and batch order each outer step; false:
                                      # outer step 0's every time (common random numbers)
    network: NAME                     # required: mlp, lenet or wrn-D-K
    network_init: default             # default (PyTorch's) or xavier (the paper's)
    schedule:
      horizon: T                      # required: inner steps per outer step
      segments: {lr: 7, momentum: 1, weight_decay: 1}    # the paper's; a name left out gets these
      initial:  {lr: 0.05, momentum: 0.5, weight_decay: 1.0e-5}   # the benchmarks' common start
      bounds:   {lr: [1.0e-4, 1.0], momentum: [0, 0.99], weight_decay: [1.0e-6, 0.01]}
                                      # null: unbounded; positive lower bounds for lr and
                                      # weight decay, which take multiplicative steps
      shapes:   {lr: linear}          # base shapes the values scale ({}: constant segments)
    outer:                            # defaults: the settings measured best (README, "Quality")
      step_sizes: {lr: 0.3, momentum: 0.3, weight_decay: 0.3}   # the names given are learned
      decay: 0.5                      # step-size factor on a sign flip
      tol: 0.05                       # converged when every step size < tol (x |value| if additive)
      max_steps: 10                   # outer-step budget (pipeline levels)
      replicas: 1                     # inner runs per outer step (ParallelFor)
      warm_start: false               # start from the experiment's latest schedule in the store
      multiplicative: [lr, momentum, weight_decay]   # names taking multiplicative steps
                                      # (fdshpo.tune.sign); left out: every learned name;
                                      # []: additive steps throughout (the paper's)
      backtrack: true                 # a worse val loss: shorter steps from the best schedule
      select: best                    # best (best-validated outer step) or last (last iterate)
      on_diverged: lower_lr           # a diverged inner run lowers the lr, or: raise
      grow: 1.0                       # step-size factor while a hypergradient keeps its sign
                                      # (Rprop's; 1: never grow, the paper's loop)
      continue_to: off                # once converged, go on over doubled horizons up to:
                                      # final (retrain.horizon), a number of steps, or off
    retrain:
      horizon: null                   # null: the schedule's horizon (the learned one is stretched)
      seed: null                      # null: derived from seed
      on_diverged: report             # a diverged retraining is reported, or: halve_lr (once)
    compare:                          # `fdshpo compare` (flags override); null: its defaults
      methods: null                   # e.g. [fds, random, hd, linear, hyperband]
      seeds: null                     # null: [seed]
      budget_runs: null               # budgets in runs of the final job; null: [2, 4, 8, 16]
    store: {uri: ./fdshpo-store, endpoint: null}   # or store: URI; path, file:// or s3://;
                                      # endpoint http(s)://host[:port], never with keys in it
    resources:                        # Kubernetes settings, validated by fdshpo.config.kube
      gpus: 0                         # per training component; > 0 requests accelerators
      gpu_type: null                  # e.g. nvidia.com/gpu or an accelerator type
      cpu: null                       # e.g. "4"
      memory: null                    # e.g. "16G"
      node_selector: {}               # label: value
      tolerations: []                 # [{key, operator, value, effect}]
      credentials_secret: null        # Secret with the store keys, e.g. fdshpo-s3-credentials
      retries: 2                      # retries of the training components (they resume)
      image: null                     # component image; default fdshpo.image.component_image()
      nodes: 1                        # > 1: each inner run is data-parallel over this many nodes
      procs_per_node: 1               # ranks per node (one per GPU); nodes * procs_per_node > 1
                                      # runs the inner steps with torchrun (fdshpo.components.ranks)

``configs/demo.yaml`` is a complete example. :func:`load_config` raises
:class:`~fdshpo.errors.UserError` naming the key, what it got and what is allowed. The core never
imports this module (it needs ``yaml``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data import dataset_names
from ..engines.choose import ENGINES
from ..errors import UserError
from ..models import INITS, is_known_model, known_models
from ..schedule import HYPERPARAMETERS
from ..store import DEFAULT_STORE
from ..tune.sign import DEFAULT_DECAY, DEFAULT_GROW, DEFAULT_STEP_SIZES, DEFAULT_TOL, MAX_GROWTH
from . import kube
from .reader import Section

#: The paper's segment counts (7 learning-rate segments, one momentum, one weight decay).
DEFAULT_SEGMENTS = {"lr": 7, "momentum": 1, "weight_decay": 1}
#: The defaults below are the settings the benchmarks measured best
#: (bench/results/ablation-cpu-fmnist-mlp.md; README, "Quality: what we measured"): the common
#: start of every comparison, positive lower bounds (multiplicative steps never reach 0), a
#: linear-decay base shape for the lr, multiplicative sign steps of 0.3 with backtracking and
#: the best-validated schedule. The paper's loop (every value from 0, additive steps of
#: 0.1 / 0.1 / 3e-4, no backtracking, constant segments) is one config away (README).
DEFAULT_INITIAL = {"lr": 0.05, "momentum": 0.5, "weight_decay": 1e-5}
DEFAULT_CONFIG_BOUNDS = {"lr": [1e-4, 1.0], "momentum": [0.0, 0.99], "weight_decay": [1e-6, 0.01]}
DEFAULT_SHAPES = {"lr": "linear"}
DEFAULT_OUTER_STEP_SIZES = {"lr": 0.3, "momentum": 0.3, "weight_decay": 0.3}


@dataclass(frozen=True)
class DataConfig:
    dataset: str
    root: str | None = None
    batch_size: int = 128
    val_fraction: float = 0.05
    val_batch_size: int = 1000
    augment: bool = False
    resample: bool = True


@dataclass(frozen=True)
class ScheduleConfig:
    horizon: int
    segments: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SEGMENTS))
    initial: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_INITIAL))
    bounds: dict[str, list] = field(default_factory=lambda: {
        n: list(b) for n, b in DEFAULT_CONFIG_BOUNDS.items()})
    shapes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SHAPES))


@dataclass(frozen=True)
class OuterConfig:
    step_sizes: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_OUTER_STEP_SIZES))
    decay: float = DEFAULT_DECAY
    tol: float = DEFAULT_TOL
    max_steps: int = 10
    replicas: int = 1
    warm_start: bool = False
    multiplicative: list[str] = field(default_factory=lambda: list(HYPERPARAMETERS))
    backtrack: bool = True
    select: str = "best"
    on_diverged: str = "lower_lr"
    grow: float = DEFAULT_GROW  # the paper's 1: growth 2 won on the MLP, lost on LeNet-5 (README)
    continue_to: int | str = "off"


@dataclass(frozen=True)
class RetrainConfig:
    horizon: int | None = None
    seed: int | None = None
    on_diverged: str = "report"


@dataclass(frozen=True)
class CompareConfig:
    methods: list[str] | None = None
    seeds: list[int] | None = None
    budget_runs: list[float] | None = None


@dataclass(frozen=True)
class StoreConfig:
    uri: str = DEFAULT_STORE
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
    nodes: int = 1
    procs_per_node: int = 1

    @property
    def world_size(self) -> int:
        """Ranks of one data-parallel inner run: nodes * procs_per_node (1: one process)."""
        return self.nodes * self.procs_per_node


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
    engine: str = "auto"

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
        from ..schedule import Schedule

        s = self.schedule
        return Schedule.constant(s.horizon, segments=s.segments, bounds=self.bounds(),
                                 shapes=s.shapes, **s.initial)

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {n: (_bound(lo, -math.inf), _bound(hi, math.inf))
                for n, (lo, hi) in self.schedule.bounds.items()}

    def optimizer(self):
        """The configured :class:`~fdshpo.SignOptimizer`."""
        from ..tune.sign import SignOptimizer

        return SignOptimizer(self.outer.step_sizes, self.outer.decay, self.outer.tol,
                             self.outer.multiplicative, self.outer.backtrack, self.outer.grow)

    @property
    def final_horizon(self) -> int:
        """The final job's inner steps: ``retrain.horizon``, else the schedule's horizon."""
        return self.retrain.horizon or self.schedule.horizon

    @property
    def continue_horizon(self) -> int | None:
        """``outer.continue_to`` in inner steps: None for ``off``, the final job's horizon for
        ``final``."""
        to = self.outer.continue_to
        return None if to == "off" else self.final_horizon if to == "final" else int(to)

    def outer_step(self):
        """The configured :class:`~fdshpo.tune.step.OuterStep` (every runner's outer step)."""
        from ..tune.step import OuterStep

        return OuterStep(self.optimizer(), self.outer.replicas, self.outer.on_diverged,
                         engine_options={"engine": self.engine},
                         continue_to=self.continue_horizon)

    def problem(self, dataset, device: str = "cpu"):
        """The configured :class:`~fdshpo.tune.problem.ClassificationProblem` over ``dataset``."""
        from ..tune.problem import ClassificationProblem

        d = self.data
        return ClassificationProblem(dataset, self.network, batch_size=d.batch_size,
                                     val_fraction=d.val_fraction, val_batch_size=d.val_batch_size,
                                     seed=self.seed, device=device, augment=d.augment,
                                     init=self.network_init, resample=d.resample)


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
    if path.is_dir():
        raise UserError(f"config file {str(path)!r} is a directory; give the path of a YAML "
                        "experiment config, e.g. configs/demo.yaml")
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config file {str(path)!r} is not a text file (it is not UTF-8); "
                        "give a YAML experiment config, e.g. configs/demo.yaml") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
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
    top = Section(data, "", ExperimentConfig)
    experiment = top.string("experiment")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", experiment):
        raise UserError(f"experiment must be 1-63 letters, digits, '.', '_' or '-' (starting "
                        f"with a letter or digit), got {experiment!r}")
    network = top.string("network")
    if not is_known_model(network):
        raise UserError(f"network: unknown network {network!r}; allowed: "
                        f"{', '.join(known_models())} (e.g. wrn-16-1)")
    seed = top.integer("seed", minimum=0)
    checkpoint_every = top.integer("checkpoint_every", minimum=0)
    network_init = top.string("network_init")
    engine = top.choice("engine", ENGINES)
    if network_init not in INITS:
        raise UserError(f"network_init: unknown initialisation {network_init!r}; allowed: "
                        f"{', '.join(INITS)}")

    d = top.section("data", DataConfig)
    names = dataset_names()
    dataset = d.string("dataset")
    if dataset not in names:
        raise UserError(f"data.dataset: unknown dataset {dataset!r}; allowed: {', '.join(names)}")
    data_cfg = DataConfig(
        dataset=dataset, root=d.string("root"),
        batch_size=d.integer("batch_size", minimum=1),
        val_fraction=d.number("val_fraction", low=0.0, high=1.0, open_interval=True),
        val_batch_size=d.integer("val_batch_size", minimum=1),
        augment=d.boolean("augment"), resample=d.boolean("resample"))

    s = top.section("schedule", ScheduleConfig)
    horizon = s.integer("horizon", minimum=1)
    segments = s.per_name("segments", kind="int")
    for name, n in segments.items():
        if n < 1:
            raise UserError(f"schedule.segments.{name} must be at least 1, got {n}")
        if n > horizon:
            raise UserError(f"schedule.segments.{name} is {n} but schedule.horizon is only "
                            f"{horizon} steps; use at most {horizon} segments or a longer horizon")
    initial = s.per_name("initial", kind="float")
    bounds = _bounds(s)
    from ..shapes import SHAPES

    shapes = s.get("shapes")
    shapes = s.default("shapes") if shapes is None else shapes
    if not isinstance(shapes, Mapping) or any(
            n not in HYPERPARAMETERS or v not in SHAPES for n, v in shapes.items()):
        raise UserError(f"schedule.shapes maps hyperparameter names ({list(HYPERPARAMETERS)}) "
                        f"to base shapes ({list(SHAPES)}), got {shapes!r}")
    sched_cfg = ScheduleConfig(horizon, segments, initial, bounds,
                               {n: str(v) for n, v in shapes.items()})

    from ..tune.retrain import RETRAIN_DIVERGENCE_POLICIES
    from ..tune.step import DIVERGENCE_POLICIES, SELECTION_RULES

    o = top.section("outer", OuterConfig)
    step_sizes = o.per_name("step_sizes", kind="float", fill=False)
    if not step_sizes:
        raise UserError("outer.step_sizes is empty; give a step size for each hyperparameter to "
                        f"learn, from {list(HYPERPARAMETERS)}")
    for name, size in step_sizes.items():
        if not (math.isfinite(size) and size > 0):
            raise UserError(f"outer.step_sizes.{name} must be a positive number, got {size}")
    outer_cfg = OuterConfig(
        step_sizes=step_sizes,
        decay=o.number("decay", low=0.0, high=1.0),
        tol=o.number("tol", low=0.0, high=math.inf),
        max_steps=o.integer("max_steps", minimum=1, maximum=100),
        replicas=o.integer("replicas", minimum=1, maximum=256),
        warm_start=o.boolean("warm_start"),
        multiplicative=(o.names("multiplicative") if o.get("multiplicative") is not None
                        else [n for n in o.default("multiplicative") if n in step_sizes]),
        backtrack=o.boolean("backtrack"),
        select=o.choice("select", SELECTION_RULES),
        on_diverged=o.choice("on_diverged", DIVERGENCE_POLICIES),
        grow=o.number("grow", low=-math.inf, high=math.inf),
        continue_to=_continue_to(o.get("continue_to"), o.default("continue_to")))
    unlearned = [n for n in outer_cfg.multiplicative if n not in outer_cfg.step_sizes]
    if unlearned:
        raise UserError(f"outer.multiplicative names {unlearned}, which have no "
                        "outer.step_sizes entry and are not learned; add a step size or drop them")
    if not 1 <= outer_cfg.grow <= MAX_GROWTH:
        raise UserError(f"outer.grow must be in [1, {MAX_GROWTH:g}] (1: step sizes never grow, "
                        f"the paper's loop), got {outer_cfg.grow:g}")
    if isinstance(outer_cfg.continue_to, int) and outer_cfg.continue_to < sched_cfg.horizon:
        raise UserError(f"outer.continue_to is {outer_cfg.continue_to} inner steps, shorter than "
                        f"schedule.horizon ({sched_cfg.horizon}): give a longer horizon, final "
                        "or off")
    _check_start(initial, bounds, outer_cfg.multiplicative)

    r = top.section("retrain", RetrainConfig)
    retrain_cfg = RetrainConfig(horizon=r.integer("horizon", minimum=1),
                                seed=r.integer("seed", minimum=0),
                                on_diverged=r.choice("on_diverged", RETRAIN_DIVERGENCE_POLICIES))

    st = top.section("store", StoreConfig, shorthand="uri")
    store_cfg = StoreConfig(uri=check_store_uri(st.string("uri"), "store.uri"),
                            endpoint=_endpoint(st.string("endpoint")))

    res = top.section("resources", ResourcesConfig)
    resources_cfg = ResourcesConfig(
        gpus=res.integer("gpus", minimum=0, maximum=16),
        gpu_type=res.string("gpu_type"),
        cpu=kube.quantity(res.get("cpu"), "cpu"),
        memory=kube.quantity(res.get("memory"), "memory"),
        node_selector=kube.node_selector(res.get("node_selector")),
        tolerations=kube.tolerations(res.get("tolerations")),
        credentials_secret=res.string("credentials_secret"),
        retries=res.integer("retries", minimum=0, maximum=10),
        image=res.string("image"),
        nodes=res.integer("nodes", minimum=1, maximum=256),
        procs_per_node=res.integer("procs_per_node", minimum=1, maximum=64))
    if resources_cfg.gpus and resources_cfg.procs_per_node > resources_cfg.gpus:
        raise UserError(f"resources.procs_per_node is {resources_cfg.procs_per_node} but "
                        f"resources.gpus is {resources_cfg.gpus}: each rank on a node needs a "
                        "GPU of its own; set procs_per_node to at most gpus (GPUs per node)")

    config = ExperimentConfig(experiment, network, data_cfg, sched_cfg, outer_cfg, retrain_cfg,
                              store_cfg, resources_cfg, seed, checkpoint_every, network_init,
                              _compare(top.section("compare", CompareConfig)), engine)
    try:
        config.optimizer().check_schedule(config.initial_schedule())
    except ValueError as exc:
        raise UserError(f"outer.multiplicative: {exc} (schedule.bounds)") from None
    return config


def _continue_to(value, default: int | str) -> int | str:
    """``outer.continue_to``: ``off`` (or false), ``final`` or a positive number of steps."""
    if value is None:
        return default
    if value is False or value == "off":
        return "off"
    if value == "final" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise UserError(f"outer.continue_to must be off, final (the final job's horizon, "
                    f"retrain.horizon) or a number of inner steps, got {value!r}")


def _check_start(initial: Mapping[str, float], bounds: Mapping[str, list],
                 multiplicative: list[str]) -> None:
    """Every initial value inside its bounds, and none that a multiplicative step cannot move.

    A multiplicative step scales the lr or weight decay (lambda * e^(-+s)), so a value of exactly
    0 would stay 0 for ever: that start is refused with what to change, never run as a silent
    no-op. (Momentum's steps act on 1 - momentum, so momentum 0 moves.)
    """
    for name in multiplicative:
        if name != "momentum" and initial[name] == 0:
            hi = bounds[name][1]
            raise UserError(
                f"schedule.initial.{name} is 0, but {name} takes multiplicative steps "
                f"(outer.multiplicative; by default every learned name), which scale a value "
                f"and cannot move it from 0: start it above 0 (the default start is "
                f"{name}: {DEFAULT_INITIAL[name]:g}, inside a positive lower bound such as "
                f"schedule.bounds.{name}: [{DEFAULT_CONFIG_BOUNDS[name][0]:g}, "
                f"{DEFAULT_CONFIG_BOUNDS[name][1] if hi is None else hi:g}]), or give it "
                f"additive steps (leave {name} out of outer.multiplicative and give "
                f"outer.step_sizes.{name} an additive size, the paper's is "
                f"{DEFAULT_STEP_SIZES[name]:g})")
    for name in HYPERPARAMETERS:
        lo, hi = (_bound(b, d) for b, d in zip(bounds[name], (-math.inf, math.inf)))
        if not initial[name] >= lo or not initial[name] <= hi:
            raise UserError(f"schedule.initial.{name} = {initial[name]} lies outside "
                            f"schedule.bounds.{name} [{lo}, {hi}]; change one of them")


def _compare(c: Section) -> CompareConfig:
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


def check_store_uri(uri: str, key: str) -> str:
    """``uri`` if it is a valid store URI; else UserError naming ``key`` (user info redacted)."""
    from ..store import StoreError, parse_store_uri

    try:
        parse_store_uri(uri)
    except StoreError as exc:
        raise UserError(f"{key}: {exc}") from None
    return uri


def _endpoint(endpoint: str | None) -> str | None:
    from ..store import StoreError
    from ..store.credentials import parse_endpoint

    if endpoint is not None:
        try:
            parse_endpoint(endpoint)
        except StoreError as exc:
            raise UserError(f"store.endpoint: {exc}") from None
    return endpoint


def _bounds(s: Section) -> dict[str, list]:
    value = s.get("bounds")
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise UserError("schedule.bounds must map hyperparameter names to [lower, upper]")
    for name in value:
        if name not in HYPERPARAMETERS:
            raise UserError(f"schedule.bounds: unknown hyperparameter {name!r}; allowed: "
                            f"{', '.join(HYPERPARAMETERS)}")
    out = s.default("bounds")
    for name in HYPERPARAMETERS:
        pair = value.get(name, out[name])
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

"""Budget accounting: every method's cost in plain-SGD-step equivalents and in wall time.

The unit is one plain SGD-momentum step (forward + backward + update) of the problem's network
at its training batch size, measured on this machine in this process. A :class:`CostModel`
holds the measured price of every kind of work, in that unit:

    plain step                         1                        (by definition)
    FDS step with k live tangents      fds_base + per_tangent * k        (forward engine)
    FDS step in reverse mode           reverse_step                       (reverse engine)
    one step it recomputes             reverse_recompute
    forward pass (evaluation)          per_eval_example * examples
    forward + backward (val gradient)  per_grad_example * examples

A :class:`Ledger` counts the work a method did (pure counts, no clocks) plus the wall seconds it
took, and converts the counts with a cost model:

    cost = plain_steps + fds_steps * fds_base + fds_columns * per_tangent
           + reverse_steps * reverse_step + recomputed_steps * reverse_recompute
           + eval_examples * per_eval_example + grad_examples * per_grad_example

where ``fds_columns`` is the sum over forward-mode FDS steps of the live tangent columns and
``recomputed_steps`` the steps reverse mode's backward sweep recomputes. An FDS run is charged
for the engine that runs it (:func:`fds_engine` picks it from the same prices, as
``engine="auto"`` does, and :func:`fds_run_ledger` counts its work). "Equal budget" means
equal modelled cost; the wall-clock cost ``seconds / seconds_per_step`` is reported beside it as a
check of the model. Methods decide what they can afford from the model before doing the work, so
given a cost model the allocation is deterministic (reproducible and testable); calibration is
the only timed part.

Sanity: an FDS step does a plain step's gradient and more (an HVP, tangents), so in plain steps

    forward_base + per_tangent * 1 >= 1    and    reverse_step >= 1

(:func:`price_problems`). A cost model that breaks it cannot be built (a stored one is refused,
naming the price); :func:`calibrate` measures again when a measurement breaks it (a loaded
machine slowing the plain step, say) and, if it still does, charges the calibrated prices of
the device type (:data:`fdshpo.engines.prices.CALIBRATED_PRICES`) and says so in ``note``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..engines.base import (
    CALIBRATED_PRICES,
    EngineChoice,
    EnginePrices,
    TangentColumns,
    checked_interval,
    recomputed_steps,
)
from ..engines.choose import choose_engine
from ..engines.flat import Footprint
from ..engines.forward import ForwardEngine
from ..engines.inner import train
from ..engines.prices import default_memory_limit, timed_seconds
from ..engines.replay import BatchReplay
from ..engines.reverse import ReverseEngine
from ..schedule import Schedule
from ..tune.problem import ClassificationProblem


@dataclass(frozen=True)
class CostModel:
    """Prices of work in plain-step equivalents, and the plain step's wall time in seconds.

    ``engines``: the FDS engines' prices in plain steps (:class:`~fdshpo.EnginePrices`: the
    forward step's base and per-tangent price, the reverse step and a recomputed step; without
    reverse-mode prices only the forward engine can be charged, and :func:`fds_engine` picks
    it); ``per_eval_example`` / ``per_grad_example``: a forward / forward + backward pass per
    validation example. Written (``to_dict``, journals, ``--cost-model`` files) in the flat
    keys ``fds_base``, ``per_tangent``, ``reverse_step``, ``reverse_recompute`` beside the
    others, as every earlier comparison wrote them."""

    seconds_per_step: float
    engines: EnginePrices
    per_eval_example: float
    per_grad_example: float
    #: where the engine prices come from when not measured as they are (calibrate), else ""
    note: str = ""

    #: flat key in a stored cost model -> field of ``engines``
    ENGINE_KEYS = {"fds_base": "forward_base", "per_tangent": "per_tangent",
                   "reverse_step": "reverse_step", "reverse_recompute": "recompute"}

    def __post_init__(self) -> None:
        for name in ("per_eval_example", "per_grad_example"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"cost model {name} must be non-negative, got "
                                 f"{getattr(self, name)}")
        if not self.seconds_per_step > 0:
            raise ValueError(f"seconds_per_step must be positive, got {self.seconds_per_step}")
        problems = price_problems(self.engines)
        if problems:
            raise ValueError(f"the cost model prices an FDS step below a plain step "
                             f"({'; '.join(problems)}), which cannot be: it was measured on a "
                             "loaded machine; measure it again (fdshpo compare without "
                             "--cost-model) or charge the calibrated prices")

    def engine_prices(self) -> EnginePrices | None:
        """The engines' prices in plain steps (what ``engine="auto"`` compares), or None
        without reverse-mode prices."""
        return self.engines if self.engines.has_reverse else None

    def to_dict(self) -> dict:
        engines = self.engines.to_dict()
        return {"seconds_per_step": self.seconds_per_step,
                **{flat: engines[field] for flat, field in self.ENGINE_KEYS.items()},
                "per_eval_example": self.per_eval_example,
                "per_grad_example": self.per_grad_example,
                **({"note": self.note} if self.note else {})}

    @classmethod
    def from_dict(cls, data: dict) -> CostModel:
        """The model of :meth:`to_dict`'s keys (reverse-mode keys may be missing or None).
        Raises ValueError naming a missing or negative key as the file spells it."""
        def number(key, required=True):
            if data.get(key) is None:
                if required:
                    raise ValueError(f"cost model {key} is missing")
                return None
            value = float(data[key])
            if not value >= 0:
                raise ValueError(f"cost model {key} must be non-negative, got {value}")
            return value

        engines = EnginePrices(**{field: number(flat, required=not flat.startswith("reverse"))
                                  for flat, field in cls.ENGINE_KEYS.items()})
        return cls(number("seconds_per_step"), engines, number("per_eval_example"),
                   number("per_grad_example"), str(data.get("note") or ""))


def price_problems(engines: EnginePrices) -> list[str]:
    """What makes ``engines`` (in plain steps) impossible: an FDS step priced below the plain
    step it contains (module docstring); empty when sane."""
    problems = []
    one = engines.forward_step(1)
    if one < 1:
        problems.append(f"a forward-mode step with one tangent at {one:.2f} plain steps")
    if engines.has_reverse and engines.reverse_step < 1:
        problems.append(f"a reverse-mode step at {engines.reverse_step:.2f} plain steps")
    return problems


@dataclass(frozen=True)
class Ledger:
    """Counts of work done and wall seconds spent; immutable, combine with ``+``."""

    plain_steps: int = 0
    fds_steps: int = 0
    fds_columns: int = 0
    eval_examples: int = 0
    grad_examples: int = 0
    seconds: float = 0.0
    reverse_steps: int = 0
    recomputed_steps: int = 0

    def __add__(self, other: Ledger) -> Ledger:
        return Ledger(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values())))

    def with_seconds(self, seconds: float) -> Ledger:
        return replace(self, seconds=float(seconds))

    def cost(self, model: CostModel) -> float:
        """Modelled cost in plain-step equivalents (the formula in the module docstring).

        Raises ValueError for reverse-mode work under a model without reverse-mode prices."""
        reverse = 0.0
        prices = model.engines
        if self.reverse_steps or self.recomputed_steps:
            if not prices.has_reverse:
                raise ValueError("this cost model has no reverse-mode prices; measure one "
                                 "with fdshpo.baselines.budget.calibrate to charge "
                                 "reverse-mode FDS runs")
            reverse = (self.reverse_steps * prices.reverse_step
                       + self.recomputed_steps * prices.recompute)
        return (self.plain_steps + self.fds_steps * prices.forward_base
                + self.fds_columns * prices.per_tangent + reverse
                + self.eval_examples * model.per_eval_example
                + self.grad_examples * model.per_grad_example)

    def wall_steps(self, model: CostModel) -> float:
        """Wall time expressed in plain steps measured in the same process."""
        return self.seconds / model.seconds_per_step

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def fds_run_ledger(schedule: Schedule, learn, val_examples: int, engine: str = "forward",
                   recompute_every: int | None = None) -> Ledger:
    """The work of one FDS inner run of ``engine`` ("forward": tangents for ``learn``;
    "reverse": the sweeps, with ``recompute_every`` as the run's) and its validation gradient."""
    T = schedule.num_steps
    if engine == "reverse":
        return Ledger(reverse_steps=T, grad_examples=val_examples,
                      recomputed_steps=recomputed_steps(T, checked_interval(recompute_every, T)))
    if engine != "forward":
        raise ValueError(f"an FDS run is charged for the engine that runs it, 'forward' or "
                         f"'reverse'; got {engine!r} (resolve 'auto' with fds_engine first)")
    live = TangentColumns.of(schedule, tuple(learn)).live_steps(T)
    return Ledger(fds_steps=T, fds_columns=live, grad_examples=val_examples)


def fds_engine(model: nn.Module, schedule: Schedule, learn, cost_model: CostModel,
               engine: str = "auto", recompute_every: int | None = None,
               train_batches=None) -> EngineChoice:
    """The engine an FDS run of ``model`` uses (``engine="auto"``: the cheaper by
    ``cost_model``'s prices among those whose state fits,
    :func:`fdshpo.engines.choose.choose_engine`;
    ``train_batches`` None: a problem's batches, which reverse mode can read again). Charge it
    with :func:`fds_run_ledger` and run it by passing its ``engine`` and ``recompute_every``
    on, so the run is the one charged."""
    footprint = Footprint.of(model)
    return choose_engine(engine, schedule, learn, footprint.num_params, footprint.itemsize,
                         train_batches, prices=cost_model.engine_prices(),
                         memory_limit=default_memory_limit(footprint.device),
                         recompute_every=recompute_every,
                         price_source="the comparison's measured cost model")


def trial_ledger(num_steps: int, val_examples: int) -> Ledger:
    """The work of one plain training run of ``num_steps`` steps scored on a validation set."""
    return Ledger(plain_steps=num_steps, eval_examples=val_examples)


def _timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs, after one warm-up run."""
    return timed_seconds(fn, device, repeats, statistics.median_high)


def calibrate(problem: ClassificationProblem, schedule: Schedule, learn=("lr", "momentum",
              "weight_decay"), steps: int = 10, repeats: int = 3, attempts: int = 3,
              measure: Callable[..., tuple] | None = None) -> CostModel:
    """Measure a :class:`CostModel` for ``problem``'s network on this machine, now.

    A measurement whose engine prices break the sanity rule (:func:`price_problems`) is taken
    again, up to ``attempts`` times in all; if every one breaks it, the model charges the
    calibrated engine prices of the device type and says so in ``note``. ``measure`` (tests)
    replaces :func:`measure_costs`.
    """
    if steps < 1 or repeats < 1 or attempts < 1:
        raise ValueError(f"steps, repeats and attempts must be positive, got {steps}, "
                         f"{repeats} and {attempts}")
    measure = measure or measure_costs
    seen = []
    for _ in range(attempts):
        step_s, engines, per_eval, per_grad = measure(problem, schedule, learn, steps, repeats)
        problems = price_problems(engines)
        if not problems:
            return CostModel(step_s, engines, per_eval, per_grad)
        seen.append("; ".join(problems))
    kind = torch.device(problem.device).type
    fallback = CALIBRATED_PRICES.get(kind, CALIBRATED_PRICES["cpu"])
    return CostModel(step_s, fallback, per_eval, per_grad, note=(
        f"measured {attempts} times, each pricing an FDS step below a plain step (last: "
        f"{seen[-1]}; a loaded machine): charged the calibrated {kind.upper()} engine prices "
        f"instead"))


def measure_costs(problem: ClassificationProblem, schedule: Schedule, learn, steps: int,
                  repeats: int) -> tuple[float, EnginePrices, float, float]:
    """One measurement of (plain step seconds, engine prices in plain steps, per validation
    example eval and gradient prices in plain steps); what :func:`calibrate` times.

    Times ``steps`` plain steps, ``steps`` forward-mode FDS steps with one tangent and with all
    of ``schedule``'s learned columns live, ``steps`` reverse-mode steps storing every state
    (no recomputation) and its forward sweep alone (a recomputed step's work), and a forward /
    forward+backward pass over one batch of the validation batch size; each the median of
    ``repeats`` after a warm-up. The forward-mode step cost is the straight line through the
    one-tangent and all-tangents points.
    """
    task = problem(0, 0, steps)
    batches = list(task.train_batches)
    model = task.model
    device = problem.device
    loss_fn = nn.functional.cross_entropy
    plain = Schedule.constant(steps, lr=0.01, momentum=0.5)
    step_s = _timed(lambda: train(model, loss_fn, batches, plain), device, repeats) / steps

    def fds_seconds(sched: Schedule, names) -> tuple[float, int]:
        """Seconds per FDS step over the last ``steps`` steps of ``sched`` (all columns live)."""
        engine = ForwardEngine(model, loss_fn, sched, names)
        first = sched.num_steps - steps

        def run():  # start at `first`; steps before it count as done with loss 0
            state = engine.init()
            state = state._replace(step=first, train_losses=torch.zeros_like(state.train_losses))
            return engine.advance(state, batches)

        return _timed(run, device, repeats) / steps, len(engine.columns)

    one_s, _ = fds_seconds(Schedule.constant(steps, lr=0.01, momentum=0.5), ("lr",))
    most = max(schedule.segments[n] for n in learn)
    full = Schedule.constant(steps * most, lr=0.01, momentum=0.5,
                             segments={n: schedule.segments[n] for n in schedule.segments})
    many_s, k_many = fds_seconds(full, learn)
    per_tangent = max(0.0, (many_s - one_s) / (k_many - 1)) / step_s if k_many > 1 else 0.0
    fds_base = max(0.0, one_s / step_s - per_tangent)

    val_x = torch.cat([x for x, _ in task.val_batches])[:problem.val_batch_size]
    val_y = torch.cat([y for _, y in task.val_batches])[:problem.val_batch_size]

    reverse = ReverseEngine(model, loss_fn, plain, learn, recompute_every=1)
    replay, one_example = BatchReplay(batches, steps), [(val_x[:1], val_y[:1])]
    sweep_s = _timed(lambda: reverse.advance(reverse.init(), replay, one_example, until=steps),
                     device, repeats) / steps
    reverse_s = _timed(lambda: reverse.advance(reverse.init(), replay, one_example), device,
                       repeats) / steps

    def forward():
        with torch.no_grad():
            model(val_x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        loss_fn(model(val_x), val_y).backward()

    n = len(val_x)
    eval_s = _timed(forward, device, repeats)
    grad_s = _timed(forward_backward, device, repeats)
    model.zero_grad(set_to_none=True)
    return (step_s, EnginePrices(forward_base=fds_base, per_tangent=per_tangent,
                                 reverse_step=reverse_s / step_s, recompute=sweep_s / step_s),
            eval_s / n / step_s, grad_s / n / step_s)


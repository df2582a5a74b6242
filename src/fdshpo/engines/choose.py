"""Choosing and running an exact engine: ``engine="forward" | "reverse" | "auto"``.

Both engines compute the same hypergradient of the same objective (:mod:`fdshpo.engines.forward`,
:mod:`fdshpo.engines.reverse`); they differ in time and memory (:mod:`fdshpo.engines.prices`):
forward mode's
step grows with the number K of learned values and its state is O(K P) whatever the horizon;
reverse mode's step does not depend on K and its state is O(sqrt(T) P).

``engine="auto"`` decides, in this order:

1. ``hvp_clamp`` is set: forward (clamping H Z is a forward-mode option);
2. ``train_batches`` cannot be read again by index (a generator, or an iterable that is not a
   sequence or :class:`~fdshpo.data.ShuffledBatches`): forward, which reads them once;
3. an engine whose state does not fit in ``memory_limit`` (default: half of the device memory
   free when the choice is made) is out; when neither fits, the smaller. Reverse mode stores
   every trajectory state (``recompute_every=1``: no recomputed steps, R = 0) when all T + 1
   of them fit in the limit and no interval was given, else one every ceil(sqrt(T)) steps;
4. the cheaper in time by ``prices``: by default
   :data:`~fdshpo.engines.prices.CALIBRATED_PRICES` for the device type, fitted to
   ``bench/engine.py``'s
   measurements (in plain steps), so the same run makes the same choice every time;
   ``prices="measure"`` times both engines' work on the first training batch instead
   (:func:`~fdshpo.engines.prices.measure_prices`: about 2 * (min(K, 8) + 6) plain steps, once per
   call;
   the tune loop measures once per run); an :class:`~fdshpo.engines.prices.EnginePrices` (e.g. from
   :func:`fdshpo.baselines.budget.calibrate`) is used as given.

The choice, the reason and the numbers behind it come back as ``result.engine``
(:class:`EngineChoice`); the tune loop shows them on its progress line and records them in every
outer step's record. Measured costs of both engines: ``bench/results/engine.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from ..schedule import HYPERPARAMETERS, Schedule
from .base import (
    CALIBRATED_PRICES,
    EngineChoice,
    EnginePrices,
    HypergradientResult,
    TangentColumns,
    checked_interval,
    checked_learn,
)
from .flat import Footprint
from .forward import ForwardEngine
from .inner import LossFn
from .objective import Batch
from .prices import default_memory_limit, format_bytes, measure_prices, state_bytes
from .replay import is_indexable, is_one_shot, stream_from
from .reverse import ReverseEngine
from .shards import ShardGroup

ENGINES = ("auto", "forward", "reverse")
#: Keyword options each engine takes (``engine_options`` are routed by these).
ENGINE_OPTIONS = {"forward": ("grad_clamp", "hvp_clamp", "hvp", "check_every", "group"),
                  "reverse": ("grad_clamp", "hvp", "check_every", "recompute_every", "group")}
#: Options that steer the choice without changing what an engine computes.
CHOICE_OPTIONS = ("prices", "memory_limit")


def choose_engine(
    requested: str,
    schedule: Schedule,
    learn: Sequence[str],
    num_params: int,
    itemsize: int,
    train_batches: Iterable[Batch] | None,
    *,
    hvp_clamp: float | None = None,
    prices: EnginePrices | Callable[[], EnginePrices] | None = None,
    memory_limit: int | None = None,
    recompute_every: int | None = None,
    price_source: str = "the given prices",
) -> EngineChoice:
    """The engine for ``requested`` by the rules of the module docstring.

    ``prices`` may be a function that measures them: it is called only when the choice comes
    down to time (``price_source`` names them in the reason). Without prices ``auto`` takes
    forward once rules 1-3 leave both engines in. ``train_batches=None``: batches known to be
    read again by index (a :class:`~fdshpo.tune.problem.ClassificationProblem`'s ShuffledBatches).
    Raises ValueError for an unknown engine, and for ``engine="reverse"`` with ``hvp_clamp``.
    """
    if requested not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {requested!r}")
    T = schedule.num_steps
    interval = checked_interval(recompute_every, T)
    if requested == "reverse" and hvp_clamp is not None:
        raise ValueError("hvp_clamp clamps forward mode's tangent products H Z and has no "
                         "reverse-mode counterpart; use engine='forward' (or 'auto') with it, "
                         "or drop hvp_clamp")
    columns = TangentColumns.of(schedule, checked_learn(learn))
    if (recompute_every is None and memory_limit is not None
            and state_bytes("reverse", columns, T, num_params, itemsize, 1) <= memory_limit):
        interval = 1  # every state fits: store them all, recompute nothing
    memory = {name: state_bytes(name, columns, T, num_params, itemsize, interval)
              for name in ("forward", "reverse")}

    def choice(engine: str, reason: str, priced: EnginePrices | None = None,
               cost: dict | None = None) -> EngineChoice:
        return EngineChoice(engine, requested, reason,
                            interval if engine == "reverse" else None, cost or {}, memory,
                            priced)

    if requested != "auto":
        return choice(requested, "requested")
    if hvp_clamp is not None:
        return choice("forward", "hvp_clamp is a forward-mode option")
    if train_batches is None:
        pass
    elif is_one_shot(train_batches):
        return choice("forward", "train_batches is a one-shot iterator, which reverse mode "
                                 "cannot read again")
    elif not is_indexable(train_batches):
        return choice("forward", "train_batches is not a sequence or ShuffledBatches, which "
                                 "reverse mode reads again by index")
    if memory_limit is not None:
        fits = [name for name in ("forward", "reverse") if memory[name] <= memory_limit]
        if len(fits) < 2:
            smaller = fits[0] if fits else min(memory, key=memory.get)
            return choice(smaller, f"state of {format_bytes(memory[smaller])} "
                                   + ("fits" if fits else "is the smaller")
                                   + f" in the {format_bytes(memory_limit)} limit, the other's "
                                   f"{format_bytes(max(memory.values()))} does not")
    if prices is None:
        return choice("forward", "no prices to compare; forward reads the batches once")
    if callable(prices):
        prices = prices()
    cost = {"forward": prices.forward_cost(columns, T),
            "reverse": prices.reverse_cost(T, interval)}
    cheaper = min(cost, key=cost.get)
    other = "reverse" if cheaper == "forward" else "forward"
    ratio = cost[other] / cost[cheaper] if cost[cheaper] > 0 else float("inf")
    return choice(cheaper, f"{ratio:.2f}x cheaper than {other} by {price_source}, state "
                           f"{format_bytes(memory[cheaper])}", prices, cost)


def make_engine(name: str, model: nn.Module, loss_fn: LossFn, schedule: Schedule,
                learn: Sequence[str], choice: EngineChoice | None = None,
                **options) -> ForwardEngine | ReverseEngine:
    """The engine called ``name`` with those of ``options`` it takes (ENGINE_OPTIONS); with
    ``choice``, reverse mode stores its states at the interval the choice made (and priced)."""
    if name == "reverse" and choice is not None and choice.recompute_every is not None:
        options = {**options, "recompute_every": choice.recompute_every}
    cls = {"forward": ForwardEngine, "reverse": ReverseEngine}[name]
    return cls(model, loss_fn, schedule, learn,
               **{k: v for k, v in options.items() if k in ENGINE_OPTIONS[name]})


def prepare_engine(
    model: nn.Module,
    loss_fn: LossFn,
    train_batches: Iterable[Batch],
    schedule: Schedule,
    learn: Sequence[str] = HYPERPARAMETERS,
    *,
    engine: str = "auto",
    prices: EnginePrices | Mapping | str | None = None,
    memory_limit: int | None = None,
    **options,
) -> tuple[ForwardEngine | ReverseEngine, EngineChoice]:
    """(engine, choice) for a run by the rules of the module docstring; ``prices``: None
    (calibrated for the device type), "measure", or :class:`EnginePrices` (or its dict).
    ``options``: the engines' options (``grad_clamp``, ``hvp_clamp``, ``hvp``, ``check_every``,
    ``recompute_every``, ``group``). With a ``group`` rank 0 chooses (its memory, its prices,
    measured on its shard) and every rank runs its choice (:mod:`fdshpo.engines.shards`)."""
    unknown = sorted(set(options) - {o for opts in ENGINE_OPTIONS.values() for o in opts})
    if unknown:
        raise TypeError(f"unknown engine option(s) {unknown}; known: "
                        f"{sorted({o for v in ENGINE_OPTIONS.values() for o in v})}")
    footprint = Footprint.of(model)
    if engine == "auto" and memory_limit is None:
        memory_limit = default_memory_limit(footprint.device)

    def measured() -> EnginePrices:
        batch = next(iter(stream_from(train_batches, 0)), None)
        if batch is None:  # no batches at all: the run reports it
            return EnginePrices(0.0, 0.0, 0.0, 0.0)
        k = len(TangentColumns.of(schedule, checked_learn(learn)))
        return measure_prices(model, loss_fn, batch, k, options.get("hvp", "auto"))

    kind = footprint.device.type
    if prices is None:
        prices, source = CALIBRATED_PRICES.get(kind, CALIBRATED_PRICES["cpu"]), \
            f"the calibrated {kind.upper()} prices"
    elif isinstance(prices, str):
        if prices != "measure":
            raise ValueError(f"prices must be None (calibrated), 'measure' or EnginePrices, "
                             f"got {prices!r}")
        prices, source = measured, "prices measured on the first batch"
    elif isinstance(prices, Mapping):
        prices, source = EnginePrices.from_dict(prices), "the given prices"
    else:
        source = "the given prices"

    def chosen() -> EngineChoice:
        return choose_engine(engine, schedule, learn, footprint.num_params, footprint.itemsize,
                             train_batches, hvp_clamp=options.get("hvp_clamp"), prices=prices,
                             memory_limit=memory_limit,
                             recompute_every=options.get("recompute_every"),
                             price_source=source)

    if options.get("group") is None:
        choice = chosen()
    else:
        shards = ShardGroup(options["group"])
        mine = None
        if shards.rank == 0:
            try:
                mine = chosen()
            except Exception as error:  # every rank raises it
                mine = error
        choice = shards.decide(mine, "engine choice")
    return make_engine(choice.engine, model, loss_fn, schedule, learn, choice, **options), choice


def hypergradient(
    model: nn.Module,
    loss_fn: LossFn,
    train_batches: Iterable[Batch],
    val_batches: Iterable[Batch],
    schedule: Schedule,
    learn: Sequence[str] = HYPERPARAMETERS,
    *,
    engine: str = "auto",
    grad_clamp: float | None = None,
    hvp_clamp: float | None = None,
    on_step: Callable | None = None,
    hvp: str = "auto",
    recompute_every: int | None = None,
    prices: EnginePrices | Mapping | str | None = None,
    memory_limit: int | None = None,
    group: Any = None,
) -> HypergradientResult:
    """Exact hypergradients of the validation loss w.r.t. the learned segment values.

    Runs ``schedule.num_steps`` SGD-momentum steps from the model's parameters, one batch of
    ``train_batches`` per step, then returns ``HypergradientResult(val_loss, grads, ...)`` with
    ``grads[name]`` shaped like ``schedule.values[name]`` for each name in ``learn``;
    ``val_loss`` is the example-weighted mean of ``loss_fn`` over ``val_batches`` at theta_T
    (:mod:`fdshpo.engines.objective`). The model is not modified.

    Args:
        engine: "forward" (tangents; reads the batches once, a generator is fine),
            "reverse" (checkpointed reverse mode; reads the batches again: a list,
            ShuffledBatches or other repeatable iterable) or "auto" (the default: the cheaper
            that fits, see :mod:`fdshpo.engines.choose`). ``result.engine`` says which ran and why.
        grad_clamp: clamp gradients to [-c, c] and differentiate through the clamp.
        hvp_clamp: the paper's clamp of H Z (not exact; forward mode only).
        on_step: called with the engine's state after every step (``state.step`` counts to
            ``state.total_steps``: T forward, 2T reverse).
        hvp: the Hessian-vector-product form ("auto", "reverse", "forward").
        recompute_every: reverse mode's interval between stored states (default: 1, every
            state, when ``auto`` finds all T + 1 fit in ``memory_limit``; else ceil(sqrt(T))).
        prices, memory_limit: what ``auto`` decides by: prices None (calibrated for the
            device type), "measure" or :class:`EnginePrices` (:func:`prepare_engine`).
        group: a ``torch.distributed`` process group (``torch.distributed.group.WORLD`` for
            every rank): each rank passes its own shard of every training and validation batch
            and every rank returns the result of one process given the whole batches
            (:mod:`fdshpo.engines.shards`; BatchNorm normalises per shard). None: this process
            holds the whole batches.

    Raises:
        ValueError: ``train_batches`` does not yield exactly ``num_steps`` batches, an empty
            ``val_batches``, unknown names in ``learn``, an unknown engine, or a one-shot
            ``train_batches`` with ``engine="reverse"``.
        InnerRunDiverged: the training loss, validation loss or hypergradient is non-finite
            (the message names the step and the hyperparameters in force).
        RankFailed: with a group, a collective failed (another rank died or missed the
            process group's timeout).
    """
    runner, choice = prepare_engine(
        model, loss_fn, train_batches, schedule, learn, engine=engine, prices=prices,
        memory_limit=memory_limit, grad_clamp=grad_clamp, hvp_clamp=hvp_clamp, hvp=hvp,
        recompute_every=recompute_every, group=group)
    return runner.run(runner.init(), train_batches, val_batches, on_step, choice)

"""For the compute of N runs of my final training job, which method gives the best final model?

The final job is ``space.final_steps`` plain SGD steps on the full training set, scored on the
test set. For every seed s (the problem's seed: validation splits, initialisation and batch order;
and the samplers' seed) and method m:

    unit      one final job = final_steps plain-step equivalents (its test-set scoring is not
              counted: it is evaluation, not tuning, and costs under 1% of the job)
    budget    B_N = N x unit for each N of ``budget_runs`` (default 2, 4, 8, 16); every method is
              charged for everything it runs (:mod:`fdshpo.baselines.budget`, priced by one cost
              model)
    search    m(problem_s, space, B_max, cost model, seed=s, init=initial) once, at the largest
              budget; its pick at B_N is its incumbent after spending at most B_N
              (:func:`pick_at`), which is what m returns when run with B_N (the baselines'
              contract). Methods in ``BUDGET_AWARE`` (greedy) are run once per N instead.
    score     the pick (found on the search horizon) stretched to the final horizon, retrained
              from scratch on the full training set and tested
              (:func:`fdshpo.tune.retrain.retrain_and_test`); identical picks are retrained once
              per seed. A retrain that diverges scores chance accuracy and is flagged; one
              that ends about as good as chance with a finite loss is flagged as collapsed.

Every method starts from the same initial schedule (``initial``) and searches the same space
(horizon, segments, bounds). Retraining is evaluation and is charged to no method.

This module runs a comparison; :mod:`fdshpo.compare.outputs` writes it (tables, JSON, plots)
and keeps the journal that lets an interrupted comparison resume.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..baselines import BUDGET_AWARE, METHODS, Incumbent, MethodResult, SearchSpace, get_method
from ..baselines.budget import CostModel, calibrate
from ..baselines.fds import initial_schedule
from ..baselines.minimum import minimum_budget
from ..schedule import Schedule
from ..tune.problem import ClassificationProblem
from ..tune.retrain import retrain_and_test

#: The issue's baselines and FDS (``tpe`` over free segment values and ``greedy`` FDS are
#: available by name but not run by default).
DEFAULT_METHODS = ("fds", "random", "hd", "constant", "step", "cosine", "linear", "hyperband")
BUDGET_RUNS = (2, 4, 8, 16)


@dataclass(frozen=True)
class Row:
    """One method on one seed at one budget: its pick and the retrained network's test score.

    ``cost`` and ``seconds`` are what the method had spent when it found the pick.
    """

    method: str
    seed: int
    budget_runs: float
    budget: float
    cost: float
    seconds: float
    val_loss: float
    test_accuracy: float
    test_loss: float
    retrain_diverged: bool
    schedule: Schedule
    retrain_collapsed: bool = False

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["schedule"] = self.schedule.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> Row:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k != "retrain_collapsed"}
        # a journal written before retrain_collapsed existed lacks it: not collapsed
        values["retrain_collapsed"] = data.get("retrain_collapsed", False)
        values["schedule"] = Schedule.from_dict(data["schedule"])
        return cls(**values)


@dataclass(frozen=True)
class MethodRun:
    """One method on one seed: a row per budget, and a record of each search it ran (one, or
    one per budget for a budget-aware method): spend, wall time, details, incumbent trace."""

    method: str
    seed: int
    rows: tuple[Row, ...]
    searches: tuple[dict, ...]

    def to_dict(self) -> dict:
        return {"method": self.method, "seed": self.seed,
                "rows": [r.to_dict() for r in self.rows], "searches": list(self.searches)}

    @classmethod
    def from_dict(cls, data: Mapping) -> MethodRun:
        return cls(data["method"], int(data["seed"]),
                   tuple(Row.from_dict(r) for r in data["rows"]), tuple(data["searches"]))


#: Wall/modelled ratios of two methods further apart than this factor are warned about.
RATIO_SPREAD = 2.0


@dataclass(frozen=True)
class Comparison:
    """Every (seed, method) run, and what they shared: space, cost model, budgets, settings."""

    runs: tuple[MethodRun, ...]
    space: SearchSpace
    cost_model: CostModel
    budget_runs: tuple[float, ...]
    settings: dict = field(default_factory=dict)

    @property
    def rows(self) -> tuple[Row, ...]:
        return tuple(r for run in self.runs for r in run.rows)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(run.method for run in self.runs))

    def summary(self) -> list[dict]:
        """Per budget N and method, over seeds: test accuracy mean, standard deviation, min and
        max; the retrain divergence and collapse rates; mean validation loss, spend and wall
        seconds."""
        out = []
        for n in self.budget_runs:
            for m in self.methods():
                rows = [r for r in self.rows if r.method == m and r.budget_runs == n]
                if not rows:
                    continue
                acc = [r.test_accuracy for r in rows]
                diverged = sum(r.retrain_diverged for r in rows)
                collapsed = sum(r.retrain_collapsed for r in rows)
                out.append({
                    "method": m, "budget_runs": n, "budget": rows[0].budget, "seeds": len(rows),
                    "test_accuracy_mean": statistics.fmean(acc),
                    "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                    "test_accuracy_min": min(acc), "test_accuracy_max": max(acc),
                    "retrain_diverged": diverged, "retrain_divergence_rate": diverged / len(rows),
                    "retrain_collapsed": collapsed, "retrain_collapse_rate": collapsed / len(rows),
                    "val_loss_mean": statistics.fmean(r.val_loss for r in rows),
                    "cost_mean": statistics.fmean(r.cost for r in rows),
                    "seconds_mean": statistics.fmean(r.seconds for r in rows)})
        return out

    def wall_ratios(self) -> dict[str, float]:
        """Per method, over its searches (every seed, the largest budget it ran): wall seconds
        over modelled seconds,

            ratio = sum seconds / (sum modelled cost * seconds_per_step)

        1 when the cost model prices the method's work as it ran; NaN without modelled cost."""
        out = {}
        for m in self.methods():
            searches = [s for run in self.runs if run.method == m for s in run.searches[-1:]]
            cost = sum(s["cost"] for s in searches) * self.cost_model.seconds_per_step
            out[m] = sum(s["seconds"] for s in searches) / cost if cost else math.nan
        return out

    def price_warning(self) -> str | None:
        """A loud warning when the methods' wall/modelled ratios differ by more than
        :data:`RATIO_SPREAD` (one method charged far less, per real second, than another:
        the equal budget was not equal), else None."""
        ratios = {m: r for m, r in self.wall_ratios().items() if math.isfinite(r) and r > 0}
        if len(ratios) < 2 or max(ratios.values()) <= RATIO_SPREAD * min(ratios.values()):
            return None
        high, low = max(ratios, key=ratios.get), min(ratios, key=ratios.get)
        return (f"WARNING: the cost model disagrees with the clock: wall/modelled is "
                f"{ratios[high]:.2f} for {high} but {ratios[low]:.2f} for {low} (more than "
                f"{RATIO_SPREAD:g}x apart), so equal modelled budgets were not equal compute; "
                f"rerun on an idle machine or with --cost-model from a run where they agree")

    def to_dict(self) -> dict:
        return {"space": self.space.to_dict(), "cost_model": self.cost_model.to_dict(),
                "budget_runs": list(self.budget_runs), "settings": dict(self.settings),
                "summary": self.summary(), "wall_modelled": self.wall_ratios(),
                "price_warning": self.price_warning(),
                "runs": [r.to_dict() for r in self.runs]}


def pick_at(result: MethodResult, budget: float) -> Incumbent | None:
    """``result``'s incumbent after spending at most ``budget`` (None when it had none yet)."""
    paid = [i for i in result.incumbents if i.cost <= budget * (1 + 1e-12)]
    return paid[-1] if paid else None


def check_methods(methods: Sequence[str]) -> None:
    """ValueError unless ``methods`` are known names, each once (the message lists the known)."""
    if not methods:
        raise ValueError(f"give at least one method; known methods are {sorted(METHODS)}")
    for m in methods:
        get_method(m)
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods are repeated: {list(methods)}")


def check_seeds(seeds: Sequence[int]) -> None:
    """ValueError unless there is at least one seed and none is repeated."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give at least one seed, each once; got {list(seeds)}")


def check_budget_runs(budget_runs: Sequence[float]) -> tuple[float, ...]:
    """The budgets sorted; ValueError unless they are positive numbers of final-job runs."""
    if not budget_runs:
        raise ValueError("give at least one budget (in runs of the final job, e.g. 2 4 8 16)")
    bad = [n for n in budget_runs if isinstance(n, bool) or not isinstance(n, (int, float))
           or not math.isfinite(n) or n <= 0]
    if bad:
        raise ValueError(f"budget runs must be positive numbers of final-job runs (e.g. 2 4 8 "
                         f"16), got {bad}")
    return tuple(sorted(set(budget_runs)))


def check_minimums(problem: ClassificationProblem, space: SearchSpace, methods: Sequence[str],
                   budget_runs: Sequence[float], cost_model: CostModel,
                   options: Mapping[str, Mapping]) -> None:
    """Raise ValueError when the smallest budget cannot pay for some method's first piece of
    work (:func:`~fdshpo.baselines.minimum.minimum_budget`); the message names the minimum."""
    unit, smallest = space.final_steps, min(budget_runs)
    for m in methods:
        cost, what = minimum_budget(m, problem, space, cost_model, options.get(m))
        if smallest * unit < cost:
            raise ValueError(
                f"a budget of {smallest:g} final-job runs ({smallest * unit:.0f} plain-step "
                f"equivalents) cannot pay for one {what} of {m!r} ({cost:.0f}); the minimum is "
                f"{math.ceil(100 * cost / unit) / 100:g} runs: raise the budget runs, shorten "
                "schedule.horizon or leave the method out")


def method_options(methods: Sequence[str], initial: Mapping | None,
                   options: Mapping[str, Mapping] | None) -> dict[str, dict]:
    """Each method's keyword options: ``init=initial`` (the fair start) and its own ``options``."""
    options = options or {}
    return {m: {"init": dict(initial) if initial else None, **dict(options.get(m, {}))}
            for m in methods}


def calibrate_for(problem: ClassificationProblem, space: SearchSpace,
                  initial: Mapping | None = None) -> CostModel:
    """The cost model of ``problem``'s network on this machine, measured now."""
    return calibrate(problem, initial_schedule(space, initial))


def _score(problem: ClassificationProblem, schedule: Schedule, final_steps: int,
           cache: dict) -> tuple[float, float, bool, bool]:
    """(test accuracy, test loss, diverged, collapsed) of ``schedule`` retrained over the final
    horizon, once per schedule: a diverged retraining scores chance and an infinite loss; a
    collapsed one (finite loss, about chance: :func:`fdshpo.tune.retrain.is_collapsed`) its
    scores."""
    key = schedule.to_json()
    if key not in cache:
        try:
            ev = retrain_and_test(problem, schedule, final_steps)
            cache[key] = (ev.test_accuracy, ev.test_loss, False, ev.collapsed)
        except FloatingPointError:
            cache[key] = (1.0 / problem.dataset.num_classes, math.inf, True, False)
    return cache[key]


def search_record(result: MethodResult, budget_runs: float, cost_model: CostModel) -> dict:
    """What a search did, JSON-ready: its budget, spend, wall time, details and incumbent trace
    as (cost, seconds, validation loss) triples."""
    return {"budget_runs": budget_runs, "budget": result.budget, "cost": result.cost,
            "seconds": result.ledger.seconds, "wall_steps": result.ledger.wall_steps(cost_model),
            "ledger": result.ledger.to_dict(), "details": dict(result.details),
            "trace": [[i.cost, i.seconds, i.val_loss] for i in result.incumbents]}


def compare(
    problem: ClassificationProblem,
    space: SearchSpace,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    seeds: Sequence[int] = (0,),
    budget_runs: Sequence[float] = BUDGET_RUNS,
    initial: Mapping[str, object] | None = None,
    cost_model: CostModel | None = None,
    options: Mapping[str, Mapping] | None = None,
    done: Sequence[MethodRun] = (),
    on_run: Callable[[MethodRun], None] | None = None,
) -> Comparison:
    """Run ``methods`` on each seed at budgets of N final-job runs and score them (module
    docstring).

    Args:
        problem: dataset, network and batching; its seed is replaced by each of ``seeds``.
        space: search horizon, segments, bounds and the final horizon (``final_steps``).
        budget_runs: the budgets N, in runs of the final job.
        initial: the initial values every method starts from (default the lower bounds).
        cost_model: the price list; measured here when None (:func:`calibrate_for`).
        options: extra keyword arguments per method name (e.g. FDS's step sizes).
        done: (seed, method) runs finished earlier with the same settings (resume): kept as
            they are, and their retrained picks are not retrained again.
        on_run: called with each finished (seed, method) run (progress, journal).

    Raises ValueError, before any work, for unknown methods (listing the known ones), no seeds,
    budgets that are not positive, or a budget too small for a method (:func:`check_minimums`
    names the minimum).
    """
    check_methods(methods)
    check_seeds(seeds)
    budgets = check_budget_runs(budget_runs)
    opts = method_options(methods, initial, options)
    cost_model = cost_model or calibrate_for(replace(problem, seed=seeds[0]), space, initial)
    check_minimums(problem, space, methods, budgets, cost_model, opts)
    unit, finished = space.final_steps, {(r.seed, r.method): r for r in done}
    runs = []
    for seed in seeds:
        seeded = replace(problem, seed=seed)
        cache = {r.schedule.to_json(): (r.test_accuracy, r.test_loss, r.retrain_diverged,
                                        r.retrain_collapsed)
                 for run in done if run.seed == seed for r in run.rows}
        for m in methods:
            if (seed, m) in finished:
                runs.append(finished[(seed, m)])
                continue
            method = get_method(m)
            if m in BUDGET_AWARE:
                results = [(n, method(seeded, space, n * unit, cost_model, seed=seed, **opts[m]))
                           for n in budgets]
            else:
                result = method(seeded, space, budgets[-1] * unit, cost_model, seed=seed,
                                **opts[m])
                results = [(budgets[-1], result)]
            rows = []
            for n in budgets:
                result = next(r for b, r in results if b >= n)
                pick = pick_at(result, n * unit)
                if pick is None:
                    raise RuntimeError(f"{m} found nothing within {n:g} runs, above its minimum")
                acc, loss, diverged, collapsed = _score(seeded, pick.schedule, unit, cache)
                rows.append(Row(m, seed, n, n * unit, pick.cost, pick.seconds, pick.val_loss,
                                acc, loss, diverged, pick.schedule, collapsed))
            run = MethodRun(m, seed, tuple(rows),
                            tuple(search_record(r, b, cost_model) for b, r in results))
            runs.append(run)
            if on_run is not None:
                on_run(run)
    return Comparison(tuple(runs), space, cost_model, budgets,
                      settings(problem, space, budgets, initial, options, methods, seeds))


def settings(problem: ClassificationProblem, space: SearchSpace, budget_runs: Sequence[float],
             initial: Mapping | None, options: Mapping | None, methods: Sequence[str] = (),
             seeds: Sequence[int] = ()) -> dict:
    """What a comparison's results depend on, JSON-ready (also what a resumed run must match:
    everything but the methods and seeds)."""
    return {"methods": list(methods), "seeds": list(seeds),
            "budget_runs": list(budget_runs), "space": space.to_dict(),
            "initial": dict(initial or {}), "method_options": {
                m: dict(o) for m, o in (options or {}).items()},
            "network": problem.network, "init": problem.init, "dataset": problem.dataset.name,
            "batch_size": problem.batch_size, "val_fraction": problem.val_fraction,
            "val_batch_size": problem.val_batch_size, "augment": problem.augment,
            "resample": problem.resample, "device": str(problem.device)}


def predicted_seconds(space: SearchSpace, cost_model: CostModel, methods: Sequence[str],
                      seeds: Sequence[int], budget_runs: Sequence[float]) -> dict[str, float]:
    """Modelled wall seconds of a comparison: the searches (each method's budget, or the sum of
    its budgets when budget-aware) and at most one retrain per (seed, method, budget)."""
    unit_s = space.final_steps * cost_model.seconds_per_step
    per_seed = sum(sum(budget_runs) if m in BUDGET_AWARE else max(budget_runs) for m in methods)
    return {"search": len(seeds) * per_seed * unit_s,
            "retrain_at_most": len(seeds) * len(methods) * len(budget_runs) * unit_s}


__all__ = ["BUDGET_RUNS", "DEFAULT_METHODS", "Comparison", "MethodRun", "Row", "calibrate_for",
           "check_budget_runs", "check_methods", "check_minimums", "check_seeds", "compare",
           "method_options", "pick_at", "predicted_seconds", "settings"]

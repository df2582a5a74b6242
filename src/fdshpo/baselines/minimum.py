"""The smallest budget each method accepts: the price of its first indivisible piece of work.

    fds        one outer step: replicas x (an FDS inner run over T from the initial schedule
               with the engine it runs, + the validation gradient)
    greedy     one pass over its windows + the final walk (T plain steps)
    random, tpe, constant, step, cosine, linear, hd
               one trial: T plain steps + a validation pass
    hyperband  one full trial at the final horizon with its rung measurements

A comparison checks these before any work starts, so a budget too small for some method is
refused up front with the minimum named. Each method checks its budget again when it runs
(:func:`~fdshpo.baselines.space.affordable`); the contract tests hold the two prices together.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..tune.problem import ClassificationProblem
from ..tune.sign import SignOptimizer
from .budget import CostModel, Ledger
from .fds import fds_outer_work, initial_schedule
from .greedy import window_engines
from .hyperband import full_trial
from .search import trial_cost
from .space import SearchSpace, validation_examples


def minimum_budget(name: str, problem: ClassificationProblem, space: SearchSpace,
                   cost_model: CostModel, options: Mapping[str, object] | None = None
                   ) -> tuple[float, str]:
    """(plain-step equivalents, what they buy) of method ``name``'s smallest budget, given the
    keyword ``options`` it will be called with.

    Raises ValueError for an unknown method (listing the known ones).
    """
    from . import get_method

    get_method(name)
    options = dict(options or {})
    n_val = validation_examples(problem)
    if name in ("fds", "greedy"):
        learn = SignOptimizer(options.get("step_sizes")).learn
        engine = str(options.get("engine", "auto"))
        if name == "fds":
            work, _ = fds_outer_work(problem, initial_schedule(space, options.get("init")),
                                     learn, cost_model, engine, int(options.get("replicas", 1)))
            return work.cost(cost_model), "FDS outer step"
        _, runs = window_engines(problem.model(0), problem, space, learn, cost_model, engine)
        work = sum(runs, Ledger(plain_steps=space.num_steps))
        return work.cost(cost_model), "greedy pass over the windows (plus the final walk)"
    if name == "hyperband":
        keys = ("reduction_factor", "max_resource")
        trial = full_trial(space, n_val, **{k: options[k] for k in keys if k in options})
        return trial.cost(cost_model), "hyperband trial at the final horizon"
    return trial_cost(problem, space, cost_model), f"{name} trial"

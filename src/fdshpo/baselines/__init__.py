"""FDS and the methods it is compared with, all behind one contract.

Every entry of :data:`METHODS` is called as

    method(problem, space, budget, cost_model, seed=0, init=None, **options) -> MethodResult

searches the same :class:`SearchSpace` (horizon, segments, bounds, final horizon), starts from
the same initial schedule (``init``: initial values, default the lower bounds; black-box
searches enqueue it as their first trial), never spends more than ``budget`` plain-SGD-step
equivalents as priced by ``cost_model`` (:mod:`fdshpo.baselines.budget`), returns a schedule inside
the
bounds over the search horizon, and repeats itself exactly given the same arguments. Except for
the methods in :data:`BUDGET_AWARE`, a method's search does not depend on its budget except for
when it stops, so its incumbent after spending b of a larger budget is what it returns at b.

    fds       FDS, the method of this package (fds.py)
    greedy    greedy FDS, one window at a time (greedy.py)
    hd        online hypergradient descent on the learning rate, Baydin et al. 2018 (hd.py)
    random    random search (Optuna RandomSampler)            (search.py)
    tpe       TPE (Optuna TPESampler)                          (search.py)
    hyperband TPE + Hyperband pruning at the final horizon: multi-fidelity, the BOHB analogue
              (hyperband.py)
    constant, step, cosine, linear
              fixed learning-rate shapes with peak lr, momentum and weight decay tuned by TPE
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ..shapes import SHAPES, fit_segments, shape_values
from .fds import fds_method
from .greedy import greedy_fds
from .hd import hd_search
from .hyperband import hyperband_search
from .search import random_search, shape_search, tpe_search
from .space import DIVERGED_LOSS, Incumbent, MethodResult, SearchSpace, evaluate_schedule

Method = Callable[..., MethodResult]

METHODS: dict[str, Method] = {
    "fds": fds_method,
    "greedy": greedy_fds,
    "hd": hd_search,
    "random": random_search,
    "tpe": tpe_search,
    **{shape: partial(shape_search, shape) for shape in SHAPES},
    "hyperband": hyperband_search,
}

#: Methods whose search itself depends on the budget (greedy FDS spreads its passes over it), so
#: a budget's result cannot be read from a larger budget's run.
BUDGET_AWARE: frozenset[str] = frozenset({"greedy"})


def get_method(name: str) -> Method:
    """The method called ``name``, or a ValueError listing the known names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods are {sorted(METHODS)}"
                         ) from None


__all__ = [
    "BUDGET_AWARE", "DIVERGED_LOSS", "METHODS", "SHAPES", "Incumbent", "Method", "MethodResult",
    "SearchSpace",
    "evaluate_schedule", "fds_method", "fit_segments", "get_method", "greedy_fds", "hd_search",
    "hyperband_search", "random_search", "shape_search", "shape_values", "tpe_search",
]

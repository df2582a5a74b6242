"""fdshpo: exact forward-mode hypergradients (FDS) for SGD-momentum hyperparameter schedules."""

from ._version import __version__
from .forward import ForwardEngine, ForwardState, HypergradientResult, hypergradient
from .inner import InnerRunDiverged
from .outer import DEFAULT_STEP_SIZES, SignOptimizer, SignState
from .schedule import DEFAULT_BOUNDS, HYPERPARAMETERS, Schedule

__all__ = [
    "DEFAULT_BOUNDS", "DEFAULT_STEP_SIZES", "HYPERPARAMETERS", "ForwardEngine", "ForwardState",
    "HypergradientResult", "InnerRunDiverged", "Schedule", "SignOptimizer", "SignState",
    "__version__", "hypergradient",
]

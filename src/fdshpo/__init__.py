"""fdshpo: exact hypergradients (FDS) for SGD-momentum hyperparameter schedules.

The public names below are imported on first use (PEP 562), so ``import fdshpo.cli`` and the
commands that only read the store start without importing torch. Importing the package asks MKL
for its strict reproducibility mode (:mod:`fdshpo.reproducible`) unless ``MKL_CBWR`` is set.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .reproducible import request_strict_mkl

# Before torch's first MKL call (fdshpo.reproducible): alignment-independent float results.
request_strict_mkl()

_PUBLIC = {
    "EngineChoice": "engine", "hypergradient": "engine", "EnginePrices": "prices",
    "ForwardEngine": "forward", "ForwardState": "forward", "HypergradientResult": "result",
    "InnerRunDiverged": "inner", "ReverseEngine": "reverse", "ReverseState": "reverse",
    "validation_loss": "objective",
    "DEFAULT_STEP_SIZES": "outer", "SignOptimizer": "outer", "SignState": "outer",
    "DEFAULT_BOUNDS": "schedule", "HYPERPARAMETERS": "schedule", "Schedule": "schedule",
}

__all__ = [
    "DEFAULT_BOUNDS", "DEFAULT_STEP_SIZES", "HYPERPARAMETERS", "EngineChoice", "EnginePrices",
    "ForwardEngine", "ForwardState", "HypergradientResult", "InnerRunDiverged", "ReverseEngine",
    "ReverseState", "Schedule", "SignOptimizer", "SignState", "__version__", "hypergradient",
    "validation_loss",
]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fdshpo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))

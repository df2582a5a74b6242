"""fdshpo: exact forward-mode hypergradients (FDS) for SGD-momentum hyperparameter schedules.

The public names below are imported on first use (PEP 562), so ``import fdshpo.cli`` and the
commands that only read the store start without importing torch.
"""

from __future__ import annotations

import importlib

from ._version import __version__

_PUBLIC = {
    "ForwardEngine": "forward", "ForwardState": "forward", "HypergradientResult": "forward",
    "InnerRunDiverged": "inner", "hypergradient": "forward",
    "DEFAULT_STEP_SIZES": "outer", "SignOptimizer": "outer", "SignState": "outer",
    "DEFAULT_BOUNDS": "schedule", "HYPERPARAMETERS": "schedule", "Schedule": "schedule",
}

__all__ = [
    "DEFAULT_BOUNDS", "DEFAULT_STEP_SIZES", "HYPERPARAMETERS", "ForwardEngine", "ForwardState",
    "HypergradientResult", "InnerRunDiverged", "Schedule", "SignOptimizer", "SignState",
    "__version__", "hypergradient",
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

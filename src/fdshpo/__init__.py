"""fdshpo: exact hypergradients (FDS) for SGD-momentum hyperparameter schedules.

The public names below are imported on first use (PEP 562), so ``import fdshpo.cli`` and the
commands that only read the store start without importing torch. Importing the package asks MKL
for its strict reproducibility mode (:mod:`fdshpo.reproducible`) unless ``MKL_CBWR`` is set.

The layers, each a subpackage that imports only from its own layer or below:
``schedule``/``segments``/``shapes``/``seeds``/``reproducible`` (shared vocabulary) <
``engines`` (the exact hypergradient) < ``tune`` (the outer loop) < ``baselines`` <
``compare``; ``store`` < ``report`` < ``tracking``; ``config`` reads every registry;
``commands``/``cli``, ``components`` and ``pipelines`` are the thin adapters on top.
"""

from __future__ import annotations

from ._lazy import lazy_exports
from ._version import __version__
from .reproducible import request_strict_mkl

# Before torch's first MKL call (fdshpo.reproducible): alignment-independent float results.
request_strict_mkl()

_PUBLIC = {
    "EngineChoice": "engines.base", "hypergradient": "engines.choose",
    "EnginePrices": "engines.base", "ForwardEngine": "engines.forward",
    "ForwardState": "engines.forward", "HypergradientResult": "engines.base",
    "InnerRunDiverged": "engines.base", "ReverseEngine": "engines.reverse",
    "ReverseState": "engines.reverse", "validation_loss": "engines.objective",
    "DEFAULT_STEP_SIZES": "tune.sign", "SignOptimizer": "tune.sign", "SignState": "tune.sign",
    "DEFAULT_BOUNDS": "schedule", "HYPERPARAMETERS": "schedule", "Schedule": "schedule",
}

__all__ = [
    "DEFAULT_BOUNDS", "DEFAULT_STEP_SIZES", "HYPERPARAMETERS", "EngineChoice", "EnginePrices",
    "ForwardEngine", "ForwardState", "HypergradientResult", "InnerRunDiverged", "ReverseEngine",
    "ReverseState", "Schedule", "SignOptimizer", "SignState", "__version__", "hypergradient",
    "validation_loss",
]

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

"""The exact hypergradient of the validation loss w.r.t. a schedule's learned values.

    base        shared types (results, EngineChoice, EnginePrices, option checks); a leaf
    flat        the parameters as one flat vector
    objective   the training and validation losses as functions of it
    inner       one SGD-momentum step, and plain training (torch.optim.SGD's trajectory)
    replay      reading the training batches again
    shards      data-parallel runs: each rank a shard of every batch, reductions and decisions
    forward     forward mode: tangents Z = d theta / d lambda carried along training
    reverse     checkpointed reverse mode: adjoints swept backwards
    prices      what each engine's work costs, measured
    choose      hypergradient(engine="forward" | "reverse" | "auto")

Knows nothing of KFP, stores, files or the CLI.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "hypergradient": "choose", "prepare_engine": "choose", "EngineChoice": "base",
    "EnginePrices": "base", "HypergradientResult": "base", "InnerRunDiverged": "base",
    "TangentColumns": "base", "ForwardEngine": "forward", "ForwardState": "forward",
    "ReverseEngine": "reverse", "ReverseState": "reverse", "validation_loss": "objective",
    "RankFailed": "shards",
})

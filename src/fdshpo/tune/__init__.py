"""The outer loop: sign steps on a schedule, each from the hypergradients of inner runs.

    sign      SignOptimizer: the sign-based (Rprop-like) outer update
    state     TuneState and OuterStepRecord: where a tuning run stands, what each step did
    step      OuterStep: replicas' inner runs, their mean hypergradient, one sign step
    loop      tune(): outer steps until converged or out of budget
    problem   ClassificationProblem: the inner runs' tasks for a dataset and network
    retrain   retrain from scratch with a schedule and test
    console   ConsoleProgress: the progress bar and a line per outer step

``fdshpo.tune.tune`` and the other public names of :mod:`fdshpo.tune.loop` are imported on
first use.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "tune": "loop", "TuneResult": "loop", "InnerProgress": "loop", "OuterProgress": "loop",
    "Progress": "loop", "InnerTask": "state", "OuterStep": "step", "SignOptimizer": "sign",
    "TuneState": "state", "ClassificationProblem": "problem",
    "retrain_and_test": "retrain", "retrain_and_evaluate": "retrain",
    "ConsoleProgress": "console",
})

"""Outer update: combine the replicas' hypergradients, take one sign step, decide whether to stop.

Calls :func:`fdshpo.tune.apply_outer_update` (mean over replicas, ordered by replica index as
``fdshpo.tune.tune`` does, then the sign step). ``converged`` is ``"yes"`` when the sign
optimizer has converged or the outer-step budget is spent, which ends the chain of pipeline
levels. The new state is written to the store as the outer step's checkpoint and record
(:meth:`fdshpo.tracking.RunRecorder.on_outer_step`).
"""

from typing import List, NamedTuple  # noqa: UP035 (KFP parses typing.List)

from kfp.dsl import Artifact, Input


def outer_step(config, run_id: str, state_json: str, records: list) -> tuple[str, bool, dict]:
    """(new TuneState as JSON, stop?, the outer step's record) from the replicas' records."""
    import json

    import torch

    from fdshpo.components.common import recorder
    from fdshpo.forward import HypergradientResult
    from fdshpo.tune import TuneState, apply_outer_update

    state = TuneState.from_dict(json.loads(state_json))
    step = state.next_outer_step
    records = sorted(records, key=lambda r: int(r["replica"]))
    wrong = [r["outer_step"] for r in records if int(r["outer_step"]) != step]
    if wrong or not records:
        raise ValueError(f"outer step {step} got hypergradients of outer step(s) {wrong}")
    results = [HypergradientResult(float(r["val_loss"]),
                                   {n: torch.tensor(g, dtype=torch.float64)
                                    for n, g in r["grads"].items()},
                                   torch.empty(0), {}) for r in records]
    seconds = max(float(r["seconds"]) for r in records)
    new = apply_outer_update(config.optimizer(), state, results, seconds)
    stop = new.converged or new.next_outer_step >= config.outer.max_steps
    recorder(config, run_id).on_outer_step(new)
    return json.dumps(new.to_dict()), stop, new.history[-1].to_dict()


def outer_component(config_json: str, run_id: str, state: str,
                    hypergradients: Input[List[Artifact]]  # noqa: UP006
                    ) -> NamedTuple("OuterOutputs", [("state", str), ("converged", str)]):
    """KFP: one sign step over the Collected replica hypergradients."""
    import json
    from collections import namedtuple

    from fdshpo.components.common import config_from_json
    from fdshpo.components.outer import outer_step

    records = []
    for artifact in hypergradients:
        with open(artifact.path) as f:
            records.append(json.load(f))
    new_state, stop, record = outer_step(config_from_json(config_json), run_id, state, records)
    print(f"outer step {record['outer_step'] + 1}: val loss {record['val_loss']:.4f}"
          + (", converged" if record["converged"] else "") + (", stopping" if stop else ""))
    return namedtuple("OuterOutputs", ["state", "converged"])(new_state,
                                                              "yes" if stop else "no")


def carry_component(state: str) -> str:
    """KFP: the early-stop branch's pass-through of the final state (dsl.OneOf needs a task)."""
    return state

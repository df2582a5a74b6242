"""Outer update: combine the replicas' hypergradients, take one sign step, decide whether to stop.

Calls :meth:`fdshpo.tune.step.OuterStep.apply` on the collected
:class:`~fdshpo.tune.step.ReplicaResult` records (the second half of the outer step every
runner takes: the mean over replicas, or the divergence policy, then the sign step).
``converged`` is ``"yes"`` when the sign optimizer has converged or the outer-step budget is
spent, which ends the chain of pipeline levels. The new state is written to the store as the
outer step's checkpoint and record (:meth:`fdshpo.tracking.recorder.RunRecorder.on_outer_step`),
holding the run's lease as its job (``owner``).
"""

from typing import List, NamedTuple  # noqa: UP035 (KFP parses typing.List)

from kfp.dsl import Artifact, Input


def outer_step(config, run_id: str, state_json: str, records: list, owner: str
               ) -> tuple[str, bool, dict]:
    """(new TuneState as JSON, stop?, the outer step's record) from the replicas' records."""
    import json

    from fdshpo.components.common import held_recorder
    from fdshpo.tune.state import TuneState
    from fdshpo.tune.step import ReplicaResult

    state = TuneState.from_dict(json.loads(state_json))
    new = config.outer_step().apply(state, [ReplicaResult.from_dict(r) for r in records])
    stop = new.converged or new.next_outer_step >= config.outer.max_steps
    held_recorder(config, run_id, owner).on_outer_step(new)
    return json.dumps(new.to_dict()), stop, new.history[-1].to_dict()


def outer_component(config_json: str, run_id: str, job_id: str, state: str,
                    hypergradients: Input[List[Artifact]]  # noqa: UP006
                    ) -> NamedTuple("OuterOutputs", [("state", str), ("converged", str)]):
    """KFP: one sign step over the Collected replica hypergradients."""
    import json
    from collections import namedtuple

    from fdshpo.components.common import config_from_json, job_owner
    from fdshpo.components.outer import outer_step
    from fdshpo.tune.console import outer_step_line
    from fdshpo.tune.state import OuterStepRecord

    records = []
    for artifact in hypergradients:
        with open(artifact.path) as f:
            records.append(json.load(f))
    config = config_from_json(config_json)
    new_state, stop, record = outer_step(config, run_id, state, records, job_owner(job_id))
    print(outer_step_line(OuterStepRecord.from_dict(record), config.outer.max_steps)
          + (", stopping" if stop else ""))
    return namedtuple("OuterOutputs", ["state", "converged"])(new_state,
                                                              "yes" if stop else "no")


def carry_component(state: str) -> str:
    """KFP: the early-stop branch's pass-through of the final state (dsl.OneOf needs a task)."""
    return state

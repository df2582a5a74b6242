"""Inner training of one replica: FDS tangent propagation over the horizon -> hypergradients.

Calls :func:`fdshpo.tune.run_replica` with the schedule of the current outer step, so replica
``r`` of outer step ``s`` sees exactly the data order and initialisation ``fdshpo.tune.tune``
gives it. The run's :class:`~fdshpo.checkpoint.InnerCheckpointer` saves the inner state to
the store every ``checkpoint_every`` steps: a retried or rerun component resumes from the
newest checkpoint (and a replica whose result is already stored returns it without training).
The result (validation
loss and per-segment hypergradients, float64) also goes to the ``hypergradients`` artifact.
"""

from kfp.dsl import Artifact, Dataset, Input, Output


def inner_step(config, run_id: str, state_json: str, replica: int, dataset_path: str) -> dict:
    """One replica's ``{outer_step, replica, val_loss, grads, seconds, device}``."""
    import json
    import time

    from torch import nn

    from fdshpo.components.common import problem_for, read_dataset, recorder
    from fdshpo.tune import TuneState, run_replica

    state = TuneState.from_dict(json.loads(state_json))
    step, replica = state.next_outer_step, int(float(replica))
    rec = recorder(config, run_id)
    problem = problem_for(config, read_dataset(dataset_path))
    started = time.perf_counter()
    result = run_replica(problem, state.schedule, config.learn, step, replica,
                         nn.functional.cross_entropy, checkpointer=rec.inner)
    return {"outer_step": step, "replica": replica, "val_loss": float(result.val_loss),
            "grads": {n: g.tolist() for n, g in result.grads.items()},
            "seconds": time.perf_counter() - started, "device": problem.device,
            "resumed": [list(r) for r in rec.inner.resumed]}


def inner_component(config_json: str, run_id: str, state: str, replica: str,
                    dataset: Input[Dataset], hypergradients: Output[Artifact]):
    """KFP: one replica's hypergradients for the current schedule (GPU when configured).

    ``replica`` is the replica index as a string: numbers inside list parameters come back
    from KFP as floats, and a float is refused by an integer input."""
    import json

    from fdshpo.components.common import config_from_json
    from fdshpo.components.inner import inner_step

    record = inner_step(config_from_json(config_json), run_id, state, replica, dataset.path)
    with open(hypergradients.path, "w") as f:
        json.dump(record, f)
    hypergradients.metadata.update({k: record[k] for k in ("outer_step", "replica", "val_loss",
                                                           "seconds", "device")})
    hypergradients.metadata["run_id"] = run_id

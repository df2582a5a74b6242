"""Inner training of one replica: an exact engine over the horizon -> hypergradients.

Calls :meth:`fdshpo.tune.step.OuterStep.run_replica` (the first half of the outer step every
runner takes) with the schedule of the current outer step, so replica ``r`` of outer step ``s``
sees exactly the data order and initialisation ``fdshpo.tune.loop.tune`` gives it. The run's
:class:`~fdshpo.tracking.checkpoint.InnerCheckpointer` saves the inner state to the store every
``checkpoint_every`` steps: a retried or rerun component resumes from the newest checkpoint
(and a replica whose result is already stored returns it without training). An inner run that
diverges is a result, not a failure (nothing to retry): the outer step applies the policy.
The :class:`~fdshpo.tune.step.ReplicaResult` goes to the ``hypergradients`` artifact as JSON,
with the engine that computed it and why (``config.engine``, default auto); the artifact's
metadata names the engine. The step holds the run's lease as its job (``owner``) while it
trains: its checkpoints and result are refused if another job took the run over. With
``resources.procs_per_node`` > 1 the inner run is data-parallel: its ranks run in torchrun
processes (:mod:`fdshpo.components.ranks`), checkpointed the same way by rank 0, which writes
under the step's lease (the same ``owner``), and the record says ``distributed``.
"""

from kfp.dsl import Artifact, Dataset, Input, Output


def inner_step(config, run_id: str, state_json: str, replica: int, dataset_path: str,
               owner: str) -> dict:
    """One replica's :class:`~fdshpo.tune.step.ReplicaResult` as a dict, plus ``device`` and
    ``resumed`` (where inner checkpoints were resumed from)."""
    import json

    from fdshpo.components.common import held_recorder, problem_for, read_dataset
    from fdshpo.tune.state import TuneState

    rec = held_recorder(config, run_id, owner)
    if config.resources.world_size > 1:
        from fdshpo.components.ranks import run_local

        return run_local(config, state_json, int(float(replica)), dataset_path,
                         run_id=run_id, owner=owner)
    state = TuneState.from_dict(json.loads(state_json))
    problem = problem_for(config, read_dataset(dataset_path))
    result = config.outer_step().run_replica(problem, state, int(float(replica)),
                                             checkpointer=rec.inner)
    return {**result.to_dict(), "device": problem.device,
            "resumed": [list(r) for r in rec.inner.resumed]}


def inner_component(config_json: str, run_id: str, job_id: str, state: str, replica: str,
                    dataset: Input[Dataset], hypergradients: Output[Artifact]):
    """KFP: one replica's hypergradients for the current schedule (GPU when configured).

    ``replica`` is the replica index as a string: numbers inside list parameters come back
    from KFP as floats, and a float is refused by an integer input."""
    from fdshpo.components.common import config_from_json, job_owner
    from fdshpo.components.inner import inner_step, write_record

    record = inner_step(config_from_json(config_json), run_id, state, replica, dataset.path,
                        job_owner(job_id))
    write_record(record, hypergradients, run_id)


def launcher_component(config_json: str, run_id: str, job_id: str, state: str, replica: str,
                       dataset: Input[Dataset], hypergradients: Output[Artifact]):
    """KFP: one replica's hypergradients from a Kubeflow Trainer TrainJob of
    ``resources.nodes`` x ``procs_per_node`` ranks (:mod:`fdshpo.components.trainjob`); the task
    itself holds no GPU, it waits. ``dataset`` is unused (the ranks load the config's dataset)
    and keeps the ``inner`` component's signature, so the pipeline swaps one for the other."""
    from fdshpo.components.common import config_from_json, job_owner
    from fdshpo.components.inner import write_record
    from fdshpo.components.trainjob import launch_step

    record = launch_step(config_from_json(config_json), run_id, state, int(float(replica)),
                         job_owner(job_id))
    write_record(record, hypergradients, run_id)


def write_record(record: dict, hypergradients, run_id: str) -> None:
    """The replica's record into the ``hypergradients`` artifact, its summary in the metadata."""
    import json

    with open(hypergradients.path, "w") as f:
        json.dump(record, f)
    hypergradients.metadata.update({k: record[k] for k in ("outer_step", "replica", "seconds",
                                                           "device")})
    diverged = record["diverged"] is not None  # metadata is JSON: no infinite loss in it
    hypergradients.metadata.update({"run_id": run_id, "diverged": diverged,
                                    "distributed": record.get("distributed"),
                                    "val_loss": None if diverged else record["val_loss"],
                                    "engine": (record["engine"] or {}).get("engine")})

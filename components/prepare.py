"""Prepare: load the dataset once, record the run's config, build the initial state.

The dataset goes downstream as one KFP ``Dataset`` artifact (a ``torch.save`` of its tensors);
the initial :class:`~fdshpo.tune.state.TuneState` as a JSON parameter. With ``outer.warm_start`` the
initial schedule is the experiment's latest learned schedule in the store
(:func:`fdshpo.tracking.recorder.latest_finished`, stretched to the configured horizon and clipped
to the
configured bounds), and that run is recorded as the new run's ``parent``; without one yet (or
with other segment counts), the configured values. The step takes the run's lease as
``kfp-job:<job id>`` (:mod:`fdshpo.store.lease`; every later step of the job holds it too), so
a second job with the same run id is refused.
"""

from typing import NamedTuple

from kfp.dsl import Dataset, Output


def warm_start_schedule(config, store):
    """(the run id, its learned schedule adapted to ``config``) of the experiment's latest
    complete run, or None."""
    import torch

    from fdshpo.schedule import HYPERPARAMETERS, Schedule
    from fdshpo.tracking.recorder import latest_finished

    latest = latest_finished(store, config.experiment)
    initial = config.initial_schedule()
    if latest is None or latest[1].segments != initial.segments:
        return None
    values = {n: torch.clamp(latest[1].values[n], *initial.bounds[n]) for n in HYPERPARAMETERS}
    return latest[0], Schedule(initial.num_steps, values, initial.bounds)


def prepare_step(config, run_id: str, dataset_path: str, owner: str | None = None
                 ) -> tuple[str, dict]:
    """Record the config, write the dataset to ``dataset_path``; returns (initial TuneState as
    JSON, provenance metadata for the dataset artifact). A rerun with the same run id resumes
    from the run's newest outer checkpoint. ``owner`` labels the run's lease."""
    import json

    from fdshpo.components.common import (
        load_dataset,
        problem_for,
        recorded_config,
        recorder,
        save_dataset,
    )
    from fdshpo.tune.state import TuneState

    rec = recorder(config, run_id, owner)
    dataset = load_dataset(config)
    problem_for(config, dataset)(0, 0, 1)  # fails early when the split or network do not fit
    save_dataset(dataset, dataset_path)
    latest = warm_start_schedule(config, rec.store) if config.outer.warm_start else None
    resume = rec.start(recorded_config(config), parent=latest[0] if latest else None)
    warm = False
    if resume is None:
        warm = latest is not None
        schedule = latest[1] if latest else config.initial_schedule()
        resume = TuneState(schedule, config.optimizer().init(schedule))
    metadata = {"dataset": dataset.name, "train_examples": len(dataset.train_images),
                "test_examples": len(dataset.test_images), "num_classes": dataset.num_classes,
                "input_shape": list(dataset.input_shape), "run_id": run_id,
                "store": rec.store.uri, "warm_start": warm,
                "resumed_at_outer_step": resume.next_outer_step}
    return json.dumps(resume.to_dict()), metadata


def prepare_component(config_json: str, run_id: str, job_id: str, compiled_graph: str,
                      replicas: list, dataset: Output[Dataset]
                      ) -> NamedTuple("PrepareOutputs", [("run_id", str), ("state", str)]):
    """KFP: prepare data and the initial state (run_id "": a new id; job_id keeps a new job
    from ever being served this step from the cache). ``compiled_graph`` is the compiled
    graph's settings (a constant): a ``config_json`` or ``replicas`` that disagrees is refused
    before anything runs."""
    from collections import namedtuple

    from fdshpo.components.common import check_graph, config_from_json, job_owner
    from fdshpo.components.prepare import prepare_step
    from fdshpo.tracking.recorder import new_run_id

    config = config_from_json(config_json)
    check_graph(config, compiled_graph, replicas)
    run_id = run_id or new_run_id()
    state, metadata = prepare_step(config, run_id, dataset.path, owner=job_owner(job_id))
    dataset.metadata.update(metadata)
    dataset.metadata["job_id"] = job_id
    return namedtuple("PrepareOutputs", ["run_id", "state"])(run_id, state)

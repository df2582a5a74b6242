"""Prepare: load the dataset once, record the run's config, build the initial state.

The dataset goes downstream as one KFP ``Dataset`` artifact (a ``torch.save`` of its tensors);
the initial :class:`~fdshpo.tune_state.TuneState` as a JSON parameter. With ``outer.warm_start`` the
initial schedule is the experiment's latest learned schedule in the store
(:func:`fdshpo.tracking.latest_schedule`, stretched to the configured horizon and clipped to the
configured bounds); without one yet (or with other segment counts), the configured values.
"""

from typing import NamedTuple

from kfp.dsl import Dataset, Output


def warm_start_schedule(config, store):
    """The experiment's latest learned schedule adapted to ``config``, or None."""
    import torch

    from fdshpo.schedule import HYPERPARAMETERS, Schedule
    from fdshpo.tracking import latest_schedule

    previous = latest_schedule(store, config.experiment)
    initial = config.initial_schedule()
    if previous is None or previous.segments != initial.segments:
        return None
    values = {n: torch.clamp(previous.values[n], *initial.bounds[n]) for n in HYPERPARAMETERS}
    return Schedule(initial.num_steps, values, initial.bounds)


def prepare_step(config, run_id: str, dataset_path: str) -> tuple[str, dict]:
    """Record the config, write the dataset to ``dataset_path``; returns (initial TuneState as
    JSON, provenance metadata for the dataset artifact). A rerun with the same run id resumes
    from the run's newest outer checkpoint."""
    import json

    from fdshpo.components.common import (
        load_dataset,
        problem_for,
        recorded_config,
        recorder,
        save_dataset,
    )
    from fdshpo.tune_state import TuneState

    rec = recorder(config, run_id)
    dataset = load_dataset(config)
    problem_for(config, dataset)(0, 0, 1)  # fails early when the split or network do not fit
    save_dataset(dataset, dataset_path)
    resume = rec.start(recorded_config(config))
    warm = False
    if resume is None:
        schedule = warm_start_schedule(config, rec.store) if config.outer.warm_start else None
        warm = schedule is not None
        schedule = schedule or config.initial_schedule()
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

    from fdshpo.components.common import check_graph, config_from_json
    from fdshpo.components.prepare import prepare_step
    from fdshpo.tracking import new_run_id

    config = config_from_json(config_json)
    check_graph(config, compiled_graph, replicas)
    run_id = run_id or new_run_id()
    state, metadata = prepare_step(config, run_id, dataset.path)
    dataset.metadata.update(metadata)
    dataset.metadata["job_id"] = job_id
    return namedtuple("PrepareOutputs", ["run_id", "state"])(run_id, state)

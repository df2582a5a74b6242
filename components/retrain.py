"""Retrain from scratch with the learned schedule (and, for comparison, the initial one) and
score both on the test set with :func:`fdshpo.tune.retrain.retrain_and_evaluate`.

The learned schedule is the one the config's ``outer.select`` rule picks from the outer steps
(:func:`fdshpo.tune.step.select_schedule`). A retraining that diverges is a result, not a
failure: the evaluation says where (step and values), the run is recorded as such, and
``fdshpo run`` exits non-zero; there is nothing for KFP to retry. ``retrain.on_diverged:
halve_lr`` retrains once more with halved learning rates and records it. It writes nothing to
the store, but holds (and renews) the run's lease as its job (``owner``) while it retrains, so
the job keeps the run from prepare to report.
"""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output


def retrain_step(config, state_json: str, dataset_path: str, run_id: str | None = None,
                 owner: str | None = None) -> dict:
    """``{learned: Evaluation dict, initial: Evaluation dict, schedule, outer_steps,
    converged}``; the initial schedule is the one outer step 1 used. With ``run_id`` and
    ``owner``, the run's lease is held meanwhile."""
    import json

    from fdshpo.components.common import held_recorder, problem_for, read_dataset
    from fdshpo.schedule import Schedule
    from fdshpo.tune.retrain import retrain_and_evaluate
    from fdshpo.tune.state import TuneState
    from fdshpo.tune.step import select_schedule

    # kept while retraining: its heartbeat renews the lease
    holder = held_recorder(config, run_id, owner) if run_id and owner else None  # noqa: F841
    state = TuneState.from_dict(json.loads(state_json))
    initial = (Schedule.from_dict(state.history[0].schedule) if state.history
               else state.schedule)
    schedule = select_schedule(state, config.outer.select)
    problem = problem_for(config, read_dataset(dataset_path))
    r = config.retrain
    learned = retrain_and_evaluate(problem, schedule, r.horizon, r.seed, r.on_diverged)
    baseline = retrain_and_evaluate(problem, initial, r.horizon, r.seed, r.on_diverged)
    return {"learned": learned.to_dict(), "initial": baseline.to_dict(),
            "schedule": schedule.to_dict(), "outer_steps": state.next_outer_step,
            "converged": state.converged}


def retrain_component(config_json: str, run_id: str, job_id: str, state: str,
                      dataset: Input[Dataset],
                      evaluation: Output[Artifact], metrics: Output[Metrics]) -> float:
    """KFP: retrain + test; returns the learned schedule's test accuracy (-1 if it diverged)."""
    import json

    from fdshpo.components.common import config_from_json, job_owner
    from fdshpo.components.retrain import retrain_step

    result = retrain_step(config_from_json(config_json), state, dataset.path, run_id,
                          job_owner(job_id))
    with open(evaluation.path, "w") as f:
        json.dump(result, f)
    evaluation.metadata.update({"run_id": run_id, "outer_steps": result["outer_steps"]})
    for which in ("learned", "initial"):
        for score in ("test_accuracy", "test_loss"):
            if result[which][score] is not None:  # None: that retraining diverged
                metrics.log_metric(f"{which}_{score}", result[which][score])
    diverged = result["learned"]["diverged"] is not None
    evaluation.metadata["retrain_diverged"] = diverged
    return -1.0 if diverged else float(result["learned"]["test_accuracy"])

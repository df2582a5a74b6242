"""Retrain from scratch with the learned schedule (and, for comparison, the initial one) and
score both on the test set with :func:`fdshpo.evaluate.retrain_and_test`.
"""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output


def retrain_step(config, state_json: str, dataset_path: str) -> dict:
    """``{learned: Evaluation dict, initial: Evaluation dict, outer_steps, converged}``; the
    initial schedule is the one outer step 1 used."""
    import json

    from fdshpo.components.common import problem_for, read_dataset
    from fdshpo.evaluate import retrain_and_test
    from fdshpo.schedule import Schedule
    from fdshpo.tune import TuneState

    state = TuneState.from_dict(json.loads(state_json))
    initial = (Schedule.from_dict(state.history[0].schedule) if state.history
               else state.schedule)
    problem = problem_for(config, read_dataset(dataset_path))
    horizon, seed = config.retrain.horizon, config.retrain.seed
    learned = retrain_and_test(problem, state.schedule, horizon, seed)
    baseline = retrain_and_test(problem, initial, horizon, seed)
    return {"learned": learned.to_dict(), "initial": baseline.to_dict(),
            "outer_steps": state.next_outer_step, "converged": state.converged}


def retrain_component(config_json: str, run_id: str, state: str, dataset: Input[Dataset],
                      evaluation: Output[Artifact], metrics: Output[Metrics]) -> float:
    """KFP: retrain + test; returns the learned schedule's test accuracy."""
    import json

    from fdshpo.components.common import config_from_json
    from fdshpo.components.retrain import retrain_step

    result = retrain_step(config_from_json(config_json), state, dataset.path)
    with open(evaluation.path, "w") as f:
        json.dump(result, f)
    evaluation.metadata.update({"run_id": run_id, "outer_steps": result["outer_steps"]})
    for which in ("learned", "initial"):
        metrics.log_metric(f"{which}_test_accuracy", result[which]["test_accuracy"])
        metrics.log_metric(f"{which}_test_loss", result[which]["test_loss"])
    return float(result["learned"]["test_accuracy"])

"""What every component shares: the run's recorder (store + layout), the problem and dataset.

Runs are recorded with :class:`fdshpo.tracking.recorder.RunRecorder` in the layout of
:mod:`fdshpo.store.layout` (``experiments/<experiment>/runs/<run_id>/...``), so a pipeline run
is listed, shown, compared and warm-started from exactly like a library ``tune`` run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fdshpo.config.experiment import ExperimentConfig
from fdshpo.config.runtime import device_for, set_threads
from fdshpo.data.sample import TensorDataset


def config_from_json(config_json: str) -> ExperimentConfig:
    return ExperimentConfig.from_dict(json.loads(config_json))


def graph_settings(config: ExperimentConfig) -> dict:
    """The config keys compiled into the pipeline's graph: the unrolled levels
    (``outer.max_steps``), the replica list's default (``outer.replicas``) and every task's
    resources. A run-time ``config_json`` must agree with the compiled graph on each."""
    settings = {"outer.max_steps": config.outer.max_steps,
                "outer.replicas": config.outer.replicas}
    settings.update({f"resources.{k}": v for k, v in config.to_dict()["resources"].items()})
    return json.loads(json.dumps(settings, sort_keys=True))


def check_graph(config: ExperimentConfig, compiled_json: str, replicas: list) -> None:
    """Refuse a run whose ``config_json`` or ``replicas`` parameter differs from what the
    pipeline was compiled for (it would run with the compiled shape, silently).

    Raises:
        UserError: naming each differing key, compiled and given values.
    """
    from fdshpo.errors import UserError

    compiled, given = json.loads(compiled_json), graph_settings(config)
    problems = [f"{key} (compiled {compiled[key]!r}, given {given.get(key)!r})"
                for key in sorted(compiled) if compiled[key] != given.get(key)]
    expected = [str(r) for r in range(config.outer.replicas)]
    if [str(r).removesuffix(".0") for r in replicas] != expected:
        problems.append(f"the replicas parameter (given {list(replicas)!r}, outer.replicas "
                        f"{config.outer.replicas} needs {expected!r})")
    if problems:
        raise UserError(
            "this run's parameters do not match the compiled pipeline: " + "; ".join(problems)
            + ". These settings shape the compiled graph (its levels, replicas and task "
            "resources): compile or submit the pipeline from the config you want to run "
            "(fdshpo compile/submit/schedule) instead of overriding config_json or replicas")


def recorded_config(config: ExperimentConfig) -> dict:
    """The config as recorded in the store: the credentials Secret's *name* is a deployment
    detail (and the tracker refuses keys that look like credentials), so it is left out."""
    data = config.to_dict()
    data["resources"] = {k: v for k, v in data["resources"].items()
                         if k != "credentials_secret"}
    return data


def open_run_store(config: ExperimentConfig):
    """The :class:`~fdshpo.store.ArtifactStore` named by ``config.store``."""
    from fdshpo.store import open_store

    return open_store(config.store.uri, s3_endpoint=config.store.endpoint,
                      endpoint_setting="store.endpoint")


def job_owner(job_id: str) -> str:
    """The run lease's owner label for every step of the pipeline job ``job_id``: the steps
    of one job (and a retry of it) hold the lease together, another job is refused."""
    return f"kfp-job:{job_id}"


def recorder(config: ExperimentConfig, run_id: str, owner: str | None = None):
    """The run's :class:`~fdshpo.tracking.recorder.RunRecorder` (inner checkpoints every
    ``config.checkpoint_every`` steps; ``owner`` labels its lease, :func:`job_owner`)."""
    from fdshpo.tracking.recorder import RunRecorder

    return RunRecorder(open_run_store(config), config.experiment, run_id,
                       checkpoint_every=config.checkpoint_every, owner=owner)


def held_recorder(config: ExperimentConfig, run_id: str, owner: str):
    """:func:`recorder` holding the run's lease as ``owner`` for as long as it lives
    (:meth:`~fdshpo.tracking.recorder.RunRecorder.hold`): a pipeline step after prepare.
    Raises LeaseHeld when another job holds the run."""
    rec = recorder(config, run_id, owner)
    rec.hold()
    return rec


def load_dataset(config: ExperimentConfig) -> TensorDataset:
    """The configured dataset from fdshpo.data's registry (a not-found message names the
    config's ``data.root``, the one source a config sets)."""
    from fdshpo.data import load_dataset as load
    from fdshpo.data.registry import CONFIG_SETTINGS

    return load(config.data.dataset, root=config.data.root, settings=CONFIG_SETTINGS)


def save_dataset(dataset: TensorDataset, path: str | Path) -> None:
    torch.save({"name": dataset.name, "num_classes": dataset.num_classes,
                "train_images": dataset.train_images, "train_labels": dataset.train_labels,
                "test_images": dataset.test_images, "test_labels": dataset.test_labels},
               str(path))


def read_dataset(path: str | Path) -> TensorDataset:
    d = torch.load(str(path), weights_only=True)
    return TensorDataset(d["name"], d["train_images"], d["train_labels"], d["test_images"],
                         d["test_labels"], int(d["num_classes"]))


def problem_for(config: ExperimentConfig, dataset: TensorDataset):
    """The :class:`~fdshpo.tune.problem.ClassificationProblem` the library's ``tune`` would use."""
    set_threads(config)
    return config.problem(dataset, device_for(config))

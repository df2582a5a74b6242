"""What every component shares: the run's recorder (store + layout), the problem and dataset.

Runs are recorded with :class:`fdshpo.tracking.RunRecorder` in the layout of
:mod:`fdshpo.store.layout` (``experiments/<experiment>/runs/<run_id>/...``), so a pipeline run
is listed, shown, compared and warm-started from exactly like a library ``tune`` run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fdshpo.config import ExperimentConfig
from fdshpo.data.sample import TensorDataset


def config_from_json(config_json: str) -> ExperimentConfig:
    return ExperimentConfig.from_dict(json.loads(config_json))


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

    return open_store(config.store.uri, s3_endpoint=config.store.endpoint)


def recorder(config: ExperimentConfig, run_id: str, owner: str | None = None):
    """The run's :class:`~fdshpo.tracking.RunRecorder` (inner checkpoints every
    ``config.checkpoint_every`` steps; ``owner`` labels the lease ``start`` takes)."""
    from fdshpo.tracking import RunRecorder

    return RunRecorder(open_run_store(config), config.experiment, run_id,
                       checkpoint_every=config.checkpoint_every, owner=owner)


def set_threads(config: ExperimentConfig) -> int:
    """Intra-op threads for this component: ``FDSHPO_TORCH_THREADS`` when set (the local
    runner sets it so parallel replicas do not oversubscribe the cores: measured 5x slower),
    else the configured CPU count, else torch's default. Returns the count in use."""
    import math
    import os

    wanted = os.environ.get("FDSHPO_TORCH_THREADS")
    if not wanted and config.resources.cpu and not config.resources.cpu.endswith("m"):
        wanted = str(max(1, math.floor(float(config.resources.cpu))))
    if wanted:
        torch.set_num_threads(max(1, int(wanted)))
    return torch.get_num_threads()


def device_for(config: ExperimentConfig) -> str:
    """CUDA when the config asks for GPUs and one is visible, else the CPU."""
    return "cuda" if config.resources.gpus > 0 and torch.cuda.is_available() else "cpu"


def load_dataset(config: ExperimentConfig) -> TensorDataset:
    """The configured dataset from fdshpo.data's registry."""
    from fdshpo.data import load_dataset as load

    return load(config.data.dataset, root=config.data.root)


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
    """The :class:`~fdshpo.problem.ClassificationProblem` the library's ``tune`` would use."""
    from fdshpo.problem import ClassificationProblem

    set_threads(config)
    return ClassificationProblem(dataset, config.network, batch_size=config.data.batch_size,
                                 val_fraction=config.data.val_fraction, seed=config.seed,
                                 device=device_for(config))

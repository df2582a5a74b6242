"""Where a configured job runs: its device and its CPU threads (shared by the KFP components and
the CLI commands that train in-process)."""

from __future__ import annotations

import math
import os

import torch

from .experiment import ExperimentConfig


def set_threads(config: ExperimentConfig) -> int:
    """Intra-op threads for this process: ``FDSHPO_TORCH_THREADS`` when set (the local
    runner sets it so parallel replicas do not oversubscribe the cores: measured 5x slower),
    else the configured CPU count, else torch's default. Returns the count in use."""
    wanted = os.environ.get("FDSHPO_TORCH_THREADS")
    if not wanted and config.resources.cpu and not config.resources.cpu.endswith("m"):
        wanted = str(max(1, math.floor(float(config.resources.cpu))))
    if wanted:
        torch.set_num_threads(max(1, int(wanted)))
    return torch.get_num_threads()


def device_for(config: ExperimentConfig) -> str:
    """CUDA when the config asks for GPUs and one is visible, else the CPU."""
    return "cuda" if config.resources.gpus > 0 and torch.cuda.is_available() else "cpu"

"""The retune pipeline: the FDS pipeline warm-started from the experiment's latest learned
schedule in the store, with caching disabled on every task so a scheduled run always trains.
"""

from __future__ import annotations

from fdshpo.config.experiment import ExperimentConfig

from .fds import build_pipeline


def build_retune_pipeline(config: ExperimentConfig):
    return build_pipeline(config, retune=True)

"""The YAML experiment file, validated into dataclasses before any work starts.

    experiment   ExperimentConfig and load_config: every key, its default and its check
    reader       typed reading of one section, with messages that say what to change
    kube         Kubernetes resources: quantities, node selectors, tolerations
    runtime      threads and device for a run
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "load_config": "experiment", "ExperimentConfig": "experiment",
    "check_store_uri": "experiment",
})

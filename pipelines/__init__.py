"""KFP pipelines (installed as ``fdshpo.pipelines``).

- :func:`fds.build_pipeline`: prepare -> outer-step levels (ParallelFor replicas, Collected
  hypergradients, sign update, dsl.If early stop) -> retrain -> report.
- :func:`retune.build_retune_pipeline`: the same, warm-started from the experiment's latest
  schedule in the store and never served from cache (for scheduled runs).
- :mod:`local`: run a pipeline with ``kfp.local`` or the same steps inline, in this process.
"""

from .fds import PIPELINES, build_pipeline, compile_pipeline

__all__ = ["PIPELINES", "build_pipeline", "compile_pipeline"]

"""Run an experiment on this machine: the KFP pipeline through ``kfp.local`` (the real local
runner, one subprocess per component) or the same steps inline in this process (debugging).

Both end with the run's record in the store and return a :class:`RunSummary`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from fdshpo.config import ExperimentConfig
from fdshpo.schedule import Schedule

RUNNERS = ("kfp", "inline")


@dataclass(frozen=True)
class RunSummary:
    """Where a finished run lives and what it learned."""

    run_id: str
    store: str
    schedule: Schedule
    outer_steps: int
    converged: bool
    metrics: dict
    report: str
    seconds: float


def summarise(config: ExperimentConfig, run_id: str, seconds: float) -> RunSummary:
    """Read a finished run's record back from the store."""
    from fdshpo.components.common import recorder

    rec = recorder(config, run_id)
    record = rec.store.get_json(rec.layout.record)
    return RunSummary(run_id, rec.store.uri, Schedule.from_dict(record["schedule"]),
                      int(record["outer_steps"]), bool(record["converged"]), record["metrics"],
                      rec.store.uri.rstrip("/") + "/" + rec.layout.report, seconds)


def local_threads(config: ExperimentConfig) -> int:
    """Torch threads per component when ``replicas`` components share this machine's cores
    with the orchestrator: half the cores per replica, at least one. Oversubscribed torch
    threads spin: on a busy 2-core machine one replica of the demo took 75 s with 2 threads
    and 8 s with 1."""
    import os

    return max(1, (os.cpu_count() or 1) // (2 * config.outer.replicas))


@contextlib.contextmanager
def _environment(**values: str):
    import os

    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _plain_kfp_logs():
    """kfp.local indents component output by swapping the global ``print``; with ParallelFor
    threads the indentation piles up (megabytes of spaces). Keep prints as they are."""
    from kfp.local import logging_utils, subprocess_task_handler

    original = logging_utils.indented_print
    logging_utils.indented_print = lambda num_spaces=4: contextlib.nullcontext()
    if not os.environ.get("FDSHPO_KFP_VERBOSE"):
        subprocess_task_handler.print = _ExecutorLogFilter()
    try:
        yield
    finally:
        logging_utils.indented_print = original
        subprocess_task_handler.__dict__.pop("print", None)


class _ExecutorLogFilter:
    """A ``print`` for kfp.local's component output that drops the KFP executor's own
    bookkeeping (the executor-input JSON dump, component loading, output-file lines: ~130 KB
    for the demo) and keeps what the components print. ``FDSHPO_KFP_VERBOSE=1`` keeps it all."""

    NOISE = ("Looking for component", "Loading KFP component", "Wrote executor output file")

    def __init__(self) -> None:
        self._state = threading.local()  # ParallelFor replicas print from several threads

    def __call__(self, *args, **kwargs) -> None:
        line = " ".join(str(a) for a in args)
        if getattr(self._state, "in_dump", False):
            self._state.in_dump = line.rstrip("\n") != "}"
            return
        if line.startswith("[KFP Executor"):
            if "Got executor_input:" in line:
                self._state.in_dump = True
                return
            if any(marker in line for marker in self.NOISE):
                return
        if not line.strip():
            return
        print(*args, **kwargs)


def run_kfp_local(config: ExperimentConfig, run_id: str, retune: bool = False,
                  pipeline_root: str | None = None) -> RunSummary:
    """Run the compiled pipeline with ``kfp.local.SubprocessRunner(use_venv=False)``.

    Component artifacts go to ``pipeline_root`` (default: a temporary folder, removed after
    the run); the run's record goes to the config's store.
    """
    from kfp import local

    from .fds import build_pipeline

    pipeline = build_pipeline(config, retune=retune)
    threads = local_threads(config)
    root = pipeline_root or tempfile.mkdtemp(prefix="fdshpo-kfp-")
    started = time.perf_counter()
    try:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root,
                   raise_on_error=True)
        with (_plain_kfp_logs(), _environment(FDSHPO_TORCH_THREADS=str(threads)),
              warnings.catch_warnings()):
            # resources, retries and display names only matter on a cluster
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
            # the image is this environment's: SubprocessRunner runs the same installed code
            warnings.filterwarnings("ignore", message=".*non-Python base image")
            pipeline(run_id=run_id)
    finally:
        if pipeline_root is None:
            shutil.rmtree(root, ignore_errors=True)
    return summarise(config, run_id, time.perf_counter() - started)


def run_inline(config: ExperimentConfig, run_id: str, retune: bool = False,
               progress=print) -> RunSummary:
    """The pipeline's steps in order, in this process, without KFP (same store records)."""
    import dataclasses

    from fdshpo.components.inner import inner_step
    from fdshpo.components.outer import outer_step
    from fdshpo.components.prepare import prepare_step
    from fdshpo.components.report import report_step
    from fdshpo.components.retrain import retrain_step
    from fdshpo.progress import outer_step_line
    from fdshpo.tune_state import OuterStepRecord

    if retune:
        config = dataclasses.replace(
            config, outer=dataclasses.replace(config.outer, warm_start=True))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fdshpo-inline-") as tmp:
        dataset = str(Path(tmp) / "dataset.pt")
        state, _ = prepare_step(config, run_id, dataset)
        stop = False
        while not stop:
            records = [inner_step(config, run_id, state, r, dataset)
                       for r in range(config.outer.replicas)]
            state, stop, record = outer_step(config, run_id, state, records)
            progress(outer_step_line(OuterStepRecord.from_dict(record),
                                     config.outer.max_steps))
        evaluation = retrain_step(config, state, dataset)
        report_step(config, run_id, state, evaluation)
    return summarise(config, run_id, time.perf_counter() - started)

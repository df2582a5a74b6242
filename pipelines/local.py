"""Run an experiment on this machine: the KFP pipeline through ``kfp.local`` (the real local
runner, one subprocess per component) or the same steps inline in this process (debugging).

Both end with the run's record in the store and return a :class:`RunSummary`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from fdshpo.config.experiment import ExperimentConfig
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
    record: dict  # the run record (run.json): selection, engine, ...


def summarise(config: ExperimentConfig, run_id: str, seconds: float) -> RunSummary:
    """Read a finished run's record back from the store."""
    from fdshpo.components.common import recorder

    rec = recorder(config, run_id)
    record = rec.store.get_json(rec.layout.record)
    return RunSummary(run_id, rec.store.uri, Schedule.from_dict(record["schedule"]),
                      int(record["outer_steps"]), bool(record["converged"]), record["metrics"],
                      rec.store.uri.rstrip("/") + "/" + rec.layout.report, seconds, record)


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


class _LogHandler(logging.Handler):
    """kfp.local's own log records (each task's start, status and outputs: the ``state:`` JSON
    dumps), into the run's log only."""

    def __init__(self, output: _TaskOutput) -> None:
        super().__init__(logging.INFO)
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        self.output.log_only(_ANSI.sub("", self.format(record)))


@contextlib.contextmanager
def _kfp_output(output: _TaskOutput):
    """Route kfp.local's component output through ``output``, and keep prints as they are:
    kfp.local indents component output by swapping the global ``print``, and with ParallelFor
    threads the indentation piles up (megabytes of spaces). Unless ``output.verbose``,
    kfp.local's own logging (a block per task, with every output parameter's JSON) goes to the
    run's log only."""
    from kfp.local import logging_utils, subprocess_task_handler

    original_indent = logging_utils.indented_print
    original_name = logging_utils.format_task_name
    original_context = logging_utils.local_logger_context
    original_line = logging_utils.print_horizontal_line

    def format_task_name(task_name: str) -> str:
        output.task_started(task_name)  # kfp names a task just before running it (same thread)
        return original_name(task_name)

    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    logging_utils.indented_print = lambda num_spaces=4: contextlib.nullcontext()
    logging_utils.format_task_name = format_task_name
    if not output.verbose:
        # one handler for the whole run: kfp's per-task contexts swap the root logger's
        # handlers, and from ParallelFor threads their restores interleave
        root.handlers = [_LogHandler(output)]
        root.setLevel(logging.INFO)
        logging_utils.local_logger_context = contextlib.nullcontext
        logging_utils.print_horizontal_line = lambda: None
    subprocess_task_handler.print = output
    try:
        yield
    finally:
        root.handlers = handlers
        root.setLevel(level)
        logging_utils.indented_print = original_indent
        logging_utils.format_task_name = original_name
        logging_utils.local_logger_context = original_context
        logging_utils.print_horizontal_line = original_line
        subprocess_task_handler.__dict__.pop("print", None)


class _TaskOutput:
    """A ``print`` for kfp.local's component output. Every line goes to the run's log file,
    tagged with its task. The console gets what the components print, without the KFP
    executor's bookkeeping (the executor-input JSON dump, component loading, output-file lines:
    ~130 KB for the demo) and without Python tracebacks (their last line, the error, stays);
    ``FDSHPO_KFP_VERBOSE=1`` echoes everything. Each task's last error line is kept for the
    failure report."""

    NOISE = ("Looking for component", "Loading KFP component", "Wrote executor output file")

    def __init__(self, log_path: Path, verbose: bool) -> None:
        self.log_path, self.verbose = log_path, verbose
        self.errors: dict[str, str] = {}
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._state = threading.local()  # ParallelFor replicas print from several threads

    def task_started(self, task: str) -> None:
        self._state.task, self._state.in_dump, self._state.in_traceback = task, False, False

    def close(self) -> None:
        self._log.close()

    def log_only(self, text: str) -> None:
        """``text`` into the run's log, tagged with the current task; not on the console."""
        task = getattr(self._state, "task", "")
        with self._lock:
            for part in text.rstrip("\n").split("\n"):
                self._log.write(f"[{task}] {part}\n" if part.strip() else "")
            self._log.flush()

    def __call__(self, *args, **kwargs) -> None:
        line = " ".join(str(a) for a in args)
        self.log_only(line)
        if self.verbose:
            print(*args, **kwargs)
        elif self._shown(line.rstrip("\n"), getattr(self._state, "task", "")):
            print(*args, **kwargs)

    def _shown(self, line: str, task: str) -> bool:
        state = self._state
        if getattr(state, "in_dump", False):
            state.in_dump = line != "}"
            return False
        if line.startswith("[KFP Executor"):
            if "Got executor_input:" in line:
                state.in_dump = True
                return False
            return not any(marker in line for marker in self.NOISE)
        if line.startswith("Traceback (most recent call last)"):
            state.in_traceback = True
            return False
        if getattr(state, "in_traceback", False):
            if not line.strip() or line.startswith((" ", "\t", "During handling",
                                                    "The above exception")):
                return False
            state.in_traceback = False
            self.errors[task] = line.strip()  # the exception line that ends the traceback
        return bool(line.strip())


class TaskFailed(Exception):
    """A pipeline task failed under kfp.local: which one, its error line and the run's log."""

    def __init__(self, task: str, message: str, log_path: Path) -> None:
        super().__init__(task, message, log_path)
        self.task, self.message, self.log_path = task, message, log_path

    def __str__(self) -> str:
        return (f"pipeline task {self.task!r} failed: {self.message}\n"
                f"  full log (every task's output, tracebacks included): {self.log_path}\n"
                "  --verbose (or FDSHPO_KFP_VERBOSE=1) shows it all on the console")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failed_task(error: str) -> str | None:
    """The innermost failed task in kfp.local's failure message, or None."""
    match = re.search(r"Inner task failed: '([^']+)'|Task '([^']+)' finished with status",
                      _ANSI.sub("", error))
    return (match.group(1) or match.group(2)) if match else None


def run_kfp_local(config: ExperimentConfig, run_id: str, retune: bool = False,
                  pipeline_root: str | None = None, arguments: dict | None = None,
                  verbose: bool | None = None) -> RunSummary:
    """Run the compiled pipeline with ``kfp.local.SubprocessRunner(use_venv=False)``.

    Component artifacts and the run's log (``fdshpo-run.log``) go to ``pipeline_root``
    (default: a temporary folder, removed after a successful run, kept after a failure); the
    run's record goes to the config's store. ``arguments`` overrides pipeline parameters, as a
    user could on a cluster. The console shows what the components print (a line per outer
    step); ``verbose`` (default: ``$FDSHPO_KFP_VERBOSE`` set) shows everything, kfp.local's
    per-task blocks and tracebacks included.

    Raises:
        TaskFailed: a task failed (its name, error line and the log's path).
    """
    from kfp import local

    from .fds import build_pipeline

    pipeline = build_pipeline(config, retune=retune, launcher=False)
    threads = local_threads(config)
    root = pipeline_root or tempfile.mkdtemp(prefix="fdshpo-kfp-")
    Path(root).mkdir(parents=True, exist_ok=True)
    if verbose is None:
        verbose = bool(os.environ.get("FDSHPO_KFP_VERBOSE"))
    output = _TaskOutput(Path(root) / "fdshpo-run.log", verbose=verbose)
    started = time.perf_counter()
    failed = False
    try:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root,
                   raise_on_error=True)
        with (_kfp_output(output), _environment(FDSHPO_TORCH_THREADS=str(threads)),
              warnings.catch_warnings()):
            # resources, retries and display names only matter on a cluster
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
            # the image is this environment's: SubprocessRunner runs the same installed code
            warnings.filterwarnings("ignore", message=".*non-Python base image")
            pipeline(run_id=run_id, **(arguments or {}))
    except RuntimeError as exc:
        task = _failed_task(str(exc))
        if task is None:
            raise
        failed = True
        message = output.errors.get(task) or "it printed no error; see the log"
        raise TaskFailed(task, message, output.log_path) from exc
    finally:
        output.close()
        if pipeline_root is None and not failed:
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
    from fdshpo.store.lease import default_owner
    from fdshpo.tune.console import outer_step_line
    from fdshpo.tune.state import OuterStepRecord

    if retune:
        config = dataclasses.replace(
            config, outer=dataclasses.replace(config.outer, warm_start=True))
    started = time.perf_counter()
    owner = f"inline:{default_owner()}:{secrets.token_hex(3)}"  # the steps hold one lease
    with tempfile.TemporaryDirectory(prefix="fdshpo-inline-") as tmp:
        dataset = str(Path(tmp) / "dataset.pt")
        state, _ = prepare_step(config, run_id, dataset, owner)
        stop = False
        while not stop:
            records = [inner_step(config, run_id, state, r, dataset, owner)
                       for r in range(config.outer.replicas)]
            state, stop, record = outer_step(config, run_id, state, records, owner)
            progress(outer_step_line(OuterStepRecord.from_dict(record),
                                     config.outer.max_steps))
        evaluation = retrain_step(config, state, dataset, run_id, owner)
        report_step(config, run_id, state, evaluation, owner)
    return summarise(config, run_id, time.perf_counter() - started)

"""kfp.local's component output as fdshpo shows it: the executor's bookkeeping and Python
tracebacks leave the console but stay in the run's log, and each task's error line is kept."""

from fdshpo.pipelines.local import _TaskOutput

EXECUTOR_OUTPUT = """\
[KFP Executor 2026-11-27 06:05:22,516 INFO]: Looking for component `x` in --component_module_path
[KFP Executor 2026-11-27 06:05:22,517 INFO]: Got executor_input:
{
    "inputs": {
        "parameterValues": {"run_id": "r1"}
    }
}
outer step 1: val loss 0.7100
[KFP Executor 2026-11-27 06:05:25,438 INFO]: Wrote executor output file to /tmp/out.json.
[KFP Executor 2026-11-27 06:05:25,439 INFO]: Something a user should see
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
    raise StoreError(message)
fdshpo.store.base.StoreError: no S3 credentials found: set AWS_ACCESS_KEY_ID
"""


def test_bookkeeping_and_tracebacks_leave_the_console_not_the_log(tmp_path, capsys):
    show = _TaskOutput(tmp_path / "run.log", verbose=False)
    show.task_started("prepare-component")
    for line in EXECUTOR_OUTPUT.splitlines(keepends=True):
        show(line, end="")
    show("\n")
    show.close()
    printed = capsys.readouterr().out
    assert printed.splitlines() == [
        "outer step 1: val loss 0.7100",
        "[KFP Executor 2026-11-27 06:05:25,439 INFO]: Something a user should see",
        "fdshpo.store.base.StoreError: no S3 credentials found: set AWS_ACCESS_KEY_ID",
    ]
    assert show.errors == {"prepare-component": "fdshpo.store.base.StoreError: no S3 "
                                                "credentials found: set AWS_ACCESS_KEY_ID"}
    log = (tmp_path / "run.log").read_text().splitlines()
    assert len(log) == len(EXECUTOR_OUTPUT.splitlines())
    assert all(line.startswith("[prepare-component] ") for line in log)
    assert "[prepare-component] Traceback (most recent call last):" in log


def test_verbose_shows_everything(tmp_path, capsys):
    show = _TaskOutput(tmp_path / "run.log", verbose=True)
    for line in EXECUTOR_OUTPUT.splitlines(keepends=True):
        show(line, end="")
    show.close()
    assert capsys.readouterr().out == EXECUTOR_OUTPUT


def _kfp_logs_a_task():
    """What kfp.local logs around each task (task_dispatcher.py): a block with its outputs."""
    import logging

    from kfp.local import logging_utils

    with logging_utils.local_logger_context():
        logging.info("Executing task 'outer-component-step-1'")
        logging.info("Task 'outer-component-step-1' outputs:\n    state: '{\"schedule\": 1}'")
        logging_utils.print_horizontal_line()


def test_kfp_locals_task_blocks_go_to_the_log_unless_verbose(tmp_path, capsys):
    from fdshpo.pipelines.local import _kfp_output

    show = _TaskOutput(tmp_path / "run.log", verbose=False)
    show.task_started("outer-component-step-1")
    with _kfp_output(show):
        _kfp_logs_a_task()
    show.close()
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
    log = (tmp_path / "run.log").read_text()
    assert "Executing task 'outer-component-step-1'" in log and "state: '{\"schedule\": 1}'" in log

    show = _TaskOutput(tmp_path / "verbose.log", verbose=True)
    with _kfp_output(show):
        _kfp_logs_a_task()
    show.close()
    out = capsys.readouterr().out
    assert "state: '{\"schedule\": 1}'" in out and "-" * 20 in out


def test_the_root_logger_is_left_as_found(tmp_path):
    """kfp.local's logging goes to one run's log for that run only: a later run (or any later
    logging) never writes to an earlier run's closed log."""
    import logging

    from fdshpo.pipelines.local import _kfp_output

    before = logging.getLogger().handlers[:], logging.getLogger().level
    for name in ("a", "b"):
        show = _TaskOutput(tmp_path / f"{name}.log", verbose=False)
        with _kfp_output(show):
            _kfp_logs_a_task()
        show.close()
    assert (logging.getLogger().handlers, logging.getLogger().level) == before
    logging.getLogger().warning("after the runs")  # must not reach a closed log
    assert "Executing task" in (tmp_path / "b.log").read_text()

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

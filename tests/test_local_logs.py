from fdshpo.pipelines.local import _ExecutorLogFilter

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
"""


def test_executor_bookkeeping_is_dropped_and_component_output_kept(capsys):
    show = _ExecutorLogFilter()
    for line in EXECUTOR_OUTPUT.splitlines(keepends=True):
        show(line, end="")
    show("\n")
    printed = capsys.readouterr().out
    assert printed.splitlines() == [
        "outer step 1: val loss 0.7100",
        "[KFP Executor 2026-11-27 06:05:25,439 INFO]: Something a user should see",
    ]

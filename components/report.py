"""Report: finish the run's record and show it in the KFP UI.

:meth:`fdshpo.tracking.recorder.RunRecorder.finish` writes the learned schedule, metrics, plots, the
HTML report (:mod:`fdshpo.report.run_page`) and, last, the run record and the experiment's
``latest``
pointer (what a retune warm-starts from), as the run's job (``owner``: the lease the job has
held since prepare, released here). The component outputs the same HTML, a Markdown summary and
KFP ``Metrics``.
"""

from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output


def metrics_of(evaluation: dict) -> dict:
    """The run's metrics: test scores of both schedules, or where the retraining diverged, and
    whether the learned schedule's retraining collapsed to about chance accuracy."""
    learned, initial = evaluation["learned"], evaluation["initial"]
    metrics = {"test_accuracy": learned["test_accuracy"], "test_loss": learned["test_loss"],
               "initial_test_accuracy": initial["test_accuracy"],
               "initial_test_loss": initial["test_loss"],
               "retrain_steps": learned["num_steps"],
               "retrain_diverged": learned["diverged"] is not None,
               "retrain_collapsed": bool(learned.get("collapsed"))}
    if learned["diverged"] is not None:
        metrics["retrain_divergence"] = learned["diverged"]
    if learned.get("backoff"):
        metrics["retrain_backoff"] = learned["backoff"]
    return metrics


def _accuracy(evaluation: dict) -> str:
    from fdshpo.report.text import accuracy_text

    if evaluation["diverged"] is not None:
        d = evaluation["diverged"]
        values = ", ".join(f"{k}={v:.4g}" for k, v in (d["hyperparameters"] or {}).items())
        return f"diverged at step {d['step']} ({values})"
    return accuracy_text(evaluation["test_accuracy"], evaluation.get("collapsed", False))


def markdown_summary(config, run_id: str, state: dict, evaluation: dict,
                     record: dict | None = None) -> str:
    """The run in Markdown for the KFP UI (``record``: the run record, which says which outer
    step the learned schedule came from and the engine that ran)."""
    from fdshpo.report.text import selection_text, sign_string

    history = state["history"]
    rows = [f"| {n} | " + ", ".join(f"{v:.4g}" for v in vals) + " |"
            for n, vals in evaluation["schedule"]["values"].items()]
    steps = [f"| {r['outer_step'] + 1} | {r['val_loss']:.4f} | "
             f"{sign_string(r['hypergradients'])} |" for r in history]
    learned = evaluation["learned"]
    return "\n".join([
        f"# fdshpo run {config.experiment}/{run_id}", "",
        f"{config.network} on {config.data.dataset}, horizon {config.schedule.horizon} steps, "
        f"{len(history)} outer step(s) of at most {config.outer.max_steps}, "
        f"{config.outer.replicas} replica(s)" + (", converged." if state["converged"] else "."),
        "", f"Test accuracy after retraining ({learned['num_steps']} steps): "
        f"learned schedule **{_accuracy(learned)}**, initial schedule "
        f"{_accuracy(evaluation['initial'])}.", "",
        f"## Learned schedule ({config.outer.select} outer step)", "",
        *([f"Validation loss {selection_text(record)}; engine {record.get('engine')}.", ""]
          if record else []),
        "| hyperparameter | segment values |", "|---|---|", *rows,
        "", "## Outer steps", "", "| step | val loss | hypergradient signs |", "|---|---|---|",
        *steps, ""])


def report_step(config, run_id: str, state_json: str, evaluation: dict, owner: str
                ) -> tuple[str, str, str]:
    """Finish the run in the store; returns (Markdown, HTML, the report's URI)."""
    import json

    from fdshpo.components.common import held_recorder
    from fdshpo.schedule import Schedule

    state = json.loads(state_json)
    rec = held_recorder(config, run_id, owner)
    record = rec.finish(Schedule.from_dict(evaluation["schedule"]), metrics_of(evaluation),
                        converged=bool(state["converged"]))
    html = rec.store.get_bytes(rec.layout.report).decode()
    uri = rec.store.uri.rstrip("/") + "/" + rec.layout.report
    return markdown_summary(config, run_id, state, evaluation, record), html, uri


def report_component(config_json: str, run_id: str, job_id: str, state: str,
                     evaluation: Input[Artifact],
                     metrics: Output[Metrics], markdown: Output[Markdown], page: Output[HTML]
                     ) -> str:
    """KFP: record the run, output metrics + Markdown/HTML; returns the report's URI."""
    import json

    from fdshpo.components.common import config_from_json, job_owner
    from fdshpo.components.report import metrics_of, report_step

    with open(evaluation.path) as f:
        result = json.load(f)
    md, html, uri = report_step(config_from_json(config_json), run_id, state, result,
                                job_owner(job_id))
    with open(markdown.path, "w") as f:
        f.write(md)
    with open(page.path, "w") as f:
        f.write(html)
    for name, value in metrics_of(result).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(name, value)
    markdown.metadata["run_id"] = page.metadata["run_id"] = run_id
    page.metadata["store_report"] = uri
    return uri

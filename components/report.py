"""Report: finish the run's record and show it in the KFP UI.

:meth:`fdshpo.tracking.RunRecorder.finish` writes the learned schedule, metrics, plots, the
HTML report (:mod:`fdshpo.report`) and, last, the run record and the experiment's ``latest``
pointer (what a retune warm-starts from). The component outputs the same HTML, a Markdown
summary and KFP ``Metrics``.
"""

from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output


def metrics_of(evaluation: dict) -> dict:
    return {"test_accuracy": evaluation["learned"]["test_accuracy"],
            "test_loss": evaluation["learned"]["test_loss"],
            "initial_test_accuracy": evaluation["initial"]["test_accuracy"],
            "initial_test_loss": evaluation["initial"]["test_loss"],
            "retrain_steps": evaluation["learned"]["num_steps"]}


def markdown_summary(config, run_id: str, state: dict, evaluation: dict) -> str:
    history = state["history"]
    rows = [f"| {n} | " + ", ".join(f"{v:.4g}" for v in vals) + " |"
            for n, vals in state["schedule"]["values"].items()]
    steps = []
    for r in history:
        signs = " ".join(n + ":" + "".join("+" if g > 0 else "-" if g < 0 else "0" for g in gs)
                         for n, gs in r["hypergradients"].items())
        steps.append(f"| {r['outer_step'] + 1} | {r['val_loss']:.4f} | {signs} |")
    return "\n".join([
        f"# fdshpo run {config.experiment}/{run_id}", "",
        f"{config.network} on {config.data.dataset}, horizon {config.schedule.horizon} steps, "
        f"{len(history)} outer step(s) of at most {config.outer.max_steps}, "
        f"{config.outer.replicas} replica(s)" + (", converged." if state["converged"] else "."),
        "", f"Test accuracy after retraining ({evaluation['learned']['num_steps']} steps): "
        f"learned schedule **{evaluation['learned']['test_accuracy']:.2%}**, initial schedule "
        f"{evaluation['initial']['test_accuracy']:.2%}.", "",
        "## Learned schedule", "", "| hyperparameter | segment values |", "|---|---|", *rows,
        "", "## Outer steps", "", "| step | val loss | hypergradient signs |", "|---|---|---|",
        *steps, ""])


def report_step(config, run_id: str, state_json: str, evaluation: dict) -> tuple[str, str, str]:
    """Finish the run in the store; returns (Markdown, HTML, the report's URI)."""
    import json

    from fdshpo.components.common import recorder
    from fdshpo.schedule import Schedule

    state = json.loads(state_json)
    rec = recorder(config, run_id)
    rec.finish(Schedule.from_dict(state["schedule"]), metrics_of(evaluation),
               converged=bool(state["converged"]))
    html = rec.store.get_bytes(rec.layout.report).decode()
    uri = rec.store.uri.rstrip("/") + "/" + rec.layout.report
    return markdown_summary(config, run_id, state, evaluation), html, uri


def report_component(config_json: str, run_id: str, state: str, evaluation: Input[Artifact],
                     metrics: Output[Metrics], markdown: Output[Markdown], page: Output[HTML]
                     ) -> str:
    """KFP: record the run, output metrics + Markdown/HTML; returns the report's URI."""
    import json

    from fdshpo.components.common import config_from_json
    from fdshpo.components.report import metrics_of, report_step

    with open(evaluation.path) as f:
        result = json.load(f)
    md, html, uri = report_step(config_from_json(config_json), run_id, state, result)
    with open(markdown.path, "w") as f:
        f.write(md)
    with open(page.path, "w") as f:
        f.write(html)
    for name, value in metrics_of(result).items():
        metrics.log_metric(name, value)
    markdown.metadata["run_id"] = page.metadata["run_id"] = run_id
    page.metadata["store_report"] = uri
    return uri

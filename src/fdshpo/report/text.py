"""Short text forms of recorded values, shared by the CLI, the reports and the progress lines
(no torch: read-only commands use them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def sign_string(hypergradients: Mapping[str, Sequence[float]]) -> str:
    """``"lr:+-0 momentum:+"``: per hyperparameter, sign(h_k) of each segment k as ``+``,
    ``-`` or ``0`` (the only part of a hypergradient the sign optimizer uses)."""
    return " ".join(f"{name}:" + "".join("+" if g > 0 else "-" if g < 0 else "0" for g in grads)
                    for name, grads in hypergradients.items())


def engine_summary(choice: Mapping) -> str:
    """``"engine reverse (auto: 1.6x cheaper than forward by ...)"``: which hypergradient engine
    ran and why, from :meth:`fdshpo.engines.choose.EngineChoice.to_dict`."""
    return f"engine {choice['engine']} ({choice['requested']}: {choice['reason']})"


def accuracy_text(accuracy: float, collapsed: bool = False) -> str:
    """``"81.20%"``, or ``"11.50% (collapsed: about chance)"`` for a retraining that learned
    next to nothing (:func:`fdshpo.tune.retrain.is_collapsed`)."""
    return f"{accuracy:.2%}" + (" (collapsed: about chance)" if collapsed else "")


def value_text(value, digits: int = 6, missing: str = "", brackets: bool = False) -> str:
    """A recorded value as text: floats to ``digits`` significant digits, lists
    comma-separated (in ``[...]`` with ``brackets``), None as ``missing``. The HTML pages use
    the defaults; the terminal tables 4 digits, ``-`` and brackets (:func:`terminal_text`)."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        inner = ", ".join(value_text(v, digits, missing, brackets) for v in value)
        return f"[{inner}]" if brackets else inner
    return str(value)


def terminal_text(value) -> str:
    """:func:`value_text` as the CLI's tables show it: ``0.1235``, ``[1, 2]``, ``-``."""
    return value_text(value, digits=4, missing="-", brackets=True)


def selection_text(run: Mapping, digits: int = 4) -> str:
    """A run's result as a person reads it, from its summary (an index entry, a run record):
    ``"0.4390 (outer step 3 of 6)"``: the validation loss of the outer step whose schedule a
    complete run returned (``selected_val_loss``, ``selected_outer_step``: 1-based; see
    :mod:`fdshpo.tracking.selection`); ``"not validated (the last iterate, after outer step
    6)"`` when it returned a schedule no outer step measured (``outer.select: last``);
    ``"1.1220 (outer step 6, the latest)"`` for a run still going; a record written before
    the selection was recorded shows its last outer step's loss and says so."""
    steps = run.get("outer_steps")
    final = run.get("final_val_loss")
    if run.get("status") in ("complete", "corrupt"):
        if "selected_outer_step" in run:
            k = run["selected_outer_step"]
            if k is None:
                return f"not validated (the last iterate, after outer step {steps})"
            loss = value_text(run.get("selected_val_loss"), digits, "-")
            return f"{loss} (outer step {k} of {steps})"
        if final is None:
            return "-"
        return (f"{value_text(final, digits)} (outer step {steps}, the last; selection not "
                "recorded)")
    if final is None:
        return "-"
    return f"{value_text(final, digits)} (outer step {steps}, the latest)"

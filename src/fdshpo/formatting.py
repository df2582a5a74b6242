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
    ran and why, from :meth:`fdshpo.engine.EngineChoice.to_dict`."""
    return f"engine {choice['engine']} ({choice['requested']}: {choice['reason']})"


def accuracy_text(accuracy: float, collapsed: bool = False) -> str:
    """``"81.20%"``, or ``"11.50% (collapsed: about chance)"`` for a retraining that learned
    next to nothing (:func:`fdshpo.evaluate.is_collapsed`)."""
    return f"{accuracy:.2%}" + (" (collapsed: about chance)" if collapsed else "")

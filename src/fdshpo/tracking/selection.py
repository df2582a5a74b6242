"""What a run's outer-step records say about its result: which outer step the returned
schedule came from (and its validation loss), and which hypergradient engine ran.

Plain recorded dicts in (``steps/NNNN.json``, :class:`fdshpo.tune.state.OuterStepRecord`
``to_dict()``), plain values out; no torch. The run record, its index entry and every page
that shows a run use these, so they agree:

- ``selected_outer_step``: the 1-based number of the outer step whose schedule the run
  returned (as the console counts, ``outer step 2/6``), None when the returned schedule is no
  outer step's (``outer.select: last`` returns the iterate after the last update, which was
  never validated);
- ``selected_val_loss``: that outer step's validation loss, None likewise;
- ``engine``: the engine that computed the hypergradients (``forward`` or ``reverse``;
  ``forward+reverse`` when outer steps differed), not the configured ``auto``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def selected_step(steps: Sequence[Mapping], schedule: Mapping | None) -> Mapping | None:
    """The outer-step record whose schedule is ``schedule`` (the lowest validation loss, then
    the latest, among equal schedules), or None when no outer step used it."""
    if not schedule:
        return None
    same = [s for s in steps if s.get("schedule") == schedule
            and isinstance(s.get("val_loss"), (int, float)) and math.isfinite(s["val_loss"])]
    return min(reversed(same), key=lambda s: s["val_loss"]) if same else None


def selection_fields(steps: Sequence[Mapping], schedule: Mapping | None) -> dict:
    """``{"selected_outer_step": k (1-based) or None, "selected_val_loss": loss or None}``."""
    step = selected_step(steps, schedule)
    return {"selected_outer_step": None if step is None else int(step["outer_step"]) + 1,
            "selected_val_loss": None if step is None else float(step["val_loss"])}


def engine_ran(steps: Sequence[Mapping]) -> str | None:
    """The engine(s) the outer steps ran, in order of first use joined by ``+``, or None when
    no step recorded one (no inner run finished, or records older than the engine field)."""
    names: list[str] = []
    for step in steps:
        choice = step.get("engine")
        name = choice.get("engine") if isinstance(choice, Mapping) else None
        if name and name not in names:
            names.append(str(name))
    return "+".join(names) or None

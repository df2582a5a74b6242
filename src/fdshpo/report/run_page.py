"""A run's self-contained HTML report (plots inlined as PNG), from plain recorded data.

Plots (:mod:`fdshpo.report.plots`), from the run's per-outer-step records:

- ``schedule``: each hyperparameter's piecewise-constant schedule over the inner steps, one line
  per outer step (light to dark) and the final schedule in black, named by the outer step it
  came from;
- ``hypergradient_signs``: sign(mean hypergradient) per learned segment and outer step;
- ``val_loss``: the validation loss at the end of the horizon per outer step.

The page fetches nothing: no scripts, styles or images from elsewhere.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence

from ..segments import HYPERPARAMETERS
from .text import selection_text, sign_string, value_text

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } figure { display: inline-block; margin: 0 1em 1em 0; }
img { max-width: 100%; } pre { background: #f7f7f7; padding: 1em; }
"""


def build_plots(steps: Sequence[Mapping], schedule: Mapping | None,
                selected: int | None = None) -> dict[str, bytes]:
    """``{name: PNG bytes}`` for the three plots of the module docstring (``selected``: the
    1-based outer step the final schedule came from, named in its legend)."""
    from .plots import ramp, schedules_png, signs_png, val_loss_png

    labelled = len(steps) <= 8
    curves = [(f"outer step {s['outer_step'] + 1}" if labelled else None, s["schedule"],
               {"color": color}) for s, color in zip(steps, ramp(len(steps)))]
    if schedule:
        curves.append((f"final (outer step {selected})" if selected else "final", schedule,
                       {"color": "black", "lw": 2}))
    return {"schedule": schedules_png(curves, "schedule per outer step"),
            "hypergradient_signs": signs_png(steps),
            "val_loss": val_loss_png(steps)}


def table(header: Sequence[str], rows: Sequence[Sequence], attrs: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(value_text(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_img(name: str, png: bytes) -> str:
    """An ``<img>`` with the PNG inlined (a data: URI), so the page needs no other file."""
    return (f'<img alt="{html.escape(name)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def page(title: str, body: str, script: str = "", style: str = "") -> str:
    """A complete, self-contained HTML page (inline style and script only)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}{style}</style></head>"
            "<body>\n"
            f"{body}\n{f'<script>{script}</script>' if script else ''}</body></html>\n")


def build_report(*, name: str, status: str, config: Mapping, steps: Sequence[Mapping],
                 schedule: Mapping | None, metrics: Mapping, summary: Mapping | None = None
                 ) -> tuple[str, dict[str, bytes]]:
    """(self-contained HTML page, ``{plot name: PNG}``) for a run.

    Args:
        name: ``EXPERIMENT/RUN``; status: ``complete``, ``incomplete`` or ``corrupt``.
        config: the recorded configuration; metrics: ``{name: value}``.
        steps: the per-outer-step records (``OuterStepRecord.to_dict()``), in order.
        schedule: the final (or newest) schedule as ``Schedule.to_dict()``, or None.
        summary: the run's summary (:func:`~fdshpo.report.text.selection_text`'s fields and
            ``engine``): the page says which outer step the schedule came from, its validation
            loss and the engine that ran.
    """
    summary = dict(summary or {"status": status, "outer_steps": len(steps)})
    selected = summary.get("selected_outer_step")
    plots = build_plots(steps, schedule, selected)
    images = "".join(f"<figure>{png_img(n, png)}<figcaption>{n}</figcaption></figure>"
                     for n, png in plots.items())
    step_table = table(["outer step", "val loss", "lr", "momentum", "weight decay",
                        "hypergradient signs", "seconds", "engine", "converged"],
                       [[f"{s['outer_step'] + 1}" + (" (selected)" if selected
                                                     == s["outer_step"] + 1 else ""),
                         s["val_loss"], *(s["schedule"]["values"][n] for n in HYPERPARAMETERS),
                         sign_string(s["hypergradients"]), s.get("seconds"),
                         (s.get("engine") or {}).get("engine"), s.get("converged")]
                        for s in steps])
    final = table(["hyperparameter", "segment values"],
                  [[n, (schedule or {}).get("values", {}).get(n)] for n in HYPERPARAMETERS])
    metric_table = table(["metric", "value"], [[k, v] for k, v in sorted(metrics.items())])
    config_text = html.escape(json.dumps(dict(config), indent=2, sort_keys=True))
    body = f"""<h1>fdshpo run {html.escape(name)}</h1>
<p>Status: <b>{html.escape(status)}</b>; {len(steps)} outer step(s); engine
<b class="engine">{html.escape(value_text(summary.get("engine"), missing="not recorded"))}</b>.</p>
<p>Validation loss: <b class="selection">{html.escape(selection_text(summary))}</b>.</p>
<h2>Final schedule</h2>{final}
<h2>Metrics</h2>{metric_table}
<h2>Plots</h2>{images}
<h2>Outer steps</h2>{step_table}
<h2>Configuration</h2><pre>{config_text}</pre>"""
    return page(f"fdshpo run {name}", body), plots

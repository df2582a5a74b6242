"""Plots of a run (matplotlib, PNG) and a self-contained HTML report (images inlined).

Plots, from the run's per-outer-step records:

- ``schedule``: each hyperparameter's piecewise-constant schedule over the inner steps, one line
  per outer step (light to dark) and the final schedule in black;
- ``hypergradient_signs``: sign(mean hypergradient) per learned segment (rows) and outer step
  (columns): red +, blue -, white 0;
- ``val_loss``: the validation loss at the end of the horizon per outer step (mean over replicas,
  replicas as dots).
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tracking import RunView

_NAMES = ("lr", "momentum", "weight_decay")


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _steps_xy(values: list[float], num_steps: int) -> tuple[list[int], list[float]]:
    n = len(values)
    xs, ys = [], []
    for k, v in enumerate(values):
        start = -(-k * num_steps // n)
        end = -(-(k + 1) * num_steps // n)
        xs += [start, end]
        ys += [v, v]
    return xs, ys


def plot_schedule(steps: list[dict], final: dict | None) -> bytes:
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    cmap = colormaps["viridis"]
    for ax, name in zip(axes, _NAMES):
        for i, step in enumerate(steps):
            sched = step["schedule"]
            xs, ys = _steps_xy(sched["values"][name], sched["num_steps"])
            ax.plot(xs, ys, color=cmap(0.15 + 0.7 * i / max(1, len(steps) - 1)), lw=1.2,
                    label=f"outer step {step['outer_step']}" if len(steps) <= 8 else None)
        if final:
            xs, ys = _steps_xy(final["values"][name], final["num_steps"])
            ax.plot(xs, ys, color="black", lw=2, label="final")
        ax.set_title(name)
        ax.set_xlabel("inner step")
    axes[0].legend(fontsize=7)
    fig.suptitle("schedule per outer step")
    return _figure_png(fig)


def plot_signs(steps: list[dict]) -> bytes:
    import matplotlib.pyplot as plt
    import numpy as np

    rows = []
    if steps:
        for name, values in steps[0]["hypergradients"].items():
            rows += [(name, k) for k in range(len(values))]
    grid = np.array([[np.sign(s["hypergradients"][n][k]) for s in steps] for n, k in rows]) \
        if rows else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(steps) + 2), max(2, 0.35 * len(rows) + 1)))
    ax.imshow(grid, cmap="bwr", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(rows)), [f"{n}[{k}]" for n, k in rows])
    ax.set_xticks(range(len(steps)), [str(s["outer_step"]) for s in steps])
    ax.set_xlabel("outer step")
    ax.set_title("hypergradient signs (red +, blue -)")
    return _figure_png(fig)


def plot_val_loss(steps: list[dict]) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    xs = [s["outer_step"] for s in steps]
    ax.plot(xs, [s["val_loss"] for s in steps], "o-", label="mean over replicas")
    for s in steps:
        losses = s.get("replica_val_losses") or []
        if len(losses) > 1:
            ax.plot([s["outer_step"]] * len(losses), losses, ".", color="gray")
    ax.set_xlabel("outer step")
    ax.set_ylabel("validation loss at the horizon")
    ax.set_title("validation loss")
    return _figure_png(fig)


def build_plots(run: RunView) -> dict[str, bytes]:
    """``{name: PNG bytes}`` for the three plots of the module docstring."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    return {"schedule": plot_schedule(run.steps, run.schedule),
            "hypergradient_signs": plot_signs(run.steps),
            "val_loss": plot_val_loss(run.steps)}


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return "" if value is None else str(value)


def _signs(hypergradients: dict) -> str:
    return " ".join(f"{n}:" + "".join("+" if g > 0 else "-" if g < 0 else "0" for g in gs)
                    for n, gs in hypergradients.items())


def build_report(run: RunView) -> tuple[str, dict[str, bytes]]:
    """(self-contained HTML page, ``{name: PNG}``) for a run."""
    plots = build_plots(run)
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{name}</figcaption></figure>'
        for name, png in plots.items())
    steps = _table(["outer step", "val loss", "lr", "momentum", "weight decay",
                    "hypergradient signs", "seconds", "converged"],
                   [[s["outer_step"], s["val_loss"], *(s["schedule"]["values"][n] for n in _NAMES),
                     _signs(s["hypergradients"]), s.get("seconds"), s.get("converged")]
                    for s in run.steps])
    final = _table(["hyperparameter", "segment values"],
                   [[n, (run.schedule or {}).get("values", {}).get(n)] for n in _NAMES])
    metrics = _table(["metric", "value"], [[k, v] for k, v in sorted(run.metrics.items())])
    config = html.escape(json.dumps(run.config, indent=2, sort_keys=True))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fdshpo run {html.escape(run.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }} figure {{ display: inline-block; margin: 0 1em 1em 0; }}
img {{ max-width: 100%; }} pre {{ background: #f7f7f7; padding: 1em; }}
</style></head><body>
<h1>fdshpo run {html.escape(run.name)}</h1>
<p>Status: <b>{html.escape(run.status)}</b>; {len(run.steps)} outer step(s).</p>
<h2>Final schedule</h2>{final}
<h2>Metrics</h2>{metrics}
<h2>Plots</h2>{images}
<h2>Outer steps</h2>{steps}
<h2>Configuration</h2><pre>{config}</pre>
</body></html>
"""
    return page, plots

"""PNG plots from plain data (matplotlib, headless): schedules, hypergradient signs, val loss.

A schedule is a :class:`~fdshpo.schedule.Schedule` or its ``to_dict()`` form
(``{"num_steps": T, "values": {name: [segment values]}}``); both plot the same. Nothing here
reads a store or imports torch.

    png = schedules_png([("best", best), ("latest", latest)], title="demo")
    png = schedules_png([("outer step 0", s0, {"color": "#ccc"}), ("final", s, {"lw": 2})])
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from ..segments import HYPERPARAMETERS, segment_index, segment_start
from ..shapes import shape_factors

#: ``(label, schedule)`` or ``(label, schedule, matplotlib line options)``; label may be None.
Curve = tuple


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def segment_values(schedule) -> tuple[int, dict[str, list[float]]]:
    """(horizon T, ``{name: [segment values]}``) of a Schedule or its dict form."""
    if isinstance(schedule, Mapping):
        return int(schedule["num_steps"]), {n: [float(v) for v in vs]
                                            for n, vs in schedule["values"].items()}
    return int(schedule.num_steps), {n: [float(v) for v in vs]
                                     for n, vs in schedule.values.items()}


def shapes_of(schedule) -> dict[str, str]:
    """``{name: base shape}`` of a Schedule or its dict form (constant when not given)."""
    shapes = (schedule.get("shapes") if isinstance(schedule, Mapping)
              else schedule.shapes) or {}
    return {n: shapes.get(n, "constant") for n in HYPERPARAMETERS}


def step_curve(values: Sequence[float], num_steps: int, shape: str = "constant"
               ) -> tuple[list[int], list[float]]:
    """(xs, ys) tracing a hyperparameter over steps 0..T: piecewise-constant segment values
    (segment k spans ``segment_start(k) .. segment_start(k + 1)``), each step's value times its
    base shape's factor when the shape is not constant."""
    n = len(values)
    if shape != "constant":
        factors = shape_factors(shape, num_steps)
        ys = [values[segment_index(t, n, num_steps)] * f for t, f in enumerate(factors)]
        return list(range(num_steps + 1)), ys + ys[-1:]
    xs, ys = [], []
    for k, value in enumerate(values):
        xs += [segment_start(k, n, num_steps), segment_start(k + 1, n, num_steps)]
        ys += [value, value]
    return xs, ys


def ramp(count: int) -> list[str]:
    """``count`` colours from light to dark (viridis), e.g. for successive outer steps."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["viridis"]
    return [to_hex(cmap(0.15 + 0.7 * i / max(1, count - 1))) for i in range(count)]


def schedules_png(curves: Sequence[Curve], title: str | None = None) -> bytes:
    """One panel per hyperparameter (lr, momentum, weight_decay), one line per curve."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(HYPERPARAMETERS), figsize=(13, 3.6), layout="constrained")
    labelled = False
    for curve in curves:
        label, schedule = curve[0], curve[1]
        style = {"lw": 1.2, **(curve[2] if len(curve) > 2 else {})}
        num_steps, values = segment_values(schedule)
        shapes = shapes_of(schedule)
        for ax, name in zip(axes, HYPERPARAMETERS):
            xs, ys = step_curve(values[name], num_steps, shapes[name])
            ax.plot(xs, ys, label=label if ax is axes[0] else None, **style)
        labelled |= label is not None
    for ax, name in zip(axes, HYPERPARAMETERS):
        ax.set_title(name)
        ax.set_xlabel("inner step")
    if labelled:
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _png(fig)


def signs_png(steps: Sequence[Mapping]) -> bytes:
    """sign(mean hypergradient) per learned segment (rows) and outer step (columns) of
    per-step records (``outer_step``, ``hypergradients``): red +, blue -, white 0."""
    import numpy as np

    plt = pyplot()
    rows = [(name, k) for name, values in (steps[0]["hypergradients"].items() if steps else ())
            for k in range(len(values))]
    grid = np.array([[np.sign(s["hypergradients"][n][k]) for s in steps] for n, k in rows]) \
        if rows else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(steps) + 2), max(2, 0.35 * len(rows) + 1)))
    ax.imshow(grid, cmap="bwr", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(rows)), [f"{n}[{k}]" for n, k in rows])
    ax.set_xticks(range(len(steps)), [str(s["outer_step"] + 1) for s in steps])
    ax.set_xlabel("outer step")
    ax.set_title("hypergradient signs (red +, blue -)")
    return _png(fig)


def val_loss_png(steps: Sequence[Mapping]) -> bytes:
    """Validation loss at the horizon per outer step: the mean over replicas as a line, each
    replica (``replica_val_losses``) as a dot."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([s["outer_step"] + 1 for s in steps], [s["val_loss"] for s in steps], "o-",
            label="mean over replicas")
    for s in steps:
        losses = s.get("replica_val_losses") or []
        if len(losses) > 1:
            ax.plot([s["outer_step"] + 1] * len(losses), losses, ".", color="gray")
    ax.set_xlabel("outer step")
    ax.set_ylabel("validation loss at the horizon")
    ax.set_title("validation loss")
    return _png(fig)

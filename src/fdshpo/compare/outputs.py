"""A comparison's outputs: tables, JSON, plots, and the journal an interrupted run resumes from.

:func:`write_outputs` writes into a folder (and copies to an artifact store when given):

    comparison.csv          one line per (method, seed, budget)
    comparison.md           a table per budget N (mean ± std over seeds, min, max, retrained
                            picks that diverged or collapsed to about chance, validation loss,
                            spend, wall time), the per-seed accuracies, the search space,
                            cost model and settings
    comparison.json         everything (``summary``: one entry per (budget_runs, method) with
                            ``method`` and ``test_accuracy_mean``; ``runs``: every pick)
    accuracy_vs_budget.png  mean test accuracy ± std against N, one line per method
    schedules.png           each method's pick at the largest budget (first seed), over the
                            final job's steps

:class:`Journal` is ``partial.jsonl``: a header line (settings and cost model) and one line per
finished (seed, method); a rerun with the same settings reuses the cost model and those runs.

:func:`read_cost_model` reads the cost model a comparison was charged with back from its
``comparison.json``, a recorded ``bench/results/*-summary.json`` or ``partial.jsonl``, so a
rerun charges every method the same prices (``fdshpo compare --cost-model FILE``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..baselines.budget import CostModel
from ..report.plots import pyplot, schedules_png
from .comparison import Comparison, MethodRun

OUTPUT_FILES = ("comparison.csv", "comparison.md", "comparison.json", "accuracy_vs_budget.png",
                "schedules.png")
CSV_FIELDS = ("method", "seed", "budget_runs", "budget", "cost", "seconds", "val_loss",
              "test_accuracy", "test_loss", "retrain_diverged", "retrain_collapsed")


def to_csv(comparison: Comparison) -> str:
    """One line per method, seed and budget (the fields of ``CSV_FIELDS``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in comparison.rows:
        writer.writerow([getattr(r, f) for f in CSV_FIELDS])
    return out.getvalue()


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def to_markdown(comparison: Comparison) -> str:
    """A table per budget (the best mean in bold), per-seed accuracies, space, prices, settings."""
    summary = comparison.summary()
    sps = comparison.cost_model.seconds_per_step
    seeds = list(dict.fromkeys(r.seed for r in comparison.rows))
    warning = comparison.price_warning()
    lines = [f"**{warning}**", ""] if warning else []
    for n in comparison.budget_runs:
        entries = [s for s in summary if s["budget_runs"] == n]
        if not entries:
            continue
        best = max(s["test_accuracy_mean"] for s in entries)
        lines += [f"Budget: {n:g} final-job runs ({entries[0]['budget']:.0f} plain-step "
                  f"equivalents)", "",
                  "| method | test accuracy (mean ± std) | min | max | retrain diverged | "
                  "retrain collapsed | val loss | spent (plain steps) | wall s | wall/modelled |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in entries:
            mark = "**" if s["test_accuracy_mean"] == best else ""
            ratio = s["seconds_mean"] / (s["cost_mean"] * sps) if s["cost_mean"] else float("nan")
            lines.append(
                f"| {s['method']} | {mark}{_pct(s['test_accuracy_mean'])} ± "
                f"{_pct(s['test_accuracy_std'])}{mark} | {_pct(s['test_accuracy_min'])} | "
                f"{_pct(s['test_accuracy_max'])} | {s['retrain_diverged']}/{s['seeds']} "
                f"({100 * s['retrain_divergence_rate']:.0f}%) | {s['retrain_collapsed']}/"
                f"{s['seeds']} | {s['val_loss_mean']:.4f} | "
                f"{s['cost_mean']:.0f} | {s['seconds_mean']:.1f} | {ratio:.2f} |")
        lines.append("")
    lines += ["Test accuracy (%) per seed:", "",
              "| method | budget runs | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|" + "---|" * len(seeds)]
    for n in comparison.budget_runs:
        for m in comparison.methods():
            accs = {r.seed: r.test_accuracy for r in comparison.rows
                    if r.method == m and r.budget_runs == n}
            if accs:
                lines.append(f"| {m} | {n:g} | " + " | ".join(
                    _pct(accs[s]) if s in accs else "" for s in seeds) + " |")
    cm = comparison.cost_model
    reverse = (f", reverse-mode step {cm.engines.reverse_step:.2f} + "
               f"{cm.engines.recompute:.2f} per recomputed step" if cm.engines.has_reverse
               else "")
    lines += ["", wall_line(comparison), "",
              f"Search space: {json.dumps(comparison.space.to_dict())}",
              f"Cost model (plain-step equivalents; plain step = {1e3 * sps:.3f} ms): FDS step "
              f"= {cm.engines.forward_base:.2f} + {cm.engines.per_tangent:.3f} x live tangents"
              f"{reverse}, eval "
              f"{cm.per_eval_example:.2e}/example, val gradient {cm.per_grad_example:.2e}/example"
              + (f" ({cm.note})" if cm.note else ""),
              f"Settings: {json.dumps(comparison.settings, default=str)}", ""]
    if warning:
        lines += [f"**{warning}**", ""]
    return "\n".join(lines)


def wall_line(comparison: Comparison) -> str:
    """Each method's wall/modelled ratio over its searches (1: charged as it ran)."""
    return "Wall/modelled (search wall time over its charged cost): " + ", ".join(
        f"{m} {r:.2f}" for m, r in comparison.wall_ratios().items())


def plot_accuracy_vs_budget(comparison: Comparison, path: Path) -> None:
    """Mean test accuracy (± std over seeds) of each method's pick against the budget N."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    summary = comparison.summary()
    for m in comparison.methods():
        entries = [s for s in summary if s["method"] == m]
        ax.errorbar([s["budget_runs"] for s in entries],
                    [100 * s["test_accuracy_mean"] for s in entries],
                    yerr=[100 * s["test_accuracy_std"] for s in entries], marker="o",
                    capsize=3, label=m)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(comparison.budget_runs), [f"{n:g}" for n in comparison.budget_runs])
    ax.set_xlabel("budget (runs of the final training job)")
    ax.set_ylabel("test accuracy after the final job (%)")
    ax.set_title("Final-model accuracy against tuning budget (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_schedules(comparison: Comparison, path: Path) -> None:
    """Each method's pick at the largest budget on the first seed, stretched to the final job:
    lr, momentum and weight decay per step (:func:`fdshpo.report.plots.schedules_png`)."""
    seed, budget = comparison.rows[0].seed, comparison.budget_runs[-1]
    final = comparison.space.final_steps
    curves = [(r.method, r.schedule.stretched(final)) for r in comparison.rows
              if r.seed == seed and r.budget_runs == budget]
    path.write_bytes(schedules_png(curves, title=f"Schedules picked with a budget of "
                                                  f"{budget:g} runs (seed {seed}), over the "
                                                  "final job"))


def write_outputs(comparison: Comparison, out_dir: str | Path, store=None,
                  prefix: str = "comparison") -> list[Path]:
    """Write the files of ``OUTPUT_FILES`` into ``out_dir``; copy them to ``store`` (an
    ArtifactStore) under ``prefix/`` when given. Returns the local paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.csv").write_text(to_csv(comparison))
    (out / "comparison.md").write_text(to_markdown(comparison))
    (out / "comparison.json").write_text(json.dumps(comparison.to_dict(), indent=1,
                                                    default=str))
    plot_accuracy_vs_budget(comparison, out / "accuracy_vs_budget.png")
    plot_schedules(comparison, out / "schedules.png")
    paths = [out / name for name in OUTPUT_FILES]
    if store is not None:
        for p in paths:
            store.put_file(f"{prefix}/{p.name}", p, overwrite=True)
    return paths


def _comparable(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in ("methods", "seeds")}


def read_cost_model(path: str | Path) -> CostModel:
    """The ``cost_model`` of a comparison's ``comparison.json``, a recorded ``*-summary.json``
    or the header line of ``partial.jsonl``. Raises ValueError saying what the file lacks."""
    path = Path(path)
    expected = ("give the comparison.json, partial.jsonl or bench/results/*-summary.json of the "
                "comparison whose prices to reuse")
    if not path.is_file():
        raise ValueError(f"{path} is not a file; {expected}")
    text = path.read_text()
    if path.suffix == ".jsonl":
        text = text.split("\n", 1)[0]
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not JSON; {expected}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cost_model"), dict):
        raise ValueError(f"{path} has no cost_model object; {expected}")
    try:
        return CostModel.from_dict(data["cost_model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: its cost_model is not valid: {exc}") from None


class Journal:
    """``partial.jsonl``: the settings and cost model of a comparison, then one finished
    (seed, method) run per line, flushed as it finishes, so an interrupted run keeps them.

    ``Journal(path, settings)`` opens an existing journal (its runs and cost model become
    ``runs`` and ``cost_model``) or remembers the settings for a new one. Raises ValueError when
    the existing journal was written with other settings (methods and seeds may differ).
    """

    def __init__(self, path: str | Path, settings: dict) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings, default=str))
        self.cost_model: CostModel | None = None
        self.runs: list[MethodRun] = []
        if not self.path.exists():
            return
        lines = []
        text = self.path.read_text().splitlines()
        for i, line in enumerate(text):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(text) - 1:
                    raise ValueError(f"{self.path} line {i + 1} is not JSON; delete the file "
                                     "to start over") from None
                # a line torn by the interruption: drop it (that run is redone)
                self.path.write_text("".join(line + "\n" for line in text[:-1]))
        if not lines or "settings" not in lines[0]:
            raise ValueError(f"{self.path} is not a comparison journal; delete it or choose "
                             "another output folder")
        if _comparable(lines[0]["settings"]) != _comparable(self.settings):
            raise ValueError(f"{self.path} holds a comparison with other settings; delete it "
                             "to start over, or choose another output folder")
        self.cost_model = CostModel.from_dict(lines[0]["cost_model"])
        self.runs = [MethodRun.from_dict(line) for line in lines[1:]]

    def start(self, cost_model: CostModel) -> None:
        """Begin a new journal with the settings and ``cost_model`` (when none exists yet)."""
        if self.cost_model is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"settings": self.settings,
                                             "cost_model": cost_model.to_dict()}) + "\n")
            self.cost_model = cost_model

    def append(self, run: MethodRun) -> None:
        """Record one finished (seed, method) run."""
        with self.path.open("a") as f:
            f.write(json.dumps(run.to_dict(), default=str) + "\n")
        self.runs.append(run)


__all__ = ["CSV_FIELDS", "OUTPUT_FILES", "Journal", "plot_accuracy_vs_budget",
           "plot_schedules", "read_cost_model", "to_csv", "to_markdown", "write_outputs"]

"""Head-to-head comparison of FDS and the baselines at equal budget.

For every seed s (the problem's seed: validation splits, initialisation and batch order; and the
samplers' seed):

    cost model   measured once, in this process, unless given (:func:`fdshpo.budget.calibrate`)
    budget       given, or FDS's planned spend: outer_steps * (FDS inner run + val gradient)
    method m     METHODS[m](problem_s, space, budget, cost model, seed=s) -> MethodResult
    score        retrain from scratch on the full training set with m's schedule (stretched to
                 ``retrain_steps``), test accuracy (:func:`fdshpo.evaluate.retrain_and_test`);
                 also for m's incumbents at each fraction f of the budget (accuracy vs budget)

A retraining run that diverges scores chance accuracy (1 / classes) and is flagged. Retraining
is evaluation, not search, and is not charged to any method's budget.

:func:`write_outputs` writes ``comparison.csv`` (one row per method and seed),
``comparison.md`` (summary table: mean and spread over seeds), ``comparison.json`` (everything,
schedules included), ``accuracy_vs_budget.png`` and ``schedules.png`` into a local folder, and
copies them to an artifact store when one is given.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .baselines import METHODS, MethodResult, SearchSpace, get_method
from .baselines.fds import initial_schedule
from .budget import CostModel, calibrate, fds_run_ledger
from .evaluate import retrain_and_test
from .outer import SignOptimizer
from .problem import ClassificationProblem
from .schedule import Schedule

OUTPUT_FILES = ("comparison.csv", "comparison.md", "comparison.json", "accuracy_vs_budget.png",
                "schedules.png")


@dataclass(frozen=True)
class Row:
    """One method on one seed: its search spend and the retrained network's test score."""

    method: str
    seed: int
    test_accuracy: float
    test_loss: float
    val_loss: float
    cost: float
    budget: float
    seconds: float
    wall_steps: float
    retrain_diverged: bool
    curve: tuple[tuple[float, float], ...]  # (fraction of budget, test accuracy)
    result: MethodResult

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "result"}
        d["curve"] = [list(p) for p in self.curve]
        d["result"] = self.result.to_dict()
        return d


@dataclass(frozen=True)
class Comparison:
    """All rows, the space, the cost model and the budget the methods shared."""

    rows: tuple[Row, ...]
    space: SearchSpace
    cost_model: CostModel
    budgets: dict[int, float]
    settings: dict = field(default_factory=dict)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    def summary(self) -> list[dict]:
        """Per method: mean, standard deviation, min and max test accuracy over seeds, etc."""
        out = []
        for m in self.methods():
            rows = [r for r in self.rows if r.method == m]
            acc = [r.test_accuracy for r in rows]
            out.append({
                "method": m, "seeds": len(rows),
                "test_accuracy_mean": statistics.fmean(acc),
                "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "test_accuracy_min": min(acc), "test_accuracy_max": max(acc),
                "val_loss_mean": statistics.fmean(r.val_loss for r in rows),
                "cost_mean": statistics.fmean(r.cost for r in rows),
                "budget": statistics.fmean(r.budget for r in rows),
                "seconds_mean": statistics.fmean(r.seconds for r in rows),
                "wall_steps_mean": statistics.fmean(r.wall_steps for r in rows),
                "retrain_diverged": sum(r.retrain_diverged for r in rows)})
        return out

    def to_dict(self) -> dict:
        return {"space": self.space.to_dict(), "cost_model": self.cost_model.to_dict(),
                "budgets": {str(k): v for k, v in self.budgets.items()},
                "settings": dict(self.settings), "summary": self.summary(),
                "rows": [r.to_dict() for r in self.rows]}


def fds_planned_cost(problem: ClassificationProblem, space: SearchSpace, cost_model: CostModel,
                     outer_steps: int = 10, replicas: int = 1,
                     step_sizes: Mapping[str, float] | None = None) -> float:
    """What FDS would spend running all ``outer_steps`` outer steps (the default budget)."""
    learn = SignOptimizer(step_sizes).learn
    n_val = round(problem.val_fraction * len(problem.dataset.train_images))
    run = fds_run_ledger(initial_schedule(space), learn, n_val)
    return outer_steps * replicas * run.cost(cost_model)


def _score(problem: ClassificationProblem, schedule: Schedule, retrain_steps: int | None,
           cache: dict) -> tuple[float, float, bool]:
    key = schedule.to_json()
    if key not in cache:
        try:
            ev = retrain_and_test(problem, schedule, retrain_steps)
            cache[key] = (ev.test_accuracy, ev.test_loss, False)
        except FloatingPointError:
            cache[key] = (1.0 / problem.dataset.num_classes, math.inf, True)
    return cache[key]


def compare(
    problem: ClassificationProblem,
    space: SearchSpace,
    methods: Sequence[str] = ("fds", "random", "tpe", "hd", "cosine"),
    *,
    seeds: Sequence[int] = (0,),
    budget: float | None = None,
    cost_model: CostModel | None = None,
    retrain_steps: int | None = None,
    budget_fractions: Sequence[float] = (1.0,),
    method_options: Mapping[str, Mapping] | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> Comparison:
    """Run ``methods`` on each seed at equal budget and score them (see module docstring).

    Args:
        problem: dataset, network and batching; its seed is replaced by each of ``seeds``.
        space: horizon, segments and bounds shared by every method.
        budget: plain-step equivalents per method and seed; default FDS's planned spend
            (``method_options["fds"]`` may set ``outer_steps``, ``replicas``, ``step_sizes``).
        cost_model: the price list; measured here when None.
        retrain_steps: horizon of the final retraining (default: the space's horizon).
        budget_fractions: where on the budget axis incumbents are retrained and scored.
        method_options: extra keyword arguments per method name.
        on_row: called with each finished row (progress, partial results).

    Raises ValueError for an unknown method, no seeds, a bad fraction, or no budget when FDS
    is not among the methods.
    """
    for m in methods:
        get_method(m)
    if not methods:
        raise ValueError(f"give at least one method; known methods are {sorted(METHODS)}")
    if not seeds:
        raise ValueError("give at least one seed")
    if any(not 0 < f <= 1 for f in budget_fractions):
        raise ValueError(f"budget fractions must be in (0, 1], got {list(budget_fractions)}")
    options = {m: dict(o) for m, o in (method_options or {}).items()}
    fds_opts = {k: v for k, v in options.get("fds", {}).items()
                if k in ("outer_steps", "replicas", "step_sizes")}
    if budget is None and "fds" not in methods:
        raise ValueError("without FDS among the methods there is no default budget; give one "
                         "(plain-SGD-step equivalents, e.g. --budget 20000)")
    cost_model = cost_model or calibrate(replace(problem, seed=seeds[0]),
                                         initial_schedule(space))
    rows, budgets = [], {}
    fractions = sorted(set(budget_fractions) | {1.0})
    for seed in seeds:
        seeded = replace(problem, seed=seed)
        b = budget if budget is not None else fds_planned_cost(seeded, space, cost_model,
                                                               **fds_opts)
        budgets[seed] = b
        cache: dict = {}
        for m in methods:
            result = get_method(m)(seeded, space, b, cost_model, seed=seed, **options.get(m, {}))
            curve = []
            for f in fractions:
                paid = [i for i in result.incumbents if i.cost <= f * b + 1e-9]
                if paid:
                    acc, _, _ = _score(seeded, paid[-1].schedule, retrain_steps, cache)
                    curve.append((f, acc))
            acc, loss, diverged = _score(seeded, result.schedule, retrain_steps, cache)
            row = Row(m, seed, acc, loss, result.val_loss, result.cost, b, result.ledger.seconds,
                      result.ledger.wall_steps(cost_model), diverged, tuple(curve), result)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    settings = {"methods": list(methods), "seeds": list(seeds), "retrain_steps":
                retrain_steps or space.num_steps, "budget_fractions": fractions,
                "method_options": options, "network": problem.network,
                "dataset": problem.dataset.name, "batch_size": problem.batch_size,
                "val_fraction": problem.val_fraction, "device": str(problem.device)}
    return Comparison(tuple(rows), space, cost_model, budgets, settings)


# -- outputs ------------------------------------------------------------------------------------
CSV_FIELDS = ("method", "seed", "test_accuracy", "test_loss", "val_loss", "cost", "budget",
              "seconds", "wall_steps", "retrain_diverged")


def to_csv(comparison: Comparison) -> str:
    """One line per method and seed (the fields of ``CSV_FIELDS``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in comparison.rows:
        writer.writerow([getattr(r, f) for f in CSV_FIELDS])
    return out.getvalue()


def to_markdown(comparison: Comparison) -> str:
    """Summary table (mean ± std over seeds), per-seed accuracies and the shared settings."""
    seeds = list(dict.fromkeys(r.seed for r in comparison.rows))
    lines = ["| method | test accuracy (mean ± std) | min | max | val loss | cost (plain steps) "
             "| wall s | wall/modelled | retrain diverged |",
             "|---|---|---|---|---|---|---|---|---|"]
    best = max(s["test_accuracy_mean"] for s in comparison.summary())
    for s in comparison.summary():
        mark = "**" if s["test_accuracy_mean"] == best else ""
        ratio = s["wall_steps_mean"] / s["cost_mean"] if s["cost_mean"] else float("nan")
        lines.append(
            f"| {s['method']} | {mark}{100 * s['test_accuracy_mean']:.2f} ± "
            f"{100 * s['test_accuracy_std']:.2f}{mark} | {100 * s['test_accuracy_min']:.2f} | "
            f"{100 * s['test_accuracy_max']:.2f} | {s['val_loss_mean']:.4f} | "
            f"{s['cost_mean']:.0f} / {s['budget']:.0f} | {s['seconds_mean']:.1f} | "
            f"{ratio:.2f} | {s['retrain_diverged']} |")
    lines += ["", "Test accuracy (%) per seed:", "",
              "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for m in comparison.methods():
        accs = {r.seed: r.test_accuracy for r in comparison.rows if r.method == m}
        lines.append(f"| {m} | " + " | ".join(f"{100 * accs[s]:.2f}" for s in seeds) + " |")
    cm = comparison.cost_model
    lines += ["", f"Search space: {json.dumps(comparison.space.to_dict())}",
              f"Cost model (plain-step equivalents; plain step = {1e3 * cm.seconds_per_step:.3f}"
              f" ms): FDS step = {cm.fds_base:.2f} + {cm.per_tangent:.3f} x live tangents, "
              f"eval {cm.per_eval_example:.2e}/example, val gradient "
              f"{cm.per_grad_example:.2e}/example",
              f"Settings: {json.dumps(comparison.settings, default=str)}", ""]
    return "\n".join(lines)


def plot_accuracy_vs_budget(comparison: Comparison, path: Path) -> None:
    """Mean (over seeds) test accuracy of each method's incumbent against budget fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in comparison.methods():
        points: dict[float, list[float]] = {}
        for r in comparison.rows:
            if r.method == m:
                for f, acc in r.curve:
                    points.setdefault(f, []).append(acc)
        xs = sorted(points)
        ax.plot(xs, [100 * statistics.fmean(points[x]) for x in xs], marker="o", label=m)
    ax.set_xlabel("fraction of the budget spent")
    ax.set_ylabel("test accuracy after retraining (%)")
    ax.set_title("Test accuracy against budget (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_schedules(comparison: Comparison, path: Path) -> None:
    """The schedule each method picked on the first seed: lr, momentum, weight decay per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = comparison.rows[0].seed
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for r in comparison.rows:
        if r.seed != seed:
            continue
        s = r.result.schedule
        steps = range(s.num_steps)
        per_step = [s.at(t) for t in steps]
        for ax, name in zip(axes, ("lr", "momentum", "weight_decay")):
            ax.plot(steps, [v[name] for v in per_step], label=r.method, drawstyle="steps-post")
    for ax, name in zip(axes, ("learning rate", "momentum", "weight decay")):
        ax.set_title(name)
        ax.set_xlabel("inner step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Schedules picked at equal budget (seed {seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


__all__ = ["OUTPUT_FILES", "Comparison", "Row", "compare", "fds_planned_cost",
           "plot_accuracy_vs_budget", "plot_schedules", "to_csv", "to_markdown",
           "write_outputs"]

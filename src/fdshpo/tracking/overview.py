"""``fdshpo report --experiments``: one static page over every experiment, from the run index.

Per experiment: its runs with their key metrics (the validation loss of the outer step whose
schedule each run returned, and which step; the engine that ran) in a table that sorts on a
click of a column header (a few lines of inline script), the learned schedules of the best and
of the latest run plotted together (PNG inlined), and a link from each complete run to its
own HTML report. The page lives at the store's root (``overview.html``), so each link is the
run report's key (``experiments/<experiment>/runs/<run>/report.html``) and resolves in a
local store's folder, a mirror of the bucket, or a static website served from it. Nothing is
fetched from elsewhere.
"""

from __future__ import annotations

import html

from ..report.run_page import page, png_img
from ..report.text import selection_text, value_text
from ..store.base import ArtifactStore, StoreError
from ..store.layout import RunLayout
from .index import IndexDamage
from .query import Query
from .reader import experiments_overview, latest_run, list_runs

RUNS_STYLE = "table.runs td { white-space: nowrap; } table.runs th { cursor: pointer; }"
COLUMNS = ("run", "status", "started", "finished", "outer steps",
           "val loss (from outer step)", "engine", "parent")

SORT_SCRIPT = """
document.querySelectorAll("table.runs").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.title = "sort"; th.style.cursor = "pointer";
    th.addEventListener("click", function () {
      var ascending = th.dataset.order !== "asc";
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = ascending ? "asc" : "desc";
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.v, y = b.cells[column].dataset.v;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _cell(value, link: str | None = None, text: str | None = None) -> str:
    """A table cell showing ``text`` (default: ``value`` as text) that sorts by ``value``."""
    sort_value = "" if value is None else (repr(float(value)) if isinstance(value, (int, float))
                                           and not isinstance(value, bool) else str(value))
    text = html.escape(value_text(value) if text is None else text)
    if link:
        text = f'<a href="{html.escape(link)}">{text}</a>'
    return f'<td data-v="{html.escape(sort_value)}">{text}</td>'


def _runs_table(experiment: str, rows: list[dict]) -> str:
    metrics = sorted({m for row in rows for m in row["metrics"]})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (*COLUMNS, *metrics))
    body = []
    for row in rows:
        link = RunLayout(experiment, row["run_id"]).report if row.get("has_report") else None
        cells = [_cell(row["run_id"], link), _cell(row["status"]), _cell(row.get("started")),
                 _cell(row.get("finished")), _cell(row["outer_steps"]),
                 _cell(row.get("selected_val_loss", row.get("final_val_loss")),
                       text=selection_text(row, digits=6)), _cell(row.get("engine")),
                 _cell(row.get("parent"))]
        cells += [_cell(row["metrics"].get(m)) for m in metrics]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="runs"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _schedules(store: ArtifactStore, summary: dict) -> str:
    """The best and the latest run's schedules in one plot (or why there is none)."""
    from ..report.plots import schedules_png

    curves = []
    exp = summary["experiment"]
    if summary["best_run"]:
        record = store.get_json(RunLayout(exp, summary["best_run"]).record)
        same = summary["best_run"] == summary["latest"]
        curves.append((f"{'best and latest' if same else 'best'}: {summary['best_run']} "
                       f"({summary['best_by']} {value_text(summary['best'])})", record["schedule"],
                       {"color": "C0", "lw": 2}))
    if summary["latest"] and summary["latest"] != summary["best_run"]:
        pointer = latest_run(store, exp)
        if pointer and pointer.get("schedule"):
            curves.append((f"latest: {summary['latest']}", pointer["schedule"],
                           {"color": "C1", "lw": 1.5, "ls": "--"}))
    if not curves:
        return "<p>No complete run yet: no learned schedule to plot.</p>"
    png = schedules_png(curves, f"{exp}: learned schedules")
    return f"<figure>{png_img(f'{exp} schedules', png)}</figure>"


def build_overview(store: ArtifactStore, query: Query | None = None,
                   best: str = "-test_accuracy") -> tuple[str, list[IndexDamage]]:
    """(the overview page, problems met in the index). ``query`` filters the runs shown;
    ``best`` is the sort key that picks each experiment's best run (``-KEY``: highest)."""
    query = query or Query()
    summaries, problems = experiments_overview(store, best, query)
    sections = []
    for summary in summaries:
        exp = summary["experiment"]
        listing = list_runs(store, Query(exp, query.status, query.since, query.where,
                                         "-started"))
        problems += listing.problems
        try:
            plot = _schedules(store, summary)
        except StoreError as exc:
            plot = f"<p>Cannot plot the schedules: {html.escape(str(exc))}</p>"
        counts = ", ".join(f"{summary[s]} {s}" for s in ("complete", "incomplete", "failed")
                           if summary[s])
        sections.append(
            f'<section id="{html.escape(exp)}"><h2>{html.escape(exp)}</h2>'
            f"<p>{summary['runs']} run(s): {counts}. Best by {html.escape(summary['best_by'])}:"
            f" {html.escape(value_text(summary['best_run']) or 'none')}; latest (retune warm "
            f"start): {html.escape(value_text(summary['latest']) or 'none')}.</p>"
            f"{plot}{_runs_table(exp, listing.rows)}</section>")
    contents = "".join(f'<li><a href="#{html.escape(s["experiment"])}">'
                       f'{html.escape(s["experiment"])}</a></li>' for s in summaries)
    body = (f"<h1>fdshpo experiments</h1><p>Store: {html.escape(store.uri)}. Click a column "
            f"header to sort.</p><ul>{contents}</ul>" + "".join(sections)
            + ("" if summaries else "<p>No runs in the index.</p>"))
    return page("fdshpo experiments", body, SORT_SCRIPT, RUNS_STYLE), problems

"""A comparison of FDS with every baseline at equal budget, and its outputs.

    comparison   compare(): every method at every budget and seed, retrained and tested
    outputs      the journal that makes a comparison resumable, its tables, plots and files
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "compare": "comparison", "Comparison": "comparison", "Row": "comparison",
    "pick_at": "comparison", "DEFAULT_METHODS": "comparison", "BUDGET_RUNS": "comparison",
    "write_outputs": "outputs", "to_markdown": "outputs", "Journal": "outputs",
})

"""What a person reads: plots, a run's HTML page and the text of numbers (no torch).

    plots      schedules, losses and hypergradients as PNG figures (matplotlib)
    run_page   a run's report.html
    text       numbers, schedules and accuracies as text
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"build_report": "run_page"})

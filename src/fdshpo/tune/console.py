"""Rendering the outer loop's progress on a console (the core itself prints nothing).

:class:`ConsoleProgress` is a ``progress`` callback for :func:`fdshpo.tune.loop.tune`: a tqdm bar
over the inner steps of the current replica (drawn only when stderr is a terminal) and one
summary line per outer step, which always prints.
"""

from __future__ import annotations

import sys

from ..report.text import engine_summary, sign_string
from .loop import InnerProgress, OuterProgress
from .state import OuterStepRecord


def outer_step_line(record: OuterStepRecord, outer_steps: int | None = None) -> str:
    """One line summing up an outer step: its validation loss, signs, seconds, state."""
    of = f"/{outer_steps}" if outer_steps else ""
    if record.diverged_replicas:
        what = (f"inner run diverged (replica(s) {record.diverged_replicas}), learning rates "
                "lowered")
    else:
        what = (f"val loss {record.val_loss:.4f}, hypergradient signs "
                f"{sign_string(record.hypergradients)}")
    return (f"outer step {record.outer_step + 1}{of}: {what}, {record.seconds:.1f}s"
            + (f", {engine_summary(record.engine)}" if record.engine else "")
            + (", converged" if record.converged else ""))


class ConsoleProgress:
    """A ``progress`` callback: a bar over inner steps and a line per outer step (stderr).

    Use as a context manager (or call :meth:`close`) so the bar is removed at the end.
    """

    def __init__(self, file=None) -> None:
        self.file = file or sys.stderr
        self._bar = None
        self._current: tuple[int, int] | None = None

    def __call__(self, event: InnerProgress | OuterProgress) -> None:
        if isinstance(event, OuterProgress):
            line = outer_step_line(event.record, event.outer_steps)
            if self._bar is not None:
                self._bar.write(line, file=self.file)
            else:
                print(line, file=self.file, flush=True)
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            # disable=None: drawn only on a terminal; bar.write lines always print
            self._bar = tqdm(total=event.num_steps, unit="step", leave=False, mininterval=0.5,
                             disable=None, file=self.file)
        if (event.outer_step, event.replica) != self._current:  # a new (or resumed) inner run
            self._current = (event.outer_step, event.replica)
            self._bar.reset(total=event.num_steps)
            self._bar.update(event.step - 1)
            self._bar.set_description(
                f"outer step {event.outer_step + 1}/{event.outer_steps}"
                + (f" replica {event.replica + 1}/{event.replicas}" if event.replicas > 1
                   else ""))
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._current = None, None

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

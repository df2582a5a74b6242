"""Where each artifact of an experiment and run lives in a store (one place for every key).

    experiments/<experiment>/latest.json                 pointer: newest successful run + schedule
                                                         (moves only forward: moves_forward)
    experiments/<experiment>/runs/<run>/
        config.json                                      the run's configuration (no credentials)
        steps/<outer:04d>.json                           per outer step: schedule used,
                                                         hypergradients, val loss, step sizes, time
        replicas/<outer:04d>/<replica:03d>.json          one replica's hypergradients + val loss
        checkpoints/outer/<outer:04d>.json               TuneState after outer step <outer>
        checkpoints/inner/<outer:04d>/<replica:03d>/<step:08d>.pt
                                                         inner run state (theta, v, Z, C, step)
        schedule.json                                    the final learned schedule
        metrics.json                                     final metrics (e.g. test accuracy)
        plots/<name>.png                                 schedule, hypergradient signs, val loss
        report.html                                      self-contained HTML report
        events/<stamp>-<started|failed>.json             each start and each recorded failure
        lease/<generation:08d>.json                      who writes the run (fdshpo.store.lease)
        run.json                                         the run record: written LAST, with the
                                                         sha256 of every artifact above; a run
                                                         without it is not complete
    index/<experiment>/entries/<run>.<kind>.json         run index: write-once entries ...
    index/<experiment>/segments/<level>-<digest>.json    ... compacted into segments
    (fdshpo.tracking.index)
    index/<experiment>/compactor/<generation:08d>.json   lease of the compaction in progress
    overview.html                                        `fdshpo report --experiments`

Experiment and run names are single key parts (letters, digits, ``._=+@-``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .base import check_name

EXPERIMENTS = "experiments"
INDEX = "index"
OVERVIEW = "overview.html"


def experiment_prefix(experiment: str) -> str:
    return f"{EXPERIMENTS}/{check_name(experiment, 'experiment name')}"


def latest_pointer(experiment: str) -> str:
    return f"{experiment_prefix(experiment)}/latest.json"


def is_pointer(key: str) -> bool:
    """Keys written with ``overwrite=True`` (they move): ``latest.json`` pointers, the
    rolling inner checkpoints and the experiments overview page. Every other artifact is
    write-once."""
    return (key.startswith(f"{EXPERIMENTS}/") and key.endswith("/latest.json")
            and key.count("/") == 2) or "/checkpoints/inner/" in key or key == OVERVIEW


def pointer_order(pointer: Mapping) -> tuple[str, str]:
    """Where a ``latest.json`` pointer stands: (finished, run id), compared as strings (ISO
    UTC times sort in time order)."""
    return str(pointer.get("finished") or ""), str(pointer.get("run_id") or "")


def moves_forward(current, new: Mapping) -> bool:
    """The rule for moving a ``latest.json`` pointer from ``current`` (its JSON; None when absent
    or damaged) to ``new``: only to a strictly newer (finished, run id). A pointer that is not
    an object is damaged and replaced."""
    return not isinstance(current, Mapping) or pointer_order(new) > pointer_order(current)


def index_prefix(experiment: str | None = None) -> str:
    """``index/`` or ``index/<experiment>/``."""
    return f"{INDEX}/{check_name(experiment, 'experiment name')}/" if experiment else f"{INDEX}/"


def index_entry(experiment: str, name: str) -> str:
    return f"{index_prefix(experiment)}entries/{check_name(name, 'index entry name')}"


def index_segment(experiment: str, name: str) -> str:
    return f"{index_prefix(experiment)}segments/{check_name(name, 'index segment name')}"


def compactor_lease(experiment: str) -> str:
    return f"{index_prefix(experiment)}compactor/"


def is_live_state(key: str) -> bool:
    """Keys that describe writers at work rather than results: a run's lease generations
    (``runs/<run>/lease/``), the index compactor's lease (``index/<e>/compactor/``) and the
    rolling inner checkpoints. A restore never copies them into another store."""
    parts = key.split("/")
    return (parse_run_key(key) is not None and parts[4] == "lease") \
        or (len(parts) >= 3 and parts[0] == INDEX and parts[2] == "compactor") \
        or "/checkpoints/inner/" in key


@dataclass(frozen=True)
class RunLayout:
    """The keys of one run (see the module docstring)."""

    experiment: str
    run_id: str

    def __post_init__(self) -> None:
        check_name(self.experiment, "experiment name")
        check_name(self.run_id, "run id")

    @property
    def prefix(self) -> str:
        return f"{experiment_prefix(self.experiment)}/runs/{self.run_id}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    @property
    def config(self) -> str:
        return self.key("config.json")

    @property
    def record(self) -> str:
        return self.key("run.json")

    @property
    def schedule(self) -> str:
        return self.key("schedule.json")

    @property
    def metrics(self) -> str:
        return self.key("metrics.json")

    @property
    def report(self) -> str:
        return self.key("report.html")

    def plot(self, name: str) -> str:
        return self.key(f"plots/{check_name(name, 'plot name')}.png")

    def step(self, outer_step: int) -> str:
        return self.key(f"steps/{outer_step:04d}.json")

    def replica_result(self, outer_step: int, replica: int) -> str:
        return self.key(f"replicas/{outer_step:04d}/{replica:03d}.json")

    def outer_checkpoint(self, outer_step: int) -> str:
        return self.key(f"checkpoints/outer/{outer_step:04d}.json")

    @property
    def outer_checkpoints(self) -> str:
        return self.key("checkpoints/outer/")

    def event(self, name: str) -> str:
        return self.key(f"events/{check_name(name, 'event name')}.json")

    @property
    def events(self) -> str:
        return self.key("events/")

    @property
    def lease(self) -> str:
        return self.key("lease/")

    def inner_checkpoints(self, outer_step: int, replica: int) -> str:
        return self.key(f"checkpoints/inner/{outer_step:04d}/{replica:03d}/")

    def inner_checkpoint(self, outer_step: int, replica: int, step: int) -> str:
        return f"{self.inner_checkpoints(outer_step, replica)}{step:08d}.pt"


def parse_run_key(key: str) -> tuple[str, str] | None:
    """(experiment, run) of a key inside a run, else None."""
    parts = key.split("/")
    if len(parts) >= 5 and parts[0] == EXPERIMENTS and parts[2] == "runs":
        return parts[1], parts[3]
    return None

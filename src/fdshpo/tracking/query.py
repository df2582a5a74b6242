"""Which runs to list or compare: filters, sort order and a page size over run summaries.

A run summary is the plain dict an index entry holds (:mod:`fdshpo.tracking.index`): ``experiment``,
``run_id``, ``status``, ``started``, ``finished``, ``outer_steps``, ``final_val_loss`` (the
last outer step's), ``selected_outer_step`` and ``selected_val_loss`` (the outer step whose
schedule the run returned, 1-based, and its validation loss:
:mod:`fdshpo.tracking.selection`), ``engine`` (the engine that ran), ``config_sha256``,
``parent`` and ``metrics`` (``{name: value}``). A key names one of those fields or a metric
(``test_accuracy`` or ``metrics.test_accuracy``).

    query = Query.from_options(experiment="demo", status="complete", since="2026-11-01",
                               where=["test_accuracy>0.9"], sort="-test_accuracy", limit=10)
    query.matches(summary); query.sort_key(summary)

``--where`` takes conditions ``KEY OP VALUE`` (OP one of ``> >= < <= = == !=``) joined by ``,``
or ``and``; VALUE is a number, a word or a quoted string. A run without the key fails the
condition. ``--sort KEY`` sorts ascending, ``-KEY`` descending; runs without the key come last.
Bad input raises :class:`QueryError` saying what to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import UserError

STATUSES = ("complete", "incomplete", "failed")
FIELDS = ("experiment", "run_id", "status", "started", "finished", "outer_steps",
          "final_val_loss", "selected_outer_step", "selected_val_loss", "engine",
          "config_sha256", "parent")
DATE_FIELDS = ("started", "finished")
DEFAULT_SORT = ("experiment", "run_id")

_OPS = (">=", "<=", "==", "!=", ">", "<", "=")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(?![A-Za-z0-9_:\-])")
_WORD = re.compile(r"[A-Za-z0-9_.:+\-]+")
_JOIN = re.compile(r"(,|and\b)\s*", re.IGNORECASE)
MISSING = object()


class QueryError(UserError):
    """A filter, sort key or date the user has to change."""


def value_of(summary: Mapping, key: str):
    """The summary's value for ``key`` (a field, a metric, or ``metrics.NAME``), or MISSING."""
    if key in FIELDS:
        value = summary.get(key)
    else:
        name = key[len("metrics."):] if key.startswith("metrics.") else key
        value = (summary.get("metrics") or {}).get(name, MISSING)
    return MISSING if value is None else value


def known_keys(metric_names: Iterable[str]) -> list[str]:
    return [*FIELDS, *sorted(set(metric_names))]


def check_keys(keys: Iterable[tuple[str, str]], metric_names: Iterable[str]) -> None:
    """Raise QueryError for a key (``(key, option)`` pairs) that is neither a field nor a
    metric of any run seen."""
    metric_names = set(metric_names)
    for key, option in keys:
        name = key[len("metrics."):] if key.startswith("metrics.") else key
        if key not in FIELDS and name not in metric_names:
            raise QueryError(f"unknown key {key!r} in {option}; known keys: "
                             + ", ".join(known_keys(metric_names)))


def parse_date(text: str, option: str = "--since") -> str:
    """``YYYY-MM-DD[THH:MM[:SS]][Z]`` (UTC) as ``YYYY-MM-DDTHH:MM:SSZ``, the stored form."""
    cleaned = text.strip().rstrip("Z").replace(" ", "T")
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(cleaned, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")
    raise QueryError(f"cannot read {option} {text!r} as a date: use YYYY-MM-DD, "
                     "YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS (UTC)")


@dataclass(frozen=True)
class Condition:
    """``key op value`` from ``--where``."""

    key: str
    op: str
    value: float | str

    def holds(self, summary: Mapping) -> bool:
        actual = value_of(summary, self.key)
        if actual is MISSING:
            return False
        expected = self.value
        if isinstance(expected, float):
            if isinstance(actual, bool) or not isinstance(actual, (int, float)):
                return False
            actual = float(actual)
        else:
            actual = str(actual)
        if self.op in ("=", "=="):
            return actual == expected
        if self.op == "!=":
            return actual != expected
        return {">": actual > expected, ">=": actual >= expected,
                "<": actual < expected, "<=": actual <= expected}[self.op]


def _where_error(text: str, pos: int, expected: str) -> QueryError:
    found = repr(text[pos]) if pos < len(text) else "the end"
    return QueryError(f"cannot parse --where {text!r} at character {pos + 1}: expected "
                      f"{expected}, found {found}\n  {text}\n  {' ' * pos}^")


def parse_where(text: str) -> list[Condition]:
    """The conditions of one ``--where`` string (see the module docstring)."""
    conditions, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        key = _KEY.match(text, pos)
        if not key:
            raise _where_error(text, pos, "a key such as test_accuracy")
        pos = key.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
        op = next((o for o in _OPS if text.startswith(o, pos)), None)
        if op is None:
            raise _where_error(text, pos, "an operator (> >= < <= = == !=)")
        pos += len(op)
        while pos < len(text) and text[pos].isspace():
            pos += 1
        value: float | str
        if pos < len(text) and text[pos] in "'\"":
            end = text.find(text[pos], pos + 1)
            if end < 0:
                raise _where_error(text, len(text), f"a closing {text[pos]}")
            value, pos = text[pos + 1:end], end + 1
        elif number := _NUMBER.match(text, pos):
            value, pos = float(number.group()), number.end()
        elif word := _WORD.match(text, pos):
            value, pos = word.group(), word.end()
        else:
            raise _where_error(text, pos, f"a value after {op!r}")
        name = key.group()
        if name in DATE_FIELDS and isinstance(value, str):
            value = parse_date(value, f"--where {name}")
        if name == "status" and value not in STATUSES:
            raise QueryError(f"--where status{op}{value}: a status is one of "
                             + ", ".join(STATUSES))
        conditions.append(Condition(name, op, value))
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return conditions
        join = _JOIN.match(text, pos)
        if not join:
            raise _where_error(text, pos, "',' or 'and' before the next condition")
        pos = join.end()


class Reversed:
    """Reverses the order of the wrapped value (``-KEY`` sorts, bounded max-heaps)."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __lt__(self, other: Reversed) -> bool:
        return other.value < self.value

    def __eq__(self, other) -> bool:
        return isinstance(other, Reversed) and self.value == other.value


def _sortable(value) -> tuple:
    """Numbers before strings, so that mixed types still compare."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


@dataclass(frozen=True)
class Query:
    """Filters, order and page size for ``runs list`` / ``runs compare`` / ``experiments``."""

    experiment: str | None = None
    status: str | None = None
    since: str | None = None
    where: tuple[Condition, ...] = ()
    sort: str | None = None
    limit: int | None = None
    keys: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @classmethod
    def from_options(cls, experiment: str | None = None, status: str | None = None,
                     since: str | None = None, where: Iterable[str] = (),
                     sort: str | None = None, limit: int | None = None) -> Query:
        """Parse and check the command-line options; raises QueryError saying what to change."""
        if status is not None and status not in STATUSES:
            raise QueryError(f"--status {status!r}: use one of " + ", ".join(STATUSES))
        if limit is not None and limit < 1:
            raise QueryError(f"--limit must be at least 1, got {limit}")
        if sort is not None and not _KEY.fullmatch(sort.lstrip("-")):
            raise QueryError(f"--sort {sort!r}: give a key, or -KEY for descending order")
        conditions = tuple(c for text in where for c in parse_where(text))
        keys = tuple((c.key, "--where") for c in conditions) + (
            ((sort.lstrip("-"), "--sort"),) if sort else ())
        return cls(experiment, status, parse_date(since) if since else None, conditions, sort,
                   limit, keys)

    def matches(self, summary: Mapping) -> bool:
        if self.experiment is not None and summary.get("experiment") != self.experiment:
            return False
        if self.status is not None and summary.get("status") != self.status:
            return False
        if self.since is not None:
            started = summary.get("started") or summary.get("finished")
            if not started or started < self.since:
                return False
        return all(c.holds(summary) for c in self.where)

    def sort_key(self, summary: Mapping) -> tuple:
        """Ascending order of the page: the sort key (missing last), then experiment, run id."""
        tie = (str(summary.get("experiment", "")), str(summary.get("run_id", "")))
        if not self.sort:
            return tie
        value = value_of(summary, self.sort.lstrip("-"))
        if value is MISSING:
            return (1, None, tie)
        key = _sortable(value)
        return (0, Reversed(key) if self.sort.startswith("-") else key, tie)

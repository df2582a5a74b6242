"""Reading one mapping of a YAML document against the dataclass it becomes.

:class:`Section` refuses unknown keys, gives an absent (or null) key the dataclass field's
default (so defaults are written once, in the dataclasses of :mod:`fdshpo.config.experiment`),
treats a
field without a default as required, and checks each value's type and range, raising
:class:`~fdshpo.errors.UserError` with the dotted key, what it got and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any

from ..errors import UserError
from ..schedule import HYPERPARAMETERS


class Section:
    """One mapping of the document, read against its dataclass.

    Unknown keys are refused; a key that is absent (or null) takes the dataclass field's
    default; a field without a default is required. Readers check the type and range and raise
    :class:`UserError` naming the dotted key.
    """

    def __init__(self, value: Any, name: str, cls) -> None:
        self.fields = {f.name: f for f in fields(cls)}
        self.prefix = f"{name}." if name else ""
        if not isinstance(value, Mapping):
            raise UserError(f"{name or 'the config'} must be a mapping, got "
                            f"{type(value).__name__}")
        unknown = sorted(str(k) for k in value if k not in self.fields)
        if unknown:
            where = f"in {name!r}" if name else "at the top level"
            raise UserError(f"unknown key(s) {unknown} {where}; allowed keys: "
                            f"{', '.join(self.fields)}")
        self.value = value

    def get(self, key: str) -> Any:
        """The raw value, or None when absent."""
        return self.value.get(key)

    def default(self, key: str) -> Any:
        """The dataclass field's default; a field without one is a required key."""
        f = self.fields[key]
        if f.default is not MISSING:
            return f.default
        if f.default_factory is not MISSING:
            return f.default_factory()
        raise UserError(f"missing required key {self.prefix + key!r}")

    def section(self, key: str, cls, shorthand: str | None = None) -> Section:
        """A nested section; ``shorthand`` names the key a plain string stands for."""
        value = self.get(key)
        if value is None:
            if self.fields[key].default_factory is MISSING:
                allowed = ", ".join(f.name for f in fields(cls))
                raise UserError(f"missing required section {self.prefix + key!r} "
                                f"(keys: {allowed})")
            value = {}
        if shorthand and isinstance(value, str):
            value = {shorthand: value}
        return Section(value, self.prefix + key, cls)

    def string(self, key: str) -> str | None:
        value = self.get(key)
        if value is None:
            return self.default(key)
        if not isinstance(value, str) or not value:
            raise UserError(f"{self.prefix}{key} must be a non-empty string, got {value!r}")
        return value

    def integer(self, key: str, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        value = self.get(key)
        if value is None:
            return self.default(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{self.prefix}{key} must be an integer, got {value!r}")
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            rng = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise UserError(f"{self.prefix}{key} must be {rng}, got {value}")
        return value

    def number(self, key: str, low: float, high: float, open_interval: bool = False) -> float:
        """A float in (low, high] (or (low, high) with ``open_interval``)."""
        value = self.get(key)
        if value is None:
            return self.default(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{self.prefix}{key} must be a number, got {value!r}")
        value = float(value)
        ok = (low < value < high) if open_interval else (low < value <= high)
        if not ok:
            rng = f"in ({low}, {high})" if open_interval else f"in ({low}, {high}]"
            raise UserError(f"{self.prefix}{key} must be {rng}, got {value}")
        return value

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if value is None:
            return self.default(key)
        if not isinstance(value, bool):
            raise UserError(f"{self.prefix}{key} must be true or false, got {value!r}")
        return value

    def choice(self, key: str, allowed) -> str:
        """One of ``allowed``."""
        value = self.get(key)
        if value is None:
            return self.default(key)
        if value not in allowed:
            raise UserError(f"{self.prefix}{key} must be one of {list(allowed)}, got {value!r}")
        return value

    def names(self, key: str) -> list[str]:
        """A list of hyperparameter names, in canonical order."""
        value = self.get(key)
        if value is None:
            return self.default(key)
        if not isinstance(value, list) or any(n not in HYPERPARAMETERS for n in value):
            raise UserError(f"{self.prefix}{key} must be a list of hyperparameter names from "
                            f"{list(HYPERPARAMETERS)}, got {value!r}")
        return [n for n in HYPERPARAMETERS if n in value]

    def per_name(self, key: str, kind: str, fill: bool = True) -> dict:
        """A ``{hyperparameter: value}`` mapping in canonical order. With ``fill`` every name
        is present (names left out take the default's value); without it, the names given are
        the names returned (the default only when the key is absent)."""
        default = self.default(key)
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, Mapping):
            raise UserError(f"{self.prefix}{key} must map hyperparameter names "
                            f"({', '.join(HYPERPARAMETERS)}) to values, got {value!r}")
        given = {}
        for name, v in value.items():
            if name not in HYPERPARAMETERS:
                raise UserError(f"{self.prefix}{key}: unknown hyperparameter {name!r}; allowed: "
                                f"{', '.join(HYPERPARAMETERS)}")
            if kind == "int":
                if isinstance(v, bool) or not isinstance(v, int):
                    raise UserError(f"{self.prefix}{key}.{name} must be an integer, got {v!r}")
                given[name] = v
            else:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise UserError(f"{self.prefix}{key}.{name} must be a number, got {v!r}")
                given[name] = float(v)
        merged = {**default, **given} if fill else given
        return {n: merged[n] for n in HYPERPARAMETERS if n in merged}

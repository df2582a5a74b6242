"""Public names of a package imported from its modules on first use (PEP 562).

A package's ``__init__`` says ``__getattr__, __dir__ = lazy_exports(__name__, {name: module})``:
``package.name`` then imports ``package.module`` only when first read, so importing a package
for one light module (the torch-free CLI reads the store through ``fdshpo.tracking``) does not
pay for its heavy ones.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package``, whose public ``name`` lives in the
    submodule ``names[name]`` (relative to the package)."""

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__

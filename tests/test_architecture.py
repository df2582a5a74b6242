"""The package's layout is its architecture: read from the imports themselves.

Every module-level import inside ``src/fdshpo`` is an edge, those under ``if TYPE_CHECKING:``
included (a circle of type names is still a circle of concepts); the tests assert no circle, no
edge from a lower layer to a higher one, a leaf of shared engine types that imports no sibling
at run time, no reach into another module's private names, and a short top level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fdshpo"

#: Lower numbers are lower layers; a module may import from its own layer or below.
LAYERS = {
    "_version": 0, "_lazy": 0, "errors": 0, "reproducible": 0, "segments": 0, "shapes": 0,
    "seeds": 0, "schedule": 0,
    "data": 1, "models": 1, "store": 1,
    "engines": 2, "report": 2,
    "tune": 3,
    "baselines": 4, "tracking": 4,
    "compare": 5, "config": 5,
    "commands": 6, "cli": 6, "demo": 6, "image": 6, "__main__": 6, "__init__": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def module_imports(path: Path, typing: bool = True) -> list[tuple[str, list[str]]]:
    """(module imported, names imported from it) for each module-level import of fdshpo's;
    ``typing=False`` leaves out those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    package = here if is_package(path) else here[:-1]
    edges = []
    nodes = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            nodes += node.body if typing else []
        else:
            nodes.append(node)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("fdshpo."):
                target = node.module[len("fdshpo."):]
            else:
                continue
            names = [a.name for a in node.names]
            if not node.module:  # from . import x: each name may be a submodule
                for name in names:
                    sub = ".".join(filter(None, [target, name]))
                    if (SRC / Path(*sub.split("."))).with_suffix(".py").exists():
                        edges.append((sub, []))
                    else:
                        edges.append((target, [name]))
            else:
                edges.append((target, names))
        elif isinstance(node, ast.Import):
            edges += [(a.name[len("fdshpo."):], []) for a in node.names
                      if a.name.startswith("fdshpo.")]
    return edges


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}
GRAPH = {name: module_imports(path) for name, path in MODULES.items()}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_top_level_name_has_a_layer():
    tops = {m.split(".")[0] for m in MODULES}
    assert tops <= set(LAYERS), f"give these a layer in this test: {sorted(tops - set(LAYERS))}"


def test_no_import_circle():
    edges = {m: {t for t, _ in GRAPH[m] if t in MODULES and t != m} for m in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_no_import_from_a_lower_layer_to_a_higher_one():
    wrong = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
             for m in MODULES if m != "__init__" for t, _ in GRAPH[m]
             if t in MODULES and layer(t) > layer(m)]
    assert not wrong, "\n".join(wrong)


def test_the_engines_shared_types_import_no_sibling():
    runtime = module_imports(MODULES["engines.base"], typing=False)
    siblings = [t for t, _ in runtime if t.startswith("engines.")]
    assert siblings == []


def test_no_module_imports_another_modules_private_names():
    private = [f"{m} imports {name} from {t}" for m in MODULES for t, names in GRAPH[m]
               if t != m for name in names if name.startswith("_") and not name.startswith("__")]
    assert not private, "\n".join(private)


def test_the_top_level_stays_short():
    loose = sorted(p.name for p in SRC.glob("*.py"))
    assert len(loose) <= 20, loose

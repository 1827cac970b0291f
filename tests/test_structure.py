"""The shape of the source tree: packages layered (nothing imports upward, lazy imports
included), modules small enough to read, and no module reaching into another's private
names (a package-private module such as ``dinet._io`` may be imported; a ``_name`` defined
inside another module may not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dinet"
MODULES = sorted(SRC.rglob("*.py"))
MAX_LINES = 400
#: dinet's top-level modules and packages, lowest first: each may import only earlier ones.
LAYERS = ("_cache", "_io", "_memory", "_compiled", "_triton", "distributed", "points",
          "neighbors", "nn", "fields", "models", "convert", "data", "tasks", "bench", "cli",
          "__main__")


def _package_dir(module: Path, node: ast.ImportFrom) -> Path | None:
    """The folder an ``ImportFrom`` resolves to, for imports inside dinet (else None)."""
    if node.level == 0:
        if not (node.module or "").startswith("dinet"):
            return None
        base, parts = SRC.parent, node.module.split(".")
    else:
        base, parts = module.parent, (node.module or "").split(".") if node.module else []
        for _ in range(node.level - 1):
            base = base.parent
    return base.joinpath(*parts)


def _dinet_imports():
    """``(module, node, folder)`` for every ``from ... import`` of dinet in dinet, lazy
    ones included; ``folder`` is where the import resolves."""
    for module in MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _package_dir(module, node)
                if target is not None:
                    yield module, node, target


def _layer(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def test_the_tree_is_found():
    assert len(MODULES) > 50 and (SRC / "__init__.py") in MODULES
    assert {_layer(m) for m in MODULES} - {"__init__"} == set(LAYERS)


def test_nothing_imports_upward():
    upward = []
    for module, node, target in _dinet_imports():
        here = _layer(module)
        targets = [target] if node.module else [target / a.name for a in node.names]
        for path in targets:
            parts = path.relative_to(SRC).parts if path.is_relative_to(SRC) else ()
            there = parts[0].removesuffix(".py") if parts else None
            if here != "__init__" and there and there != here and (
                    LAYERS.index(there) > LAYERS.index(here)):
                upward.append(f"{module.relative_to(SRC)} imports {there}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_is_at_most_400_lines(module):
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module.relative_to(SRC)} has {lines} lines: split it"


def test_no_private_name_is_imported_from_another_module():
    found = []
    for module, node, target in _dinet_imports():
        for alias in node.names:
            name = alias.name
            is_module = (target / f"{name}.py").exists() or (target / name).is_dir()
            if name.startswith("_") and not name.startswith("__") and not is_module:
                found.append(f"{module.relative_to(SRC)}: from {node.module} import {name}")
    assert not found, "private names imported across modules:\n" + "\n".join(found)

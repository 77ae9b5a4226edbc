"""Imports point one way (DESIGN.md, Layers) and the pure core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "kernel_ext"

# Each layer may import from itself and the layers listed for it (plus kernel_ext.errors).
ALLOWED = {
    "store": {"store"},
    "persistence": {"store", "persistence"},
    "engine": {"store", "persistence", "engine"},
    "functions": {"store", "persistence", "engine", "functions"},
    "client": {"store", "persistence", "engine", "functions", "client"},
}
PURE_FORBIDDEN = {
    "sqlite3",
    "asyncio",
    "threading",
    "socket",
    "IPython",
    "ipywidgets",
    "anywidget",
    "websockets",
    "pandas",
    "os",
    "subprocess",
    "jupyter_server",
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_point_one_way(layer):
    for path in (ROOT / layer).rglob("*.py"):
        for name in imports_of(path):
            if not name.startswith("kernel_ext.") or name == "kernel_ext.errors":
                continue
            target = name.split(".")[1]
            assert target in ALLOWED[layer], f"{path.relative_to(ROOT)} imports {name}"


def test_pure_core_does_no_io():
    for path in (ROOT / "store").rglob("*.py"):
        for name in imports_of(path):
            assert name.split(".")[0] not in PURE_FORBIDDEN, f"{path.name} imports {name}"

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
    "client": {
        "store",
        "persistence",
        "engine",
        "functions",
        "client",
        "sync.messages",
        "sync.client_protocol",
    },
    # The server takes a ready backend: it opens no store itself (`__main__` does).
    "sync": {
        "store",
        "engine",
        "functions",
        "sync",
        "magics.cells",
        "magics.parsing",
    },
    # The jupyter-server extension opens the shared store and mounts the sync server.
    "server_ext": {"store", "persistence", "engine", "functions", "sync", "server_ext"},
    "magics": {"store", "functions", "client", "magics", "sync.background"},
}
# Sans-I/O modules outside `store`: they take decoded input and return output, nothing else.
PURE_MODULES = [
    "sync/messages.py",
    "sync/outcomes.py",
    "sync/protocol.py",
    "sync/http.py",
    "sync/client_protocol.py",
]
PURE_IMPORTS = {"kernel_ext.errors"} | {
    "kernel_ext." + m.removesuffix(".py").replace("/", ".") for m in PURE_MODULES
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
            parts = name.split(".")
            allowed = ALLOWED[layer]
            ok = parts[1] in allowed or ".".join(parts[1:3]) in allowed
            assert ok, f"{path.relative_to(ROOT)} imports {name}"


def test_pure_core_does_no_io():
    for path in (ROOT / "store").rglob("*.py"):
        for name in imports_of(path):
            assert name.split(".")[0] not in PURE_FORBIDDEN, f"{path.name} imports {name}"


def modules_imported_by(path: Path) -> set[str]:
    """Like `imports_of`, with `from package import module` resolved to `package.module`."""
    names = imports_of(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "kernel_ext.sync":
            names.discard(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("module", PURE_MODULES)
def test_sans_io_modules_do_no_io(module):
    for name in modules_imported_by(ROOT / module):
        top = name.split(".")[0]
        assert top not in PURE_FORBIDDEN | {"tornado", "jwt"}, f"{module} imports {name}"
        if name.startswith("kernel_ext.") and not name.startswith("kernel_ext.store."):
            assert name in PURE_IMPORTS, f"{module} imports {name}"

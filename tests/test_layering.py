"""Imports point one way (DESIGN.md, Layers) and the pure core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "kernel_ext"
WIDGETS = ROOT.parent / "widgets"

# Each layer may import from itself and the layers listed for it (plus kernel_ext.errors).
# "" is the package's top level (`import kernel_ext`, `from kernel_ext import X`): the public
# API, which sits above every layer (it imports `client`), so only the adapters on top use it.
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
    },
    # The jupyter-server extension opens the shared store and mounts the sync server.
    "server_ext": {"store", "persistence", "engine", "functions", "sync", "server_ext"},
    "magics": {"", "store", "functions", "client", "magics", "sync.background"},
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


def layer_of(name: str) -> tuple[str, str] | None:
    """`kernel_ext.a.b.c` -> `("a", "a.b")`; `kernel_ext` -> `("", "")`; None for other
    packages and for `kernel_ext.errors` (every layer may raise the library's errors)."""
    if name == "kernel_ext":
        return "", ""
    if not name.startswith("kernel_ext.") or name == "kernel_ext.errors":
        return None
    parts = name.split(".")
    return parts[1], ".".join(parts[1:3])


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_point_one_way(layer):
    for path in (ROOT / layer).rglob("*.py"):
        for name in imports_of(path):
            found = layer_of(name)
            if found is None:
                continue
            allowed = ALLOWED[layer]
            assert found[0] in allowed or found[1] in allowed, (
                f"{path.relative_to(ROOT)} imports {name}"
            )


def test_layering_sees_bare_package_imports(tmp_path):
    """`import kernel_ext` and `from kernel_ext import connect` count as imports of the top
    level, so a lower layer cannot reach `client` through the package's re-exports."""
    module = tmp_path / "m.py"
    module.write_text("import kernel_ext\nfrom kernel_ext import connect\n")
    assert {layer_of(n) for n in imports_of(module)} == {("", "")}


def test_widgets_use_the_public_client_api_only():
    """widgets/ may import `kernel_ext`'s top-level names (and `kernel_ext.errors`), never a
    module inside it: what they need is re-exported from kernel_ext/__init__.py."""
    import kernel_ext

    for path in WIDGETS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "kernel_ext":
                missing = {a.name for a in node.names} - set(kernel_ext.__all__)
                assert not missing, f"widgets/{path.name} imports non-public {missing}"
        for name in imports_of(path):
            if name.startswith("kernel_ext."):
                assert name == "kernel_ext.errors", f"widgets/{path.name} imports {name}"


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

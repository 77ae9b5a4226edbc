"""The magics' tests share one real IPython shell fixture and one way to run a cell."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

#: Variables that would point `%load_ext kernel_ext` at another store than the embedded one.
STORE_VARIABLES = ("CONVEX_URL", "CONVEX_JUPYTER_URL", "CONVEX_ADMIN_KEY", "CONVEX_JUPYTER_STORE")


@pytest.fixture
def ip(tmp_path, monkeypatch) -> Iterator[InteractiveShell]:
    """A shell with the extension loaded on an embedded store in `tmp_path`."""
    monkeypatch.chdir(tmp_path)
    for name in STORE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kernel_ext")
    yield shell
    shell.run_line_magic("unload_ext", "kernel_ext")
    InteractiveShell.clear_instance()

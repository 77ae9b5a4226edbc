"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

from kernel_ext import ConvexClient

README = Path(__file__).parent.parent / "README.md"
#: The README's example PostgreSQL URL: the test runs that block on the session's cluster.
EXAMPLE_PG_URL = "postgresql://analyst:password@db.internal:5432/notes"


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys, pg_url):
    text = README.read_text()
    assert EXAMPLE_PG_URL in text
    blocks = re.findall(r"```python\n(.*?)```", text.replace(EXAMPLE_PG_URL, pg_url), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    finally:  # the examples' clients, before the test's database goes away
        for value in namespace.values():
            if isinstance(value, ConvexClient):
                value.close()
    out = capsys.readouterr().out
    assert "['write the docs']" in out

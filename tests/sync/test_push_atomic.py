"""A rejected push (a module that does not compile, or fails when imported) leaves the
server's pushed folder as it was: later pushes and the functions pushed before still work."""

from __future__ import annotations

from pathlib import Path

import pytest

import kernel_ext
from kernel_ext.errors import FunctionError

GOOD = "from kernel_ext import query\n\n@query\ndef ping(ctx):\n    return 'pong'\n"
LATER = "from kernel_ext import query\n\n@query\ndef pong(ctx):\n    return 'ping'\n"


def _folder(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    folder.mkdir()
    for file, text in files.items():
        (folder / file).write_text(text)
    return folder


def _pushed(server) -> dict[str, str]:
    pushed = server.db.parent / "pushed"
    return {
        p.relative_to(pushed).as_posix(): p.read_text()
        for p in pushed.rglob("*.py")
        if "__pycache__" not in p.parts
    }


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("from kernel_ext import query\n\n@query\ndef broken(ctx):\n    return (\n", "SyntaxError"),
        ("raise RuntimeError('fails on import')\n", "fails on import"),
    ],
)
def test_a_rejected_push_leaves_the_pushed_folder_as_it_was(server_factory, tmp_path, bad, error):
    server = server_factory()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        assert "extra:ping" in owner.load_functions(_folder(tmp_path, "a", {"extra.py": GOOD}))
        before = _pushed(server)
        with pytest.raises(FunctionError, match=error):
            owner.load_functions(_folder(tmp_path, "b", {"broken.py": bad, "extra.py": LATER}))
        assert _pushed(server) == before
        assert owner.query("extra:ping") == "pong"
        # The next push is not blocked by the rejected one.
        defined = owner.load_functions(_folder(tmp_path, "c", {"later.py": LATER}))
        assert {"extra:ping", "later:pong"} <= set(defined)
        assert owner.query("later:pong") == "ping"
        assert set(_pushed(server)) == {"extra.py", "later.py"}

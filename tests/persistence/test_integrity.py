"""Damaged, truncated, foreign and read-only store files: each is refused or reported with a
`PersistenceError` that names the file and says what to do, and none is overwritten."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import kernel_ext
from kernel_ext.errors import PersistenceError

REPO = Path(__file__).resolve().parents[2]
PAGE = 4096


def _make_store(path: Path, rows: int = 3000) -> bytes:
    """A closed store file with `rows` documents in table `t`; returns its bytes."""
    with kernel_ext.connect(path) as client:
        client.backend.store.mutate(
            lambda txn: [txn.insert("t", {"n": i, "text": "x" * 200}) for i in range(rows)]
        )
    assert not Path(str(path) + "-wal").exists()  # checkpointed on close
    return path.read_bytes()


def _read_all(path: Path) -> list[object]:
    with kernel_ext.connect(path) as client:
        return client.backend.store.read(lambda txn: txn.query("t").collect())[0]


# -- truncated and foreign files ---------------------------------------------------------


@pytest.mark.parametrize("keep", [1024, PAGE, 10 * PAGE])
def test_a_truncated_store_is_refused_and_left_unchanged(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "store.db"
    truncated = _make_store(path)[:keep]
    path.write_bytes(truncated)
    with pytest.raises(PersistenceError, match=rf"{path} is truncated: it is {keep:,} bytes"):
        kernel_ext.connect(path)
    assert path.read_bytes() == truncated
    assert not Path(str(path) + "-wal").exists()


@pytest.mark.parametrize("content", [b"SQLit", b"hello, world\n" * 20])
def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(content)
    with pytest.raises(PersistenceError, match=rf"{path} is not a store: .*not an SQLite"):
        kernel_ext.connect(path)
    assert path.read_bytes() == content


def test_a_store_truncated_to_nothing_opens_empty_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _make_store(path)
    path.write_bytes(b"")
    with pytest.warns(UserWarning, match=rf"{path} exists but is empty"):
        client = kernel_ext.connect(path)
    client.close()


def test_another_sqlite_database_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(PersistenceError, match=r"is an SQLite database but not a store"):
        kernel_ext.connect(path)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["users"]


# -- damaged pages -----------------------------------------------------------------------


def test_a_damaged_page_is_a_persistence_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    data = bytearray(_make_store(path))
    pages = len(data) // PAGE
    assert pages > 40
    # Damage a page of the documents (written after the catalog's first pages).
    for page in range(pages // 2, pages // 2 + 3):
        data[page * PAGE : (page + 1) * PAGE] = b"\xa5" * PAGE
    path.write_bytes(bytes(data))
    with pytest.raises(PersistenceError, match=rf"{path} failed: .*the file is damaged") as info:
        _read_all(path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert ".recover" in str(info.value)


# -- read-only files and folders ---------------------------------------------------------

PROBE = """
import json, sys, kernel_ext
try:
    kernel_ext.connect(sys.argv[1]).close()
    print(json.dumps(None))
except BaseException as exc:
    print(json.dumps([type(exc).__module__ + "." + type(exc).__name__, str(exc)]))
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder outside pytest's private temporary folder (so that a process without root's
    file permission override can reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="convex-readonly-"))
    folder.chmod(0o755)
    yield folder
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            Path(root, name).chmod(0o755)
    shutil.rmtree(folder)


def _open_without_write_permission(path: Path) -> object:
    """Open `path` in a child process that file permissions apply to (as root: without the
    capabilities that override them); returns `[error class, message]` or None."""
    command = [sys.executable, "-c", PROBE, str(path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        drop = "-dac_override,-dac_read_search,-fowner,-linux_immutable"
        command = [setpriv, "--inh-caps=-all", f"--bounding-set={drop}", *command]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=env, timeout=60, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_a_store_in_a_read_only_folder_is_a_persistence_error(shared_dir: Path) -> None:
    folder = shared_dir / "data"
    folder.mkdir()
    path = folder / "store.db"
    _make_store(path, rows=10)
    for p in folder.iterdir():
        p.chmod(0o444)
    folder.chmod(0o555)
    outcome = _open_without_write_permission(path)
    assert outcome is not None, "opened a store it cannot write"
    kind, message = outcome  # type: ignore[misc]
    assert kind == "kernel_ext.errors.PersistenceError", message
    assert str(path) in message and "cannot be written" in message and "writable" in message


def test_a_new_store_in_a_read_only_folder_is_a_persistence_error(shared_dir: Path) -> None:
    folder = shared_dir / "data"
    folder.mkdir()
    folder.chmod(0o555)
    path = folder / "store.db"
    outcome = _open_without_write_permission(path)
    assert outcome is not None, "created a store in a read-only folder"
    kind, message = outcome  # type: ignore[misc]
    assert kind == "kernel_ext.errors.PersistenceError", message
    assert str(path) in message and "cannot be written" in message
    assert not path.exists()

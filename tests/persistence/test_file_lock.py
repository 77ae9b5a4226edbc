"""One process owns a store file: the lock is on the database file itself, so neither
deleting the `.lock` file beside it nor opening the store through a hard link gets a second
process in (each would let two processes write one store and lose increments)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import kernel_ext
from kernel_ext.errors import StoreLocked

REPO = Path(__file__).resolve().parents[2]
OWNER = """
import sys, kernel_ext
client = kernel_ext.connect(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()  # until the parent closes stdin
client.close()
"""


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process that has the store `store.db` open until the test ends."""
    path = tmp_path / "store.db"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline() == "ready\n"  # bounded: EOF if the child dies
        yield path, proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_a_second_process_is_refused_and_told_the_owner(owner) -> None:
    path, proc = owner
    with pytest.raises(StoreLocked, match=f"in use by process {proc.pid}"):
        kernel_ext.connect(path)


def test_deleting_the_lock_file_does_not_unlock_the_store(owner) -> None:
    path, _ = owner
    Path(str(path) + ".lock").unlink()
    with pytest.raises(StoreLocked, match=r"is in use by (another process|process \d+)"):
        kernel_ext.connect(path)


def test_a_hard_link_to_the_store_is_the_same_locked_store(owner, tmp_path: Path) -> None:
    path, _ = owner
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "alias.db"
    os.link(path, link)
    with pytest.raises(StoreLocked, match=f"The store {link} is in use"):
        kernel_ext.connect(link)


def test_the_same_file_twice_in_one_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with kernel_ext.connect(path):
        os.link(path, tmp_path / "alias.db")
        with pytest.raises(StoreLocked, match="in use by this process"):
            kernel_ext.connect(tmp_path / "alias.db")


def test_the_lock_is_released_on_close(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    kernel_ext.connect(path).close()
    os.link(path, tmp_path / "alias.db")
    kernel_ext.connect(tmp_path / "alias.db").close()
    kernel_ext.connect(path).close()

"""Store URLs: one place turns a URL into a store; a URL of no store is refused (never taken
for a file path) and no message shows its password."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kernel_ext
from kernel_ext.engine.store import Store
from kernel_ext.errors import PersistenceError, StoreError
from kernel_ext.persistence.base import CommitRecord, IndexChange
from kernel_ext.persistence.sqlite import CommitRecord as SqliteCommitRecord
from kernel_ext.persistence.sqlite import IndexChange as SqliteIndexChange
from kernel_ext.persistence.urls import (
    describe_url,
    mask_password,
    open_persistence,
    parse_store_url,
)

REPO = Path(__file__).resolve().parents[2]
PG_URL = "postgresql://u:secret@127.0.0.1/db"
#: Nothing listens on port 1: connecting is refused at once.
REFUSED_URL = "postgresql://u:secret@127.0.0.1:1/db"


def test_records_are_shared_by_the_seam_and_sqlite():
    assert CommitRecord is SqliteCommitRecord
    assert IndexChange is SqliteIndexChange


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("memory", "memory", None),
        (":memory:", "memory", None),
        ("sqlite:///:memory:", "memory", None),
        ("sqlite:///rel/store.db", "sqlite", "rel/store.db"),
        ("store.db", "sqlite", "store.db"),
        (Path("sub") / "store.db", "sqlite", "sub/store.db"),
    ],
)
def test_parse_relative_and_memory(tmp_path, monkeypatch, url, kind, path):
    monkeypatch.chdir(tmp_path)
    location = parse_store_url(url)
    assert location.kind == kind
    assert location.path == (None if path is None else tmp_path / path)
    assert list(tmp_path.iterdir()) == []  # parsing creates nothing


def test_parse_absolute_sqlite_url(tmp_path):
    location = parse_store_url(f"sqlite:///{tmp_path}/store.db")  # four slashes
    assert (location.kind, location.path) == ("sqlite", tmp_path / "store.db")


@pytest.mark.parametrize("url", [PG_URL, "postgres://u:secret@h:5432/db", "POSTGRESQL://u@h/db"])
def test_postgresql_is_recognised(url):
    location = parse_store_url(url)
    assert location.kind == "postgresql"
    assert "secret" not in repr(location)
    assert "secret" not in location.describe()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (PG_URL, "postgresql://u:***@127.0.0.1/db"),
        (
            "postgres://u:p@ss/w#rd@h:5432/db?sslmode=require",
            "postgres://u:***@h:5432/db?sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://h/db?user=u&password=secret&x=1",
            "postgresql://h/db?user=u&password=***&x=1",
        ),
        ("http://u:secret@h:3210", "http://u:***@h:3210"),
        ("/tmp/a:b@c", "/tmp/a:b@c"),
    ],
)
def test_mask_password(url, masked):
    assert mask_password(url) == masked


def test_describe_url(tmp_path):
    assert describe_url("memory") == "memory"
    assert describe_url(tmp_path / "s.db") == str(tmp_path / "s.db")
    assert describe_url(f"sqlite:///{tmp_path}/s.db") == str(tmp_path / "s.db")
    assert describe_url(PG_URL) == "postgresql://u:***@127.0.0.1/db"
    assert describe_url("mysql://u:secret@h/db") == "mysql://u:***@h/db"


def test_unreachable_postgresql_is_named_without_its_password(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(PersistenceError, match=r"PostgreSQL at 127\.0\.0\.1:1") as info:
        open_persistence(REFUSED_URL)
    assert time.monotonic() - started < 10  # an error within seconds, never a hang
    assert "database 'db'" in str(info.value) and "refused" in str(info.value)
    assert "secret" not in str(info.value) and "secret" not in repr(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "ftp://h/x.db", "file:///tmp/x.db"])
def test_unknown_scheme_is_refused_listing_what_is_accepted(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PersistenceError, match="not a store URL") as info:
        open_persistence(url)
    message = str(info.value)
    assert "memory" in message and "sqlite:///" in message and "postgresql://" in message
    assert "secret" not in message
    assert list(tmp_path.iterdir()) == []


def test_empty_url_is_refused():
    with pytest.raises(PersistenceError):
        parse_store_url("")
    with pytest.raises(PersistenceError, match="names no file"):
        parse_store_url("sqlite:///")


def test_open_a_file_and_memory(tmp_path):
    for url in (f"sqlite:///{tmp_path}/a.db", tmp_path / "b.db", "memory"):
        store = Store(open_persistence(url))
        try:
            store.mutate(lambda txn: txn.insert("t", {"x": 1}))
            assert store.read(lambda txn: txn.query("t").collect())[0][0]["x"] == 1
        finally:
            store.close()
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()


def test_connect_to_unreachable_postgresql_without_its_password(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PersistenceError, match=r"127\.0\.0\.1:1") as info:
        kernel_ext.connect(REFUSED_URL)
    assert "secret" not in str(info.value) and "secret" not in repr(info.value)
    assert list(tmp_path.iterdir()) == []  # no folder named after the password


def test_connect_refuses_an_unknown_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="not a store URL"):
        kernel_ext.connect("redis://u:secret@h/0")
    assert list(tmp_path.iterdir()) == []


def test_serve_on_unreachable_postgresql_fails_and_creates_nothing(tmp_path):
    functions = tmp_path / "functions"
    functions.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "kernel_ext", "serve", "--functions", "functions"]
    done = subprocess.run(
        [*command, "--db", REFUSED_URL, "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "PostgreSQL at 127.0.0.1:1" in done.stderr
    assert "secret" not in done.stderr + done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["functions"]
    assert list(functions.iterdir()) == []

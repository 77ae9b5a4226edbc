"""`%convex connect` goes through `connect()`'s store URLs, and `%convex status` never prints
a password."""

from __future__ import annotations

import pytest

import kernel_ext
from kernel_ext.errors import PersistenceError
from kernel_ext.sync.background import BackgroundServer


@pytest.fixture
def served():
    """An embedded store served on 127.0.0.1."""
    owner = kernel_ext.connect("memory")
    server = BackgroundServer(owner.backend)
    yield server
    server.stop()
    owner.close()


def test_connect_magic_to_unreachable_postgresql_hides_its_password(ip, tmp_path, capsys):
    before = ip.user_ns["convex"]
    created = set(tmp_path.iterdir())
    with pytest.raises(PersistenceError) as info:
        ip.run_line_magic("convex", "connect postgresql://u:secret@127.0.0.1:1/notes")
    assert "PostgreSQL at 127.0.0.1:1 (database 'notes')" in str(info.value)
    assert "secret" not in str(info.value) + capsys.readouterr().out
    assert ip.user_ns["convex"] is before  # the notebook keeps its store
    assert set(tmp_path.iterdir()) == created


def test_status_masks_the_password_of_the_shared_store(ip, served, monkeypatch, capsys):
    monkeypatch.setenv("CONVEX_JUPYTER_URL", served.url)
    monkeypatch.setenv("CONVEX_JUPYTER_STORE", "postgresql://u:secret@db.example/notes")
    ip.run_line_magic("convex", f"connect {served.url}")
    out = capsys.readouterr().out
    assert "store: postgresql://u:***@db.example/notes" in out
    assert "secret" not in out


def test_convex_url_and_connect_magic_open_a_postgresql_store(ip, pg_url, monkeypatch, capsys):
    from kernel_ext.magics import default_client

    secret_url = pg_url.replace("postgres@", "postgres:pw-secret@", 1)
    monkeypatch.setenv("CONVEX_URL", secret_url)
    client = default_client()
    try:
        assert "postgresql://postgres:***@" in repr(client)
    finally:
        client.close()
    ip.run_line_magic("convex", f"connect {secret_url}")
    ip.run_cell_magic(
        "convex_mutation",
        "add_note(text: v.string())",
        'return ctx.db.insert("notes", {"text": text})',
    )
    ip.run_line_magic("convex", "status")
    out = capsys.readouterr().out
    assert "pw-secret" not in out and "postgresql://postgres:***@" in out
    # Another client of the same database (another kernel, in effect) sees the note.
    ip.user_ns["convex"].mutation("notebook:add_note", {"text": "hello"})
    other = kernel_ext.connect(pg_url)
    try:
        assert list(other.table_df("notes")["text"]) == ["hello"]
    finally:
        other.close()
        ip.run_line_magic("convex", "connect memory")  # before the database is dropped

"""Search and vector indexes in the catalog of every backend: stored, reloaded, reconciled,
and an old store file upgraded to the format that records index kinds."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, query, v
from kernel_ext.engine.store import Store
from kernel_ext.errors import QueryError
from kernel_ext.persistence.urls import open_persistence
from kernel_ext.store.index_kinds import SearchIndexConfig, VectorIndexConfig

FIELDS = {"body": v.string(), "channel": v.string(), "embedding": v.array(v.float64())}


def _schema(search_filters: tuple[str, ...] = ("channel",)):
    return define_schema(
        {
            "messages": define_table(FIELDS)
            .index("by_channel", ["channel"])
            .search_index("search_body", search_field="body", filter_fields=list(search_filters))
            .vector_index("by_embedding", vector_field="embedding", dimensions=3)
        }
    )


@mutation
def add(ctx, body, channel, embedding):
    return ctx.db.insert("messages", {"body": body, "channel": channel, "embedding": embedding})


@query
def by_channel(ctx, channel):
    return [
        d["body"]
        for d in ctx.db.query("messages").with_index("by_ch", lambda q: q.eq("channel", channel))
    ]


@query
def read_search_index_as_ordered(ctx):
    return ctx.db.query("messages").with_index("search_body").collect()


def _client(url: str) -> kernel_ext.Client:
    client = kernel_ext.connect(url)
    for name, fn in {
        "add": add,
        "by_channel": by_channel,
        "misread": read_search_index_as_ordered,
    }.items():
        client.register(f"kinds:{name}", fn)
    return client


def _kinds(store: Store) -> dict[str, tuple[str, object]]:
    info = store.catalog.table("messages")
    assert info is not None
    return {name: (i.kind, i.config) for name, i in info.all_indexes().items()}


EXPECTED = {
    "by_id": ("db", None),
    "by_creation_time": ("db", None),
    "by_channel": ("db", None),
    "search_body": ("search", SearchIndexConfig("body", ("channel",))),
    "by_embedding": ("vector", VectorIndexConfig("embedding", 3)),
}


def test_index_kinds_are_in_the_catalog_and_describe_tables(store_url):
    client = _client(store_url)
    try:
        client.set_schema(_schema())
        client.mutation("kinds:add", body="hi there", channel="#a", embedding=[1.0, 0.0, 0.0])
        (row,) = [t for t in client.describe_tables() if t["table"] == "messages"]
        assert row == {
            "table": "messages",
            "indexes": ["by_channel", "by_creation_time", "by_id"],
            "searchIndexes": ["search_body"],
            "vectorIndexes": ["by_embedding"],
        }
        with pytest.raises(QueryError, match=r"is a search index.*with_search_index"):
            client.query("kinds:misread")
    finally:
        client.close()


def test_index_kinds_survive_a_reopen_and_a_changed_config_rebuilds_the_index(
    durable_store_url,
):
    durable_url = durable_store_url
    store = Store(open_persistence(durable_url))
    try:
        store.set_schema(_schema())
        assert _kinds(store) == EXPECTED
        first_id = store.catalog.table("messages").search_indexes["search_body"].index_id
    finally:
        store.close()
    store = Store(open_persistence(durable_url))
    try:
        assert _kinds(store) == EXPECTED  # reloaded with kind and config
        store.set_schema(_schema(search_filters=()))  # the filter field removed
        changed = store.catalog.table("messages").search_indexes["search_body"]
        assert changed.config == SearchIndexConfig("body")
        assert changed.index_id != first_id
        store.set_schema(define_schema({"messages": define_table(FIELDS)}))
        assert set(_kinds(store)) == {"by_id", "by_creation_time"}
    finally:
        store.close()
    store = Store(open_persistence(durable_url))
    try:
        assert set(_kinds(store)) == {"by_id", "by_creation_time"}
    finally:
        store.close()


#: The SQLite schema of store format 1 (before index kinds), as that version wrote it.
_FORMAT_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tables (number INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE indexes (
    index_id INTEGER PRIMARY KEY, table_number INTEGER NOT NULL, name TEXT NOT NULL,
    fields TEXT NOT NULL, UNIQUE (table_number, name));
CREATE TABLE documents (
    table_number INTEGER NOT NULL, id_key BLOB NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (table_number, id_key)) WITHOUT ROWID;
CREATE TABLE index_entries (
    index_id INTEGER NOT NULL, key BLOB NOT NULL, id_key BLOB NOT NULL,
    PRIMARY KEY (index_id, key)) WITHOUT ROWID;
"""


def _downgrade_to_format_1(path: Path) -> None:
    """Rewrite a store file as format 1 wrote it: the same rows, the old `indexes` table."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        rows = conn.execute(
            "SELECT index_id, table_number, name, fields FROM indexes WHERE kind = 'db'"
        ).fetchall()
        conn.execute("DROP TABLE indexes")
        conn.execute(_FORMAT_1.split(";")[2])
        conn.executemany("INSERT INTO indexes VALUES (?, ?, ?, ?)", rows)
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_format_1_sqlite_store_is_upgraded_when_opened(tmp_path):
    path = tmp_path / "old.db"
    client = _client(str(path))
    client.set_schema(define_schema({"messages": define_table(FIELDS).index("by_ch", ["channel"])}))
    for i in range(5):
        client.mutation("kinds:add", body=f"m{i}", channel=f"#{i % 2}", embedding=[1.0, 2.0])
    client.close()
    _downgrade_to_format_1(path)
    columns = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(indexes)")]
    assert columns == ["index_id", "table_number", "name", "fields"]

    client = _client(str(path))
    try:
        found = client.query("kinds:by_channel", channel="#1")
        assert found == ["m1", "m3"]
        client.set_schema(_schema())  # a search index in the upgraded store
    finally:
        client.close()
    conn = sqlite3.connect(path)
    try:
        # Format 1 -> 2 (index kinds) -> 3 (search indexes in FTS5) -> 4 (re-tokenized), in
        # one opening.
        assert conn.execute("SELECT value FROM meta WHERE key='format'").fetchone() == ("4",)
        kinds = dict(conn.execute("SELECT name, kind FROM indexes"))
        assert kinds["by_channel"] == "db" and kinds["search_body"] == "search"
        (config,) = conn.execute("SELECT config FROM indexes WHERE name='by_embedding'").fetchone()
        assert json.loads(config) == {
            "vectorField": "embedding",
            "dimensions": 3,
            "filterFields": [],
        }
    finally:
        conn.close()


def test_a_format_1_postgres_store_is_upgraded_when_opened(pg_url):
    import psycopg

    client = _client(pg_url)
    client.set_schema(define_schema({"messages": define_table(FIELDS).index("by_ch", ["channel"])}))
    client.mutation("kinds:add", body="x", channel="#1", embedding=[])
    client.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE convex_indexes DROP COLUMN kind, DROP COLUMN config")
        conn.execute("UPDATE convex_meta SET value = '1' WHERE key = 'format'")

    client = _client(pg_url)
    try:
        found = client.query("kinds:by_channel", channel="#1")
        assert found == ["x"]
        client.set_schema(_schema())
    finally:
        client.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT value FROM convex_meta WHERE key='format'").fetchone() == ("2",)
        kinds = dict(conn.execute("SELECT name, kind FROM convex_indexes").fetchall())
        assert kinds["by_channel"] == "db" and kinds["search_body"] == "search"


def test_a_newer_store_format_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "new.db"
    kernel_ext.connect(str(path)).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    conn.close()
    with pytest.raises(Exception, match=r"format 99.*open it with the version that wrote it"):
        kernel_ext.connect(str(path))

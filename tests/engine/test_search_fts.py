"""Search indexes of SQLite stores kept by FTS5: rows written in the documents' own
transaction, dropped with the index, built when an older store file is opened, and never
rebuilt in memory when a store is reopened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, query, v
from kernel_ext.errors import PersistenceError
from kernel_ext.persistence.base import CommitRecord
from kernel_ext.persistence.sqlite import SqlitePersistence
from kernel_ext.store.catalog import id_key
from kernel_ext.store.codec import decode_document
from kernel_ext.store.index_kinds import SearchIndexConfig
from kernel_ext.store.search import InvertedIndex, SearchFilterBuilder, compile_search, rank

TABLE = define_table({"body": v.any(), "channel": v.string()})
SCHEMA = define_schema(
    {"messages": TABLE.search_index("search_body", search_field="body", filter_fields=["channel"])}
)
NO_SEARCH = define_schema({"messages": TABLE})
BODIES = ["the quick brown fox", "the lazy dog", "quick quick quick", "a fox and a dog", "foxes"]


def _store_format(path: Path) -> str:
    """The store format recorded in the file at `path`."""
    conn = sqlite3.connect(path)
    try:
        (value,) = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        return str(value)
    finally:
        conn.close()


@mutation
def add(ctx, body, channel="#a"):
    return ctx.db.insert("messages", {"body": body, "channel": channel})


@query
def find(ctx, text):
    return [
        d["body"]
        for d in ctx.db.query("messages").with_search_index(
            "search_body", lambda q: q.search("body", text)
        )
    ]


def _client(path: Path) -> kernel_ext.Client:
    client = kernel_ext.connect(f"sqlite:///{path}")
    client.register("fts:add", add)
    client.register("fts:find", find)
    return client


def _filled(path: Path) -> list[str]:
    """A store with the search index and BODIES; the ids."""
    client = _client(path)
    try:
        client.set_schema(SCHEMA)
        return [client.mutation("fts:add", body=b) for b in BODIES]
    finally:
        client.close()


def _expected(
    bodies: list[str], text: str, channel: str | None = None, channels: list[str] | None = None
) -> list[str]:
    """The pure core's ranking of `bodies` (creation order = list order; `channels`: each
    one's channel, "#a" by default)."""
    config = SearchIndexConfig("body", ("channel",))
    index = InvertedIndex(config, 0)
    index.load(
        {"_id": f"id{i}", "_creationTime": float(i), "body": b, "channel": c}
        for i, (b, c) in enumerate(zip(bodies, channels or ["#a"] * len(bodies), strict=True))
    )
    q = SearchFilterBuilder().search("body", text)
    if channel is not None:
        q = q.eq("channel", channel)
    spec = compile_search("messages", "search_body", config, q)
    return [bodies[int(e.doc_id[2:])] for _, e in rank(spec, index.state(spec))]


def _fts_tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'search_%'")
        return {r[0] for r in rows}
    finally:
        conn.close()


def _fts_counts(path: Path) -> tuple[int, int, int, list[tuple[int, int, int]]]:
    """(documents, indexed rows, FTS rows, stats rows) of the only search index."""
    conn = sqlite3.connect(path)
    try:
        (index_id,) = conn.execute("SELECT index_id FROM indexes WHERE kind='search'").fetchone()
        docs = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        side = conn.execute(f"SELECT count(*) FROM search_docs_{index_id}").fetchone()[0]
        fts = conn.execute(f"SELECT count(*) FROM search_fts_{index_id}").fetchone()[0]
        stats = conn.execute("SELECT * FROM search_stats").fetchall()
        return docs, side, fts, stats
    finally:
        conn.close()


def test_search_rows_are_written_in_the_documents_transaction(tmp_path):
    path = tmp_path / "store.db"
    _filled(path)
    before = _fts_counts(path)
    docs, side, fts, stats = before
    assert docs == side == fts == len(BODIES) and stats[0][1] == len(BODIES)

    persistence = SqlitePersistence(path)
    try:
        table_number = next(n for n, name in persistence.load_catalog()[0] if name == "messages")
        good = {"_id": "good", "_creationTime": 1.0, "body": "new words", "channel": "#a"}
        bad = {"_id": "bad", "body": "no creation time", "channel": "#a"}  # fails mid-commit
        records = [
            CommitRecord(table_number, id_key("good"), good, ()),
            CommitRecord(table_number, id_key("bad"), bad, ()),
        ]
        with pytest.raises((KeyError, PersistenceError)):
            persistence.write_commit(persistence.last_ts() + 1, records)
    finally:
        persistence.close()
    assert _fts_counts(path) == before  # neither the documents nor their index rows

    client = _client(path)
    try:
        assert client.query("fts:find", text="words") == []
        assert client.query("fts:find", text="quick") == [
            "quick quick quick",
            "the quick brown fox",
        ]
    finally:
        client.close()


def test_the_fts_tables_are_dropped_with_the_index(tmp_path):
    path = tmp_path / "store.db"
    _filled(path)
    conn = sqlite3.connect(path)
    try:
        (n,) = conn.execute("SELECT index_id FROM indexes WHERE kind='search'").fetchone()
    finally:
        conn.close()
    made = _fts_tables(path)
    assert {"search_stats", f"search_docs_{n}", f"search_fts_{n}", f"search_hits_{n}"} <= made
    client = _client(path)
    try:
        client.set_schema(NO_SEARCH)
    finally:
        client.close()
    assert _fts_tables(path) == {"search_stats"}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM search_stats").fetchone() == (0,)
    finally:
        conn.close()


def _downgrade_to_format_2(path: Path) -> None:
    """Rewrite a store file as format 2 wrote it: search indexes in the catalog, no FTS."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'search_%' "
                "AND sql LIKE 'CREATE VIRTUAL%'"
            )
        ]
        for name in sorted(names, key=lambda n: "fts" in n):  # vocab tables first
            conn.execute(f"DROP TABLE {name}")
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'search_%'"
        ).fetchall():
            conn.execute(f"DROP TABLE {name}")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'format'")
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_format_2_store_with_a_search_index_is_upgraded_when_opened(tmp_path):
    path = tmp_path / "store.db"
    _filled(path)
    _downgrade_to_format_2(path)
    assert _fts_tables(path) == set()

    client = _client(path)
    try:
        assert client.query("fts:find", text="fox") == _expected(BODIES, "fox")
        client.mutation("fts:add", body="one more fox")
        assert client.query("fts:find", text="fox") == _expected([*BODIES, "one more fox"], "fox")
    finally:
        client.close()
    assert _store_format(path) == "4"
    docs, side, fts, stats = _fts_counts(path)
    assert docs == side == fts == len(BODIES) + 1 and stats[0][1] == len(BODIES) + 1


def test_a_reopened_sqlite_store_builds_no_index_in_memory(tmp_path):
    path = tmp_path / "store.db"
    _filled(path)
    client = _client(path)
    try:
        for text in ("dog", "fo", "quick f", "the"):
            assert client.query("fts:find", text=text) == _expected(BODIES, text)
        assert client.backend.store._search._indexes == {}
    finally:
        client.close()


@query
def find_in(ctx, text, channel):
    return [
        d["body"]
        for d in ctx.db.query("messages").with_search_index(
            "search_body", lambda q: q.search("body", text).eq("channel", channel)
        )
    ]


@mutation
def delete_then_find(ctx, ids, text):
    for i in ids:
        ctx.db.delete(i)
    return [
        d["body"]
        for d in ctx.db.query("messages").with_search_index(
            "search_body", lambda q: q.search("body", text)
        )
    ]


def test_fts_ranks_as_the_pure_core_with_many_prefix_terms_filters_and_own_writes(tmp_path):
    # 24 terms extend "pre" (only the first 16 in term order count), two channels.
    bodies = [f"pre{i} word" + " word" * (i % 3) for i in range(24)] + ["prefix", "word"]
    channels = ["#a" if i % 2 else "#b" for i in range(len(bodies))]
    client = _client(tmp_path / "store.db")
    client.register("fts:find_in", find_in)
    client.register("fts:delete_then_find", delete_then_find)
    try:
        client.set_schema(SCHEMA)
        ids = [
            client.mutation("fts:add", body=b, channel=c)
            for b, c in zip(bodies, channels, strict=True)
        ]
        for text in ("pre", "word pre", "pre1", "wor"):
            assert client.query("fts:find", text=text) == _expected(bodies, text, None, channels)
            for channel in ("#a", "#b"):
                found = client.query("fts:find_in", text=text, channel=channel)
                assert found == _expected(bodies, text, channel, channels)
        # A mutation's own deletes change which prefix terms rank (pre0, pre1, pre10.. go).
        gone = {0, 1, *range(10, 20)}
        found = client.mutation("fts:delete_then_find", ids=[ids[i] for i in gone], text="pre")
        kept = [i for i in range(len(bodies)) if i not in gone]
        left = _expected([bodies[i] for i in kept], "pre", None, [channels[i] for i in kept])
        assert found == left
        assert client.query("fts:find", text="pre") == left
    finally:
        client.close()


@mutation
def remove(ctx, id):
    ctx.db.delete(id)


def test_a_removed_last_side_row_never_lends_its_rowid_to_a_new_document(tmp_path):
    # Searches keep the side rows they read in memory by rowid; SQLite would give the next
    # row the rowid of a removed last row, and the cached row would then name the wrong
    # document (for every snapshot, older ones included).
    path = tmp_path / "store.db"
    client = _client(path)
    client.register("fts:remove", remove)
    try:
        client.set_schema(SCHEMA)
        client.mutation("fts:add", body="shared first")
        last = client.mutation("fts:add", body="shared last")
        store = client.backend.store
        old = store.snapshot()  # sees "shared last"
        try:
            assert client.query("fts:find", text="shared") == ["shared last", "shared first"]
            client.mutation("fts:remove", id=last)
            client.mutation("fts:add", body="shared shared newest")
            assert client.query("fts:find", text="shared") == [
                "shared shared newest",
                "shared first",
            ]

            def search(txn):
                found = txn.search("messages", "search_body", lambda q: q.search("body", "shared"))
                return [doc["body"] for _, doc in found]

            assert store.read(search, old)[0] == ["shared last", "shared first"]
        finally:
            store.close_snapshot(old)
    finally:
        client.close()


def _format_3_tokens(text: str) -> list[str]:
    """Tokens as store format 3 made them (`str.isalnum` runs, `str.lower`)."""
    words, word = [], ""
    for ch in text + " ":
        if ch.isalnum():
            word += ch
        elif word:
            if len(word.encode()) < 32:
                words.append(word.lower())
            word = ""
    return words


def test_a_format_3_store_is_re_tokenized_when_opened(tmp_path):
    # Format 3 split words at combining letters (Hindi vowel signs): its FTS rows must be
    # rebuilt, or queries (tokenized the new way) would not find what they hold.
    path = tmp_path / "store.db"
    client = _client(path)
    try:
        client.set_schema(SCHEMA)
        for body in ("पुरानी किताब", "नई कलम", "ΟΔΟΣ road"):
            client.mutation("fts:add", body=body)
    finally:
        client.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        (n,) = conn.execute("SELECT index_id FROM indexes WHERE kind='search'").fetchone()
        conn.execute("BEGIN")
        total = 0
        for rowid, id_key in conn.execute(f"SELECT rowid, id_key FROM search_docs_{n}"):
            (body,) = conn.execute(
                "SELECT body FROM documents WHERE id_key=?", (id_key,)
            ).fetchone()
            tokens = _format_3_tokens(decode_document(body)["body"])
            total += len(tokens)
            conn.execute(f"DELETE FROM search_fts_{n} WHERE rowid=?", (rowid,))
            conn.execute(
                f"INSERT INTO search_fts_{n} (rowid, tokens) VALUES (?, ?)",
                (rowid, " ".join(tokens)),
            )
            conn.execute(f"UPDATE search_docs_{n} SET length=? WHERE rowid=?", (len(tokens), rowid))
        conn.execute("UPDATE search_stats SET total=?", (total,))
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'format'")
        conn.execute("COMMIT")
        assert conn.execute(
            f"SELECT count(*) FROM search_fts_{n} WHERE search_fts_{n} MATCH 'ब'"
        ).fetchone() == (1,)
    finally:
        conn.close()

    client = _client(path)
    try:
        assert client.query("fts:find", text="किताब") == ["पुरानी किताब"]
        assert client.query("fts:find", text="ब") == []  # no split letters left
        assert client.query("fts:find", text="οδοσ") == ["ΟΔΟΣ road"]
    finally:
        client.close()
    assert _store_format(path) == "4"


@mutation
def rewrite(ctx, id, body):
    ctx.db.patch(id, {"body": body})


def test_the_side_row_cache_holds_the_rows_the_index_keeps_not_every_rowid(tmp_path):
    # Every new version of a document is a new side row with a new rowid: the cache of the
    # rows searches read must not grow with the rowids (a long-lived, often-edited store).
    client = _client(tmp_path / "store.db")
    client.register("fts:rewrite", rewrite)
    try:
        client.set_schema(SCHEMA)
        doc = client.mutation("fts:add", body="draft 0")
        client.mutation("fts:add", body="other draft")
        for i in range(1, 200):
            client.mutation("fts:rewrite", id=doc, body=f"draft {i}")
            assert client.query("fts:find", text="draft") == ["other draft", f"draft {i}"]
        rows = client.backend.store.persistence._search_rows
        (cached,) = rows._cached.values()
        assert len(cached.length) <= 16  # slots for the two rows read, not for 200 rowids
        assert cached.known() == 2
    finally:
        client.close()

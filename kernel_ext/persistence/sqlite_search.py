"""Full-text search indexes of a SQLite store, kept by SQLite FTS5 in the store's own
transactions (the SQL side of `SqlitePersistence`; ranking stays in `store.search`).

Per search index `N` (its `index_id`):

- `search_docs_N(rowid, id_key, doc_id, creation_time, length, filters)`: one row per indexed
  document (its search field is a string): what BM25 and the filters need.
- `search_fts_N`: an FTS5 table whose row `rowid` (the `search_docs_N` row's) holds the
  document's tokens as `store.search.tokenize` makes them, joined by spaces. It uses FTS5's
  `ascii` tokenizer: that splits only on ASCII characters that are not letters or digits, and
  folds only ASCII capitals, so on these lowercase, space-separated tokens it finds exactly
  them (no diacritic folding, no re-tokenizing, long terms already dropped): the index holds
  Convex's terms, so every backend ranks from the same statistics.
- `search_terms_N` (fts5vocab `row`: documents per term) and `search_hits_N` (fts5vocab
  `instance`: the term frequencies of each document).
- a row of the shared `search_stats(index_id, count, total)`: documents and tokens.

Rows are written by `write_search` inside the commit's transaction, so a snapshot (a read
transaction) sees the index exactly at its commit, and a failed or killed commit leaves
neither documents nor index rows.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable
from typing import Final

import numpy as np

from kernel_ext.store.codec import decode_document
from kernel_ext.store.expressions import field_value
from kernel_ext.store.index_kinds import SearchIndexConfig, config_from_json
from kernel_ext.store.keys import encode_value
from kernel_ext.store.search import (
    DocEntry,
    RankColumns,
    SearchSpec,
    SearchState,
    term_weights,
    tokenize,
)
from kernel_ext.store.values import Value

__all__ = [
    "STATS_SCHEMA",
    "SearchIndexes",
    "build_missing",
    "create_search",
    "drop_search",
    "load_search_indexes",
    "search_state",
    "write_search",
]

#: The shared statistics table (in the store's schema).
STATS_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS search_stats (index_id INTEGER PRIMARY KEY, "
    "count INTEGER NOT NULL, total INTEGER NOT NULL)"
)
#: The search indexes of each table: `{table_number: [(index_id, config)]}`.
SearchIndexes = dict[int, list[tuple[int, SearchIndexConfig]]]

_LEN = struct.Struct(">I")
#: Above every character: `prefix + _TOP` bounds the terms that extend `prefix`.
_TOP: Final = "\U0010ffff"
_EMPTY: Final = np.zeros(0)


def _pack(values: Iterable[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(v)) + v for v in values)


def _unpack(data: bytes) -> tuple[bytes, ...]:
    out, at = [], 0
    while at < len(data):
        (size,) = _LEN.unpack_from(data, at)
        out.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return tuple(out)


def load_search_indexes(conn: sqlite3.Connection) -> SearchIndexes:
    """The store's search indexes, from its catalog."""
    found: SearchIndexes = {}
    rows = conn.execute(
        "SELECT index_id, table_number, config FROM indexes WHERE kind='search' ORDER BY index_id"
    ).fetchall()
    for index_id, table_number, text in rows:
        config = config_from_json("search", text)
        assert isinstance(config, SearchIndexConfig)
        found.setdefault(table_number, []).append((index_id, config))
    return found


def create_search(
    conn: sqlite3.Connection, index_id: int, table_number: int, config: SearchIndexConfig
) -> None:
    """Create the tables of search index `index_id` and index the table's documents (in the
    caller's transaction)."""
    n = int(index_id)
    conn.execute(
        f"CREATE TABLE search_docs_{n} (rowid INTEGER PRIMARY KEY, id_key BLOB NOT NULL "
        "UNIQUE, doc_id TEXT NOT NULL, creation_time REAL NOT NULL, length INTEGER NOT NULL, "
        "filters BLOB NOT NULL)"
    )
    conn.execute(f"CREATE VIRTUAL TABLE search_fts_{n} USING fts5(tokens, tokenize='ascii')")
    conn.execute(f"CREATE VIRTUAL TABLE search_terms_{n} USING fts5vocab(search_fts_{n}, 'row')")
    conn.execute(
        f"CREATE VIRTUAL TABLE search_hits_{n} USING fts5vocab(search_fts_{n}, 'instance')"
    )
    conn.execute("INSERT OR REPLACE INTO search_stats VALUES (?, 0, 0)", (n,))
    rows = conn.execute(
        "SELECT id_key, body FROM documents WHERE table_number=?", (table_number,)
    ).fetchall()
    count = total = 0
    for id_key, body in rows:
        added = _insert(conn, n, config, bytes(id_key), decode_document(body))
        if added is not None:
            count += 1
            total += added
    conn.execute("UPDATE search_stats SET count=?, total=? WHERE index_id=?", (count, total, n))


def drop_search(conn: sqlite3.Connection, index_id: int) -> None:
    """Drop the tables of search index `index_id` (in the caller's transaction)."""
    n = int(index_id)
    for name in (f"search_hits_{n}", f"search_terms_{n}", f"search_fts_{n}", f"search_docs_{n}"):
        conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute("DELETE FROM search_stats WHERE index_id=?", (n,))


def build_missing(conn: sqlite3.Connection) -> None:
    """Create and fill the tables of every search index that has none (a store written
    before search indexes were kept in FTS5; in the opening transaction)."""
    conn.execute(STATS_SCHEMA)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for table_number, indexes in load_search_indexes(conn).items():
        for index_id, config in indexes:
            if f"search_docs_{index_id}" not in tables:
                create_search(conn, index_id, table_number, config)


def _insert(
    conn: sqlite3.Connection,
    n: int,
    config: SearchIndexConfig,
    id_key: bytes,
    doc: dict[str, Value],
) -> int | None:
    """Index one document; its length, or None if it is not in the index."""
    text = field_value(doc, config.search_field)
    if type(text) is not str:
        return None
    tokens = tokenize(text)
    filters = _pack(encode_value(field_value(doc, f)) for f in config.filter_fields)
    cursor = conn.execute(
        f"INSERT INTO search_docs_{n} (id_key, doc_id, creation_time, length, filters) "
        "VALUES (?, ?, ?, ?, ?)",
        (id_key, str(doc["_id"]), float(doc["_creationTime"]), len(tokens), filters),
    )
    conn.execute(
        f"INSERT INTO search_fts_{n} (rowid, tokens) VALUES (?, ?)",
        (cursor.lastrowid, " ".join(tokens)),
    )
    return len(tokens)


def _remove(conn: sqlite3.Connection, n: int, id_key: bytes) -> int | None:
    """Unindex one document; its length, or None if it was not in the index."""
    row = conn.execute(
        f"SELECT rowid, length FROM search_docs_{n} WHERE id_key=?", (id_key,)
    ).fetchone()
    if row is None:
        return None
    conn.execute(f"DELETE FROM search_fts_{n} WHERE rowid=?", (row[0],))
    conn.execute(f"DELETE FROM search_docs_{n} WHERE rowid=?", (row[0],))
    return int(row[1])


def write_search(
    conn: sqlite3.Connection,
    indexes: SearchIndexes,
    writes: Iterable[tuple[int, bytes, dict[str, Value] | None, bool]],
) -> None:
    """Apply a commit's writes `(table_number, id_key, new document or None, replaces a
    stored version)` to the search indexes (in the commit's transaction)."""
    stats: dict[int, list[int]] = {}
    for table_number, id_key, doc, replaces in writes:
        for index_id, config in indexes.get(table_number, ()):
            delta = stats.setdefault(index_id, [0, 0])
            if replaces or doc is None:
                removed = _remove(conn, index_id, id_key)
                if removed is not None:
                    delta[0] -= 1
                    delta[1] -= removed
            if doc is not None:
                added = _insert(conn, index_id, config, id_key, doc)
                if added is not None:
                    delta[0] += 1
                    delta[1] += added
    for index_id, (count, total) in stats.items():
        if count or total:
            conn.execute(
                "UPDATE search_stats SET count=count+?, total=total+? WHERE index_id=?",
                (count, total, index_id),
            )


def search_state(
    conn: sqlite3.Connection, index_id: int, spec: SearchSpec, *, all_prefixes: bool
) -> SearchState:
    """What `store.search.rank` needs for `spec`, as the connection's transaction sees the
    index: counts, the document frequency of every index term `spec` matches, and the
    matching documents that pass its filters (term frequencies of the terms ranked).

    Args:
        all_prefixes: load the documents of every term extending the prefix (a transaction
            whose own writes change the statistics may rank others than the first
            `MAX_PREFIX_MATCHES`); else only those ranking uses.
    """
    n = int(index_id)
    row = conn.execute("SELECT count, total FROM search_stats WHERE index_id=?", (n,)).fetchone()
    state = SearchState(int(row[0]), int(row[1])) if row else SearchState()
    if spec.terms:
        marks = ",".join("?" * len(spec.terms))
        for term, df in conn.execute(
            f"SELECT term, doc FROM search_terms_{n} WHERE term IN ({marks})", spec.terms
        ):
            state.df[term] = int(df)
    if spec.prefix is not None:
        for term, df in conn.execute(
            f"SELECT term, doc FROM search_terms_{n} WHERE term>=? AND term<? ORDER BY term",
            (spec.prefix, spec.prefix + _TOP),
        ):
            if term.startswith(spec.prefix) and term not in spec.terms and df > 0:
                state.df[term] = int(df)
    if not all_prefixes:
        # Only the ranked terms' documents, as columns (a read merges no writes of its own).
        weights = term_weights(spec, state.df)
        state.columns = _columns(conn, n, [(t, t in state.df) for t, _ in weights], spec)
        return state
    state.entries = _entries(conn, n, list(state.df), spec)
    return state


def _columns(
    conn: sqlite3.Connection, n: int, terms: list[tuple[str, bool]], spec: SearchSpec
) -> RankColumns:
    """The candidates of `terms` (`(term, in the index)`, in `term_weights`' order) that pass
    `spec`'s filters, as columns: one statement for every term (a compound select of each
    term's documents and frequencies, joined with their side rows), no object per document."""
    present = [(k, t) for k, (t, indexed) in enumerate(terms) if indexed]
    if not present:
        return RankColumns(_EMPTY, _EMPTY, [], [_EMPTY for _ in terms])
    per_term = " UNION ALL ".join(
        f"SELECT {k} AS k, doc, count(*) AS tf FROM search_hits_{n} WHERE term = ? GROUP BY doc"
        for k, _ in present
    )
    extra = ", d.filters" if spec.filters else ""
    rows = conn.execute(
        f"SELECT g.k, g.doc, g.tf, d.length, d.creation_time, d.doc_id{extra} "
        f"FROM ({per_term}) AS g JOIN search_docs_{n} AS d ON d.rowid = g.doc",
        [t for _, t in present],
    ).fetchall()
    if spec.filters and rows:
        passes: dict[bytes, bool] = {}  # few distinct filter values: check each once
        kept = []
        for row in rows:
            ok = passes.get(row[6])
            if ok is None:
                values = _unpack(bytes(row[6]))
                ok = passes[row[6]] = all(values[i] == value for i, value in spec.filters)
            if ok:
                kept.append(row)
        rows = kept
    if not rows:
        return RankColumns(_EMPTY, _EMPTY, [], [_EMPTY for _ in terms])
    k, doc, tf, length, creation, ids = list(zip(*rows, strict=False))[:6]  # + filters
    docs, first, where = np.unique(
        np.array(doc, dtype=np.int64), return_index=True, return_inverse=True
    )
    term_of = np.array(k, dtype=np.int64)
    freq = np.array(tf, dtype=np.float64)
    columns = []
    for at in range(len(terms)):
        column = np.zeros(len(docs))
        mask = term_of == at
        column[where[mask]] = freq[mask]
        columns.append(column)
    return RankColumns(
        np.array(length, dtype=np.float64)[first],
        np.array(creation, dtype=np.float64)[first],
        [ids[i] for i in first.tolist()],
        columns,
    )


def _entries(
    conn: sqlite3.Connection, n: int, terms: list[str], spec: SearchSpec
) -> dict[str, DocEntry]:
    """The entries of the documents holding one of `terms` that pass `spec`'s filters: their
    frequencies of `terms` (and `filters` empty when `spec` has none: ranking reads only the
    spec's)."""
    entries: dict[str, DocEntry] = {}
    tfs: dict[str, dict[str, int]] = {}  # each entry's `tf`, filled term by term
    sql = (
        f"SELECT d.doc_id, count(*), d.creation_time, d.length, d.filters "
        f"FROM search_hits_{n} h JOIN search_docs_{n} d ON d.rowid = h.doc "
        "WHERE h.term = ? GROUP BY h.doc"
    )
    for term in terms:
        for doc_id, tf, creation_time, length, packed in conn.execute(sql, (term,)):
            known = tfs.get(doc_id)
            if known is not None:
                known[term] = tf
                continue
            filters = _unpack(bytes(packed)) if spec.filters else ()
            if any(filters[i] != value for i, value in spec.filters):
                continue
            tfs[doc_id] = {term: tf}
            entries[doc_id] = DocEntry(doc_id, creation_time, length, tfs[doc_id], filters)
    return entries

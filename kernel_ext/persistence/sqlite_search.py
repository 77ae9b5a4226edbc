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

import itertools
import sqlite3
import struct
import threading
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
    "SideRows",
    "build_missing",
    "create_search",
    "drop_search",
    "load_search_indexes",
    "rebuild_all",
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
#: Rowids per statement reading side rows (below SQLite's limit on parameters).
_CHUNK: Final = 10_000


def _pack(values: Iterable[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(v)) + v for v in values)


def _unpack(data: bytes) -> tuple[bytes, ...]:
    out, at = [], 0
    while at < len(data):
        (size,) = _LEN.unpack_from(data, at)
        out.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return tuple(out)


class SideRows:
    """This process's copy of the `search_docs_N` rows that searches have read (length,
    `_creationTime`, id, filter values), so that ranking reads the FTS5 postings only, not
    one side row per candidate (a b-tree search each: most of a search's time).

    Sound for every snapshot: a side row never changes (a document's new version is a new
    row), and while this object lives no rowid is used twice (`next_rowid`: SQLite's own
    choice, max + 1, would reuse the rowid of a removed last row, which an older snapshot may
    still see), so a row cached from any snapshot is the row every snapshot that reaches its
    rowid holds. Only the store's own process writes its file (the file lock), so no other
    writer picks rowids. Memory: the rows searches read that the index still holds (a
    removed row is evicted; an older snapshot that still sees it reads it again). Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._high: dict[int, int] = {}  # index -> the highest rowid used in this process
        self._cached: dict[int, _Cached] = {}

    def forget(self, n: int) -> None:
        """Drop all knowledge of index `n` (created or dropped)."""
        with self._lock:
            self._high.pop(n, None)
            self._cached.pop(n, None)

    def ensure(self, conn: sqlite3.Connection, n: int) -> None:
        """Note index `n`'s highest rowid before any of its rows is removed (in the writing
        transaction)."""
        with self._lock:
            if n not in self._high:
                (high,) = conn.execute(f"SELECT max(rowid) FROM search_docs_{n}").fetchone()
                self._high[n] = int(high or 0)

    def next_rowid(self, conn: sqlite3.Connection, n: int) -> int:
        """A rowid for a new row of index `n`, never used before in this process."""
        self.ensure(conn, n)
        with self._lock:
            self._high[n] += 1
            return self._high[n]

    def evict(self, n: int, rowid: int) -> None:
        """Forget a removed row (older snapshots that still see it read it again)."""
        with self._lock:
            cached = self._cached.get(n)
            if cached is not None:
                cached.evict(rowid)

    def rows(
        self, conn: sqlite3.Connection, n: int, docs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[tuple[bytes, ...]]]:
        """`(length, creation time, filter-values number, id)` of each rowid in `docs` (rows
        of the snapshot `conn` reads) and the filter values by number; reads the rows not
        known yet."""
        fetched: list[tuple[int, int, float, str, bytes]] = []
        while True:  # twice at most, unless a commit evicts rows this snapshot still sees
            with self._lock:
                cached = self._cached.setdefault(n, _Cached())
                if fetched:
                    cached.put(fetched)
                slots = cached.slots(docs)
                missing = docs[slots < 0]
                if not len(missing):
                    return (
                        cached.length[slots],
                        cached.creation[slots],
                        cached.filters[slots],
                        cached.ids[slots],
                        cached.values,
                    )
            fetched = []
            for at in range(0, len(missing), _CHUNK):
                part = missing[at : at + _CHUNK].tolist()
                marks = ",".join("?" * len(part))
                fetched += conn.execute(
                    f"SELECT rowid, length, creation_time, doc_id, filters FROM search_docs_{n} "
                    f"WHERE rowid IN ({marks})",
                    part,
                ).fetchall()
            if len(fetched) < len(missing):
                raise sqlite3.DatabaseError(f"search index {n}: postings without a document row")


class _Cached:
    """Side rows of one index, each in a slot of the arrays (see `SideRows`; the caller
    locks): 4 bytes per rowid up to the highest read (the map from rowids to slots: rowids
    only grow, as documents change), and a slot per row that searches read and the index
    still holds."""

    def __init__(self) -> None:
        self.map = np.zeros(0, dtype=np.int32)  # rowid -> slot, -1: not known
        self.free: list[int] = []
        self.length = np.zeros(0)
        self.creation = np.zeros(0)
        self.filters = np.zeros(0, dtype=np.int64)  # the number of the filter values
        self.ids = np.zeros(0, dtype=object)
        self.numbers: dict[bytes, int] = {}
        self.values: list[tuple[bytes, ...]] = []

    def slots(self, docs: np.ndarray) -> np.ndarray:
        """The slot of each rowid (-1: not known)."""
        out = np.full(len(docs), -1, dtype=np.int64)
        inside = docs < len(self.map)
        out[inside] = self.map[docs[inside]]
        return out

    def known(self) -> int:
        """How many rows are cached."""
        return len(self.length) - len(self.free)

    def evict(self, rowid: int) -> None:
        at = int(self.map[rowid]) if rowid < len(self.map) else -1
        if at >= 0:
            self.map[rowid] = -1
            self.ids[at] = None
            self.free.append(at)

    def put(self, rows: list[tuple[int, int, float, str, bytes]]) -> None:
        top = max(r[0] for r in rows) + 1
        if top > len(self.map):
            more = max(top - len(self.map), len(self.map))  # doubling
            self.map = np.concatenate([self.map, np.full(more, -1, dtype=np.int32)])
        new = [r for r in rows if self.map[r[0]] < 0]
        grow = len(new) - len(self.free)
        if grow > 0:
            size = len(self.length)
            more = max(grow, size)  # doubling
            self.free.extend(range(size + more - 1, size - 1, -1))
            self.length = np.concatenate([self.length, np.zeros(more)])
            self.creation = np.concatenate([self.creation, np.zeros(more)])
            self.filters = np.concatenate([self.filters, np.zeros(more, dtype=np.int64)])
            self.ids = np.concatenate([self.ids, np.zeros(more, dtype=object)])
        for rowid, length, creation, doc_id, packed in new:
            blob = bytes(packed)
            number = self.numbers.get(blob)
            if number is None:
                number = self.numbers[blob] = len(self.values)
                self.values.append(_unpack(blob))
            at = self.free.pop()
            self.map[rowid] = at
            self.length[at] = length
            self.creation[at] = creation
            self.ids[at] = doc_id
            self.filters[at] = number


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


def rebuild_all(conn: sqlite3.Connection) -> None:
    """Drop and rebuild the tables of every search index from the documents (their tokens
    were made by an earlier tokenizer; in the opening transaction)."""
    build_missing(conn)
    for table_number, indexes in load_search_indexes(conn).items():
        for index_id, config in indexes:
            drop_search(conn, index_id)
            create_search(conn, index_id, table_number, config)


def _insert(
    conn: sqlite3.Connection,
    n: int,
    config: SearchIndexConfig,
    id_key: bytes,
    doc: dict[str, Value],
    *,
    rows: SideRows | None = None,
) -> int | None:
    """Index one document; its length, or None if it is not in the index (its rowid from
    `rows`, else SQLite's)."""
    text = field_value(doc, config.search_field)
    if type(text) is not str:
        return None
    tokens = tokenize(text)
    filters = _pack(encode_value(field_value(doc, f)) for f in config.filter_fields)
    cursor = conn.execute(
        f"INSERT INTO search_docs_{n} (rowid, id_key, doc_id, creation_time, length, filters) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            None if rows is None else rows.next_rowid(conn, n),
            id_key,
            str(doc["_id"]),
            float(doc["_creationTime"]),
            len(tokens),
            filters,
        ),
    )
    conn.execute(
        f"INSERT INTO search_fts_{n} (rowid, tokens) VALUES (?, ?)",
        (cursor.lastrowid, " ".join(tokens)),
    )
    return len(tokens)


def _remove(
    conn: sqlite3.Connection, n: int, id_key: bytes, rows: SideRows | None = None
) -> int | None:
    """Unindex one document; its length, or None if it was not in the index."""
    if rows is not None:
        rows.ensure(conn, n)  # the removed rowid may be the highest: never use it again
    row = conn.execute(
        f"SELECT rowid, length FROM search_docs_{n} WHERE id_key=?", (id_key,)
    ).fetchone()
    if row is None:
        return None
    conn.execute(f"DELETE FROM search_fts_{n} WHERE rowid=?", (row[0],))
    conn.execute(f"DELETE FROM search_docs_{n} WHERE rowid=?", (row[0],))
    if rows is not None:
        rows.evict(n, int(row[0]))
    return int(row[1])


def write_search(
    conn: sqlite3.Connection,
    indexes: SearchIndexes,
    writes: Iterable[tuple[int, bytes, dict[str, Value] | None, bool]],
    rows: SideRows | None = None,
) -> None:
    """Apply a commit's writes `(table_number, id_key, new document or None, replaces a
    stored version)` to the search indexes (in the commit's transaction; `rows`: the
    store's cache of side rows, which picks the new rows' rowids)."""
    stats: dict[int, list[int]] = {}
    for table_number, id_key, doc, replaces in writes:
        for index_id, config in indexes.get(table_number, ()):
            delta = stats.setdefault(index_id, [0, 0])
            if replaces or doc is None:
                removed = _remove(conn, index_id, id_key, rows)
                if removed is not None:
                    delta[0] -= 1
                    delta[1] -= removed
            if doc is not None:
                added = _insert(conn, index_id, config, id_key, doc, rows=rows)
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
    conn: sqlite3.Connection,
    index_id: int,
    spec: SearchSpec,
    *,
    all_prefixes: bool,
    rows: SideRows | None = None,
) -> SearchState:
    """What `store.search.rank` needs for `spec`, as the connection's transaction sees the
    index: counts, the document frequency of every index term `spec` matches, and the
    matching documents that pass its filters (term frequencies of the terms ranked).

    Args:
        all_prefixes: load the documents of every term extending the prefix (a transaction
            whose own writes change the statistics may rank others than the first
            `MAX_PREFIX_MATCHES`), as entries; else only those ranking uses, as columns.
        rows: the store's cache of side rows (None: read them for this search only).
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
        terms = [(t, t in state.df) for t, _ in weights]
        state.columns = _columns(conn, n, terms, spec, SideRows() if rows is None else rows)
        return state
    state.entries = _entries(conn, n, list(state.df), spec)
    return state


def _columns(
    conn: sqlite3.Connection,
    n: int,
    terms: list[tuple[str, bool]],
    spec: SearchSpec,
    rows: SideRows,
) -> RankColumns:
    """The candidates of `terms` (`(term, in the index)`, in `term_weights`' order) that pass
    `spec`'s filters, as columns: each term's occurrences read from the FTS5 postings and
    counted with numpy; the candidates' side rows come from `rows`."""
    postings = []  # per term, the rowid of each occurrence (a document once per occurrence)
    for term, indexed in terms:
        found = (
            conn.execute(f"SELECT doc FROM search_hits_{n} WHERE term = ?", (term,)).fetchall()
            if indexed
            else []
        )
        postings.append(
            np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64, count=len(found))
        )
    every = np.concatenate(postings) if postings else np.zeros(0, dtype=np.int64)
    if not len(every):
        return RankColumns(_EMPTY, _EMPTY, [], [_EMPTY for _ in terms])
    docs, where = np.unique(every, return_inverse=True)
    length, creation, numbers, ids, values = rows.rows(conn, n, docs)
    columns, at = [], 0
    for occurrences in postings:  # counted here: cheaper than SQL's GROUP BY
        part = where[at : at + len(occurrences)]
        columns.append(np.bincount(part, minlength=len(docs)).astype(np.float64))
        at += len(occurrences)
    if spec.filters:  # checked once per distinct filter values, not per document
        kinds = np.unique(numbers)
        passes = np.array(
            [all(values[c][i] == value for i, value in spec.filters) for c in kinds.tolist()]
        )
        keep = passes[np.searchsorted(kinds, numbers)]
        length, creation = length[keep], creation[keep]
        ids = ids[keep]
        columns = [column[keep] for column in columns]
    return RankColumns(length, creation, ids.tolist(), columns)


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

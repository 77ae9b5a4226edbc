"""SQLite storage: the source of truth for documents, index entries and commit metadata.

Schema (one file, WAL mode):

- `documents(table_number, id_key, body)` WITHOUT ROWID: the latest revision of each document;
  its primary key is also the `by_id` index of every table.
- `index_entries(index_id, key, id_key)` WITHOUT ROWID: every other index, keyed by the
  order-preserving encoding of `[fields..., _creationTime, _id]`.
- `tables`, `indexes`: the catalog. `meta`: the last commit timestamp and format version.

Reads run in a read transaction on a pooled connection, so each snapshot sees one commit.
Writes go through one writer connection, one SQLite transaction per commit. Opening a store
reads only the catalog and metadata, never the documents.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kernel_ext.errors import PersistenceError, StoreLocked
from kernel_ext.store.catalog import TableInfo
from kernel_ext.store.codec import decode_document, encode_document
from kernel_ext.store.values import Value

__all__ = ["CommitRecord", "IndexChange", "SqlitePersistence", "SqliteSnapshot"]

_FORMAT_VERSION: Final = 1
_FIRST_BATCH: Final = 16
_MAX_BATCH: Final = 1024

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tables (number INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS indexes (
    index_id INTEGER PRIMARY KEY, table_number INTEGER NOT NULL, name TEXT NOT NULL,
    fields TEXT NOT NULL, UNIQUE (table_number, name));
CREATE TABLE IF NOT EXISTS documents (
    table_number INTEGER NOT NULL, id_key BLOB NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (table_number, id_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries (
    index_id INTEGER NOT NULL, key BLOB NOT NULL, id_key BLOB NOT NULL,
    PRIMARY KEY (index_id, key)) WITHOUT ROWID;
"""

Row = tuple[bytes, dict[str, Value]]


@dataclass(frozen=True)
class IndexChange:
    """Remove `old_key` (if any) and add `new_key` (if any) in one index."""

    index_id: int
    old_key: bytes | None
    new_key: bytes | None


@dataclass(frozen=True)
class CommitRecord:
    """One document's new state (`doc` None: deleted), its index changes, and whether it
    replaces a stored version (an update rather than an insert)."""

    table_number: int
    id_key: bytes
    doc: dict[str, Value] | None
    index_changes: tuple[IndexChange, ...]
    replaces: bool = False


def _lock_owner_text(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
    except (OSError, ValueError):
        return "another process"
    text = f"process {info.get('pid')} ({info.get('command', '?')})"
    return text + (f", serving {info['url']}" if info.get("url") else "")


class SqliteSnapshot:
    """A read transaction on one pooled connection; implements `store.transaction.Snapshot`."""

    def __init__(
        self, owner: SqlitePersistence, conn: sqlite3.Connection, ts: int | None = None
    ) -> None:
        self._owner = owner
        self._conn = conn
        conn.execute("BEGIN")
        if ts is None:
            ts = int(conn.execute("SELECT value FROM meta WHERE key='ts'").fetchone()[0])
        self.ts: int = ts

    def get(self, table_number: int, id_key: bytes) -> dict[str, Value] | None:
        """The document, or None."""
        row = self._conn.execute(
            "SELECT body FROM documents WHERE table_number=? AND id_key=?", (table_number, id_key)
        ).fetchone()
        return None if row is None else decode_document(row[0])

    def scan(
        self, table_number: int, index_id: int | None, lo: bytes, hi: bytes, descending: bool
    ) -> Iterator[Row]:
        """Rows in `[lo, hi)` in key order, fetched in growing batches so that `first()` reads
        little and `collect()` makes few round trips."""
        direction = "DESC" if descending else "ASC"
        if index_id is None:
            sql = (
                "SELECT id_key, body FROM documents WHERE table_number=? AND id_key>=? "
                f"AND id_key<? ORDER BY id_key {direction} LIMIT ?"
            )
            prefix: tuple[int, ...] = (table_number,)
        else:
            sql = (
                "SELECT e.key, d.body FROM index_entries e JOIN documents d "
                "ON d.table_number=? AND d.id_key=e.id_key "
                f"WHERE e.index_id=? AND e.key>=? AND e.key<? ORDER BY e.key {direction} LIMIT ?"
            )
            prefix = (table_number, index_id)
        batch = _FIRST_BATCH
        while lo < hi:
            rows = self._conn.execute(sql, (*prefix, lo, hi, batch)).fetchall()
            for key, body in rows:
                yield key, decode_document(body)
            if len(rows) < batch:
                return
            if descending:
                hi = rows[-1][0]
            else:
                lo = rows[-1][0] + b"\x00"
            batch = min(batch * 2, _MAX_BATCH)

    def close(self) -> None:
        """End the read transaction and return the connection to the pool."""
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is not None:
            conn.execute("COMMIT")
            self._owner._release(conn)


class SqlitePersistence:
    """A store file (or a private temporary one for `memory`).

    Args:
        path: the database file; None for a temporary store deleted on close.
        durable: `synchronous=NORMAL` (WAL: survives a process crash) when True;
            `synchronous=OFF` when False (memory stores).
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, durable: bool = True) -> None:
        self._tempdir: str | None = None
        if path is None:
            base = (
                "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            )
            self._tempdir = tempfile.mkdtemp(prefix="convex-memory-", dir=base)
            path = os.path.join(self._tempdir, "store.db")
            durable = False
        self.path = Path(path)
        self.durable = durable
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = self._acquire_lock()
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
            self._init_meta()
        except sqlite3.Error as exc:
            self._cleanup()
            raise PersistenceError(f"Cannot open store {self.path}: {exc}") from exc
        except BaseException:
            self._cleanup()
            raise

    # -- opening -------------------------------------------------------------------------

    def _acquire_lock(self) -> Any:
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = open(lock_path, "a+")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLocked(
                f"The store {self.path} is in use by {_lock_owner_text(lock_path)}. Connect to "
                "that process's server URL instead, or close it first."
            ) from None
        self.set_owner_info()
        return handle

    def set_owner_info(self, url: str | None = None) -> None:
        """Record who owns the store (and the URL it serves, if any) in its lock file."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        info = {"pid": os.getpid(), "command": " ".join(sys.argv[:2]) or "python", "url": url}
        lock_path.write_text(json.dumps(info))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'NORMAL' if self.durable else 'OFF'}")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _init_meta(self) -> None:
        row = self._writer.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is None:
            self._writer.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("format", str(_FORMAT_VERSION)), ("ts", "0")]
            )
        elif int(row[0]) != _FORMAT_VERSION:
            raise PersistenceError(
                f"{self.path} has store format {row[0]}, this version reads {_FORMAT_VERSION}"
            )

    def load_catalog(
        self,
    ) -> tuple[list[tuple[int, str]], list[tuple[int, int, str, tuple[str, ...]]]]:
        """`(tables [(number, name)], indexes [(index_id, table_number, name, fields)])`."""
        tables = self._writer.execute("SELECT number, name FROM tables ORDER BY number").fetchall()
        indexes = [
            (index_id, table, name, tuple(json.loads(fields)))
            for index_id, table, name, fields in self._writer.execute(
                "SELECT index_id, table_number, name, fields FROM indexes ORDER BY index_id"
            )
        ]
        return tables, indexes

    def last_ts(self) -> int:
        """The timestamp of the latest commit (0 for a new store)."""
        return int(self._writer.execute("SELECT value FROM meta WHERE key='ts'").fetchone()[0])

    # -- reading -------------------------------------------------------------------------

    def snapshot(self, ts: int | None = None) -> SqliteSnapshot:
        """Open a read snapshot of the latest commit; call `close()` on it when done.

        Args:
            ts: the ts to report instead of reading the stored one (a caller that knows a
                lower bound and validates against every later commit).
        """
        with self._pool_lock:
            if self._closed:
                raise PersistenceError("The store is closed")
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = self._connect()
        try:
            return SqliteSnapshot(self, conn, ts)
        except sqlite3.Error as exc:
            raise PersistenceError(f"Cannot read {self.path}: {exc}") from exc

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if self._closed:
                conn.close()
            else:
                self._pool.append(conn)

    # -- writing (the engine serializes these calls) -------------------------------------

    def create_table(self, number: int, name: str) -> None:
        """Persist a new table."""
        self._writer.execute("INSERT INTO tables VALUES (?, ?)", (number, name))

    def create_index(
        self, index_id: int, table_number: int, name: str, fields: tuple[str, ...]
    ) -> None:
        """Persist a new (empty) index."""
        self._writer.execute(
            "INSERT INTO indexes VALUES (?, ?, ?, ?)",
            (index_id, table_number, name, json.dumps(list(fields))),
        )

    def fill_index(self, index_id: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Add `(key, id_key)` entries to an index (building it from existing documents)."""
        self._writer.execute("BEGIN")
        self._writer.executemany(
            "INSERT INTO index_entries VALUES (?, ?, ?)", ((index_id, k, i) for k, i in entries)
        )
        self._writer.execute("COMMIT")

    def drop_index(self, index_id: int) -> None:
        """Delete an index and its entries."""
        self._writer.execute("BEGIN")
        self._writer.execute("DELETE FROM index_entries WHERE index_id=?", (index_id,))
        self._writer.execute("DELETE FROM indexes WHERE index_id=?", (index_id,))
        self._writer.execute("COMMIT")

    def write_commit(
        self, ts: int, records: list[CommitRecord], new_tables: Iterable[TableInfo] = ()
    ) -> None:
        """Apply one commit atomically (with the tables it created) and record its timestamp.

        Raises:
            PersistenceError: nothing of the commit was written.
        """
        w = self._writer
        inserts, updates, deletes = [], [], []
        removed, added, moved = [], [], []
        for r in records:
            if r.doc is None:
                deletes.append((r.table_number, r.id_key))
            elif r.replaces:
                updates.append((encode_document(r.doc), r.table_number, r.id_key))
            else:
                inserts.append((r.table_number, r.id_key, encode_document(r.doc)))
            for change in r.index_changes:
                old, new = change.old_key, change.new_key
                if old == new:
                    continue
                if old is not None and new is not None:
                    moved.append((new, change.index_id, old))
                elif old is not None:
                    removed.append((change.index_id, old))
                else:
                    added.append((change.index_id, new, r.id_key))
        try:
            w.execute("BEGIN")
            for table in new_tables:
                w.execute("INSERT INTO tables VALUES (?, ?)", (table.number, table.name))
                w.executemany(
                    "INSERT INTO indexes VALUES (?, ?, ?, ?)",
                    [
                        (i.index_id, table.number, i.name, json.dumps(list(i.fields)))
                        for i in table.indexes.values()
                        if i.index_id is not None
                    ],
                )
            if removed:
                w.executemany("DELETE FROM index_entries WHERE index_id=? AND key=?", removed)
            if moved:
                w.executemany("UPDATE index_entries SET key=? WHERE index_id=? AND key=?", moved)
            if deletes:
                w.executemany("DELETE FROM documents WHERE table_number=? AND id_key=?", deletes)
            if updates:
                w.executemany(
                    "UPDATE documents SET body=? WHERE table_number=? AND id_key=?", updates
                )
            if inserts:
                w.executemany("INSERT INTO documents VALUES (?, ?, ?)", inserts)
            if added:
                w.executemany("INSERT INTO index_entries VALUES (?, ?, ?)", added)
            w.execute("UPDATE meta SET value=? WHERE key='ts'", (str(ts),))
            w.execute("COMMIT")
        except sqlite3.Error as exc:
            if w.in_transaction:
                w.execute("ROLLBACK")
            raise PersistenceError(f"Commit failed, nothing was written: {exc}") from exc

    def documents_of(self, table_number: int) -> Iterator[tuple[bytes, dict[str, Value]]]:
        """Every `(id_key, document)` of a table (for index builds and schema checks)."""
        snap = self.snapshot()
        try:
            yield from snap.scan(table_number, None, b"", b"\xff", False)
        finally:
            snap.close()

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection and release the file lock; idempotent."""
        with self._pool_lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()
        with contextlib.suppress(sqlite3.Error):
            self._writer.close()
        self._cleanup()

    def _cleanup(self) -> None:
        lock = getattr(self, "_lock_file", None)
        if lock is not None:
            lock.close()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)

"""SQLite storage: the source of truth for documents, index entries and commit metadata.

Schema (one file, WAL mode):

- `documents(table_number, id_key, body)` WITHOUT ROWID: the latest revision of each document;
  its primary key is also the `by_id` index of every table.
- `index_entries(index_id, key, id_key)` WITHOUT ROWID: every other index, keyed by the
  order-preserving encoding of `[fields..., _creationTime, _id]`.
- `search_*` (`persistence.sqlite_search`): each search index kept by SQLite FTS5, written in
  the commits' own transactions.
- `tables`, `indexes`: the catalog. `meta`: the format version and a timestamp ceiling: no
  commit has a later ts. A commit whose ts passes the ceiling raises it by `_TS_LEASE` in the
  same transaction, so most commits write no `meta` page (that page cost a tenth of a commit),
  and after a restart the next ts is above every stored one. The exact ts of the latest commit
  is kept in memory (this process owns the file).

Snapshots are read transactions on pooled connections, so each one sees one commit. While no
write happens, consecutive snapshots share one open read transaction (no BEGIN, commit-ts
lookup and COMMIT per read); every write first ends that idle transaction, so no reader keeps
SQLite from resetting its WAL. Writes go through one writer connection, one SQLite
transaction per commit. `CurrentReader` reads the latest committed state through the writer
connection, one statement at a time, for callers that validate their reads against every later
commit (mutations under OCC). Opening a store reads only the catalog and metadata, never the
documents.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from kernel_ext.errors import PersistenceError, StoreLocked
from kernel_ext.persistence import sqlite_search
from kernel_ext.persistence.base import (
    CommitRecord,
    IndexChange,
    StoredCatalog,
    StoredIndex,
    all_documents,
)
from kernel_ext.persistence.files import FileStore, FolderFiles, MemoryFiles
from kernel_ext.persistence.scans import SqlReads
from kernel_ext.persistence.sql_rows import commit_rows
from kernel_ext.store.catalog import TableInfo
from kernel_ext.store.index_kinds import SearchIndexConfig, config_from_json
from kernel_ext.store.search import SearchSpec, SearchState
from kernel_ext.store.values import Value

__all__ = [
    "CommitRecord",
    "IndexChange",
    "SqlitePersistence",
    "SqliteSnapshot",
    "check_store_file",
    "storage_error",
]

_FORMAT_VERSION: Final = 4
#: How a store of format N becomes N + 1 (statements, or steps given the connection; run in
#: order, in the transaction that opens it): 2 added the index kind and config (search and
#: vector indexes); 3 keeps each search index in FTS5 tables, built from the documents; 4
#: rebuilds them with the tokenizer that keeps combining letters (vowel signs, points) in
#: words and lowercases as Convex does (format 3's split Hindi, Arabic or Hebrew words).
_UPGRADES: Final[dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]]] = {
    1: (
        "ALTER TABLE indexes ADD COLUMN kind TEXT NOT NULL DEFAULT 'db'",
        "ALTER TABLE indexes ADD COLUMN config TEXT",
    ),
    2: (sqlite_search.build_missing,),
    3: (sqlite_search.rebuild_all,),
}
#: How far ahead of a commit's ts the stored ceiling is raised (ns): at most ten `meta`
#: writes a second, and after a restart timestamps run at most this far ahead of the clock.
_TS_LEASE: Final = 100_000_000

_SCHEMA: Final = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tables (number INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS indexes (
    index_id INTEGER PRIMARY KEY, table_number INTEGER NOT NULL, name TEXT NOT NULL,
    fields TEXT NOT NULL, kind TEXT NOT NULL DEFAULT 'db', config TEXT,
    UNIQUE (table_number, name));
CREATE TABLE IF NOT EXISTS documents (
    table_number INTEGER NOT NULL, id_key BLOB NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (table_number, id_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries (
    index_id INTEGER NOT NULL, key BLOB NOT NULL, id_key BLOB NOT NULL,
    PRIMARY KEY (index_id, key)) WITHOUT ROWID;
"""
    + sqlite_search.STATS_SCHEMA
    + ";\n"
)

_INSERT_INDEX: Final = (
    "INSERT INTO indexes (index_id, table_number, name, fields, kind, config) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_STORE_TABLES: Final = frozenset(
    {"meta", "tables", "indexes", "documents", "index_entries", "search_stats"}
)
#: The first bytes of every SQLite database file.
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_HEADER_SIZE: Final = 100


def _apply(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Run `sql` for each of several rows (one `execute` for one row: cheaper than
    `executemany`)."""
    if len(rows) == 1:
        conn.execute(sql, rows[0])
    else:
        conn.executemany(sql, rows)


def _lock_owner_text(lock_path: Path, holder: int | None) -> str:
    """Who holds the store's lock: the owner its `.lock` file names, if that is the process
    holding the lock (`holder`, when known), else the holder's pid and command."""
    if holder == os.getpid():
        return "this process (the same file is already open, maybe through another path)"
    try:
        info = json.loads(lock_path.read_text())
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict) and (holder is None or info.get("pid") == holder):
        text = f"process {info.get('pid')} ({info.get('command', '?')})"
        return text + (f", serving {info['url']}" if info.get("url") else "")
    if holder is None:
        return "another process"
    try:
        argv = Path(f"/proc/{holder}/cmdline").read_bytes().split(b"\0")[:2]
        command = " ".join(a.decode(errors="replace") for a in argv if a)
    except OSError:
        command = "?"
    return f"process {holder} ({command})"


def _flock_holder(fd: int) -> int | None:
    """The pid holding a `flock` on the file of `fd`, from Linux's `/proc/locks` (None where
    it is not available): it names the owner even if the `.lock` file was deleted or the
    store was opened through a hard link."""
    st = os.fstat(fd)
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2149155 0 EOF" ("1: -> FLOCK ..." waits).
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == file_id:
            return int(parts[4]) if parts[4].isdigit() and int(parts[4]) > 0 else None
    return None


def check_store_file(path: Path, *, existed: bool) -> None:
    """Refuse a store file that is not an SQLite database or is shorter than its header
    says (truncated), before SQLite opens it: SQLite would read the missing pages as absent
    and may show an empty or damaged store, and the next write would overwrite what is left.

    The length is checked only when no write-ahead log beside it holds frames: while it
    does (a process was killed), the file may lag its header until the log is replayed.
    A file that exists but is empty holds nothing and opens as a new store, with a warning
    (it may be a store truncated to nothing).

    Raises:
        PersistenceError: the file is not a store or is truncated; it was not changed.
    """
    size = path.stat().st_size
    if size == 0:
        if existed and not _has_wal_frames(path):
            warnings.warn(
                f"The store file {path} exists but is empty: starting a new store in it. "
                "If it held data, it was truncated; restore it from a backup.",
                stacklevel=4,
            )
        return
    with open(path, "rb") as f:
        header = f.read(_HEADER_SIZE)
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise PersistenceError(
            f"{path} is not a store: it is {size:,} bytes and not an SQLite database "
            "(truncated, or another kind of file). It was left unchanged; open the right "
            "file, or restore the store from a backup."
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The in-header page count is valid only if the change counter matches
    # "version-valid-for" (SQLite file format, section 1.3.7).
    valid = pages > 0 and header[24:28] == header[92:96]
    if valid and size < pages * page_size and not _has_wal_frames(path):
        raise PersistenceError(
            f"{path} is truncated: it is {size:,} bytes but its header says {pages:,} pages "
            f"of {page_size:,} bytes ({pages * page_size:,} bytes). It was left unchanged; "
            "restore the store from a backup (or recover what is left with "
            f"`sqlite3 {path} .recover`)."
        )


def _has_wal_frames(path: Path) -> bool:
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except FileNotFoundError:
        return False


#: SQLite result codes (`sqlite_errorname`) by what they mean for the user; a prefix also
#: covers its extended codes (`SQLITE_CORRUPT_VTAB`, `SQLITE_READONLY_DBMOVED`).
_DAMAGED: Final = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_READ_ONLY: Final = frozenset({"SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"})
_READ_ONLY_ERRNOS: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(path: Path, action: str, exc: BaseException) -> PersistenceError:
    """A `PersistenceError` for a failure of SQLite or the file system: names the file, what
    failed, and what to do about it (chain it: `raise storage_error(...) from exc`)."""
    if isinstance(exc, PersistenceError):
        return exc
    name = getattr(exc, "sqlite_errorname", "") or ""
    code = getattr(exc, "errno", None)
    if name.startswith(_DAMAGED):
        advice = (
            f"the file is damaged. Restore it from a backup, or recover what is left with "
            f"`sqlite3 {path} .recover | sqlite3 recovered.db` and open that"
        )
    elif name.startswith("SQLITE_READONLY") or name in _READ_ONLY or code in _READ_ONLY_ERRNOS:
        advice = (
            f"the file or its folder {path.parent} cannot be written (read-only file system "
            f"or permissions). A store needs write access to both (SQLite writes "
            f"{path.name}-wal and {path.name}-shm beside it): make them writable, or copy "
            "the store to a writable folder"
        )
    elif name == "SQLITE_FULL" or code == errno.ENOSPC:
        advice = "the disk is full. Free some space and try again"
    else:
        advice = "check the file and its folder"
    return PersistenceError(f"{action} {path} failed: {exc} ({advice}).")


_GET_SQL: Final = "SELECT body FROM documents WHERE table_number=? AND id_key=?"
#: Any read: the first one fixes what a read transaction sees.
_FIRST_READ_SQL: Final = "SELECT 1 FROM meta LIMIT 1"
_SCAN_IDS_SQL: Final = (
    "SELECT id_key, body FROM documents WHERE table_number=? AND id_key>=? AND id_key<? "
    "ORDER BY id_key {} LIMIT ?"
)
_SCAN_INDEX_SQL: Final = (
    "SELECT e.key, d.body FROM index_entries e JOIN documents d "
    "ON d.table_number=? AND d.id_key=e.id_key "
    "WHERE e.index_id=? AND e.key>=? AND e.key<? ORDER BY e.key {} LIMIT ?"
)
#: (index scan?, descending?) -> statement
_SCAN_SQL: Final = {
    (False, False): _SCAN_IDS_SQL.format("ASC"),
    (False, True): _SCAN_IDS_SQL.format("DESC"),
    (True, False): _SCAN_INDEX_SQL.format("ASC"),
    (True, True): _SCAN_INDEX_SQL.format("DESC"),
}


class _ReadTransaction:
    """An open SQLite read transaction on a pooled connection, seeing the commit at `ts`.

    `generation` is the persistence's write generation when it began, if it began while no
    write was in progress and none started before the transaction saw its first row: then it
    shows the latest commit for as long as the generation stays the same (None: it may not).
    """

    __slots__ = ("conn", "generation", "ts")

    def __init__(self, conn: sqlite3.Connection, ts: int, generation: int | None) -> None:
        self.conn = conn
        self.ts = ts
        self.generation = generation


class SqliteSnapshot(SqlReads):
    """A read snapshot at one commit; implements `persistence.base.Snapshot`.

    Get it from `SqlitePersistence.snapshot()` and `close()` it when done; reads after
    `close()` raise `PersistenceError` (the read transaction may serve someone else by then).
    """

    __slots__ = ("_conn", "_owner", "_txn", "ts")
    GET_SQL = _GET_SQL
    SCAN_SQL = _SCAN_SQL

    def __init__(self, owner: SqlitePersistence, txn: _ReadTransaction) -> None:
        self._owner = owner
        self._txn = txn
        self._conn: sqlite3.Connection | None = txn.conn
        self.ts: int = txn.ts

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        conn = self._conn
        if conn is None:
            raise PersistenceError("This snapshot is closed")
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(self._owner.path, "Reading", exc) from exc

    def close(self) -> None:
        """End this snapshot; idempotent. The read transaction stays open for the next
        snapshot if no write happened meanwhile, else it ends and its connection returns to
        the pool."""
        if self._conn is not None:
            self._conn = None
            self._owner._end_read(self._txn)


class CurrentReader(SqlReads):
    """Reads of the latest committed state, each statement on its own (no snapshot).

    Consecutive reads may see different commits, so this is only for a caller that validates
    everything it read against every commit after `ts` before it relies on the result (OCC):
    a read that saw a later commit overlaps that commit's writes. Statements run on the writer
    connection between commits (its page cache stays warm across its own commits, and it
    never holds a read transaction open).

    Args:
        owner: the persistence to read.
        ts: a commit ts at or before every state this reader will see (the caller's lower
            bound for validation).
    """

    __slots__ = ("_owner", "ts")
    GET_SQL = _GET_SQL
    SCAN_SQL = _SCAN_SQL

    def __init__(self, owner: SqlitePersistence, ts: int) -> None:
        self._owner = owner
        self.ts = ts

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._owner._fetch_current(sql, params)

    def close(self) -> None:
        """Nothing to end: each read is a statement of its own."""


class SqlitePersistence:
    """A store file (or a private temporary one for `memory`); implements
    `persistence.base.Persistence`.

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
        #: The files' bytes (`ctx.storage`): a folder beside the file, in memory for `memory`.
        self.files: FileStore = (
            MemoryFiles()
            if self._tempdir is not None
            else FolderFiles(self.path.with_name(self.path.name + ".files"))
        )
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()  # guards the pool, `_generation` and `_idle`
        # Held for every use of the writer connection: a write transaction, or a
        # `CurrentReader` statement (which must never see a commit that is half written).
        # Reentrant: building an index reads the documents while holding it.
        self._write_lock = threading.RLock()
        # Odd while a write is in progress; +2 per write. A read transaction that began at an
        # even generation still shows the latest commit while the generation is unchanged.
        self._generation = 0
        self._idle: _ReadTransaction | None = None  # open at the latest commit, unused
        self._committed_ts = 0  # ts of the latest commit (guarded like `_generation`)
        self._ts_ceiling = 0  # the stored ceiling (changed under the write lock)
        self._closed = False
        self._lock_fd: int | None = None  # holds the store file's lock while open
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            self._acquire_lock()
            check_store_file(self.path, existed=existed)
            self._writer = self._open_writer()
            #: The search indexes, kept by FTS5 (changed under the write lock).
            self._search_indexes = sqlite_search.load_search_indexes(self._writer)
            #: The side rows searches have read (see `sqlite_search.SideRows`).
            self._search_rows = sqlite_search.SideRows()
        except (sqlite3.Error, OSError) as exc:
            self._cleanup()
            raise storage_error(self.path, "Cannot open the store", exc) from exc
        except BaseException:
            self._cleanup()
            raise

    # -- opening -------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        """Lock the database file itself, through the descriptor `_lock_fd` (which `_cleanup`
        closes, also when this fails).

        The lock is a `flock` on the store file (created if missing), held for the store's
        lifetime: it follows the file's inode, so deleting the `.lock` file or opening the
        store through a hard link or another path cannot get around it. Why not the
        alternatives: a POSIX `fcntl` lock on the file would be dropped as soon as SQLite
        closes any of its own descriptors of that file in this process (POSIX locks belong to
        the process and inode, not to a descriptor), and SQLite's `locking_mode=EXCLUSIVE`
        would also shut out this process's own pooled reader connections (the lock belongs
        to one connection), which the snapshots need. `flock` locks are separate from the
        `fcntl` byte-range locks SQLite takes (on Linux and the BSDs), so SQLite's own
        locking and other readers of the file are unaffected. The `.lock` file beside the
        store only tells a second process who owns it.

        Raises:
            StoreLocked: another process (or another open store in this one) holds it.
        """
        self._lock_fd = fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_path = self.path.with_name(self.path.name + ".lock")
            owner = _lock_owner_text(lock_path, _flock_holder(fd))
            raise StoreLocked(
                f"The store {self.path} is in use by {owner}. "
                "Connect to that process's server URL instead, or close it first."
            ) from None
        self.set_owner_info()

    def set_owner_info(self, url: str | None = None) -> None:
        """Record who owns the store (and the URL it serves, if any) in its lock file."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        info = {"pid": os.getpid(), "command": " ".join(sys.argv[:2]) or "python", "url": url}
        lock_path.write_text(json.dumps(info))

    def _open_writer(self) -> sqlite3.Connection:
        """The writer connection, once the file is known to be this store (or new): a file
        that is another database, or whose store rows are gone, is refused before anything
        is written to it (even the switch to WAL)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._check_catalog(conn)
            self._configure(conn)
            # One transaction: a store killed while it is created is either complete or
            # still empty (then opened as new), never tables without their `meta` rows.
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            self._init_meta(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_catalog(self, conn: sqlite3.Connection) -> None:
        """Refuse a database that is not a store: it has tables, yet no store format row
        (a store gets one in the transaction that creates its tables). Empty store tables
        without it are a creation that an earlier version left unfinished: opened as new."""
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in names and conn.execute("SELECT 1 FROM meta WHERE key='format'").fetchone():
            return
        if names <= _STORE_TABLES and not any(
            conn.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone() for name in names
        ):
            return  # new, or its creation was interrupted before anything was stored
        raise PersistenceError(
            f"{self.path} is an SQLite database but not a store (or its store rows are "
            f"gone: it has tables {sorted(names)[:5]} but no format row). Nothing was "
            "written to it. Open the right file, or restore the store from a backup."
        )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._configure(conn)
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'NORMAL' if self.durable else 'OFF'}")
        conn.execute("PRAGMA busy_timeout=10000")

    def _init_meta(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is None:
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("format", str(_FORMAT_VERSION)), ("ts", "0")]
            )
        elif int(row[0]) not in (*_UPGRADES, _FORMAT_VERSION):
            raise PersistenceError(
                f"{self.path} has store format {row[0]}, this version reads {_FORMAT_VERSION} "
                "and earlier: open it with the version that wrote it"
            )
        else:  # an older store is upgraded in this (the opening) transaction
            for version in range(int(row[0]), _FORMAT_VERSION):
                for statement in _UPGRADES[version]:
                    if isinstance(statement, str):
                        conn.execute(statement)
                    else:
                        statement(conn)
            conn.execute("UPDATE meta SET value=? WHERE key='format'", (str(_FORMAT_VERSION),))
        ceiling_row = conn.execute("SELECT value FROM meta WHERE key='ts'").fetchone()
        if ceiling_row is None:
            raise PersistenceError(
                f"{self.path} lacks its timestamp row: the store is damaged; restore it from "
                "a backup"
            )
        (ceiling,) = ceiling_row
        # Every stored commit is at or before the ceiling: the state of the file is the state
        # at that ts, and the next commit gets a later one.
        self._committed_ts = self._ts_ceiling = int(ceiling)

    def load_catalog(self) -> StoredCatalog:
        """`(tables [(number, name)], indexes [StoredIndex])`."""
        with self._write_lock:
            try:
                tables = self._writer.execute(
                    "SELECT number, name FROM tables ORDER BY number"
                ).fetchall()
                rows = self._writer.execute(
                    "SELECT index_id, table_number, name, fields, kind, config FROM indexes "
                    "ORDER BY index_id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(self.path, "Reading the catalog of", exc) from exc
        indexes = [
            StoredIndex(index_id, table, name, tuple(json.loads(fields)), kind, config)
            for index_id, table, name, fields, kind, config in rows
        ]
        return tables, indexes

    def last_ts(self) -> int:
        """The timestamp of the state a new snapshot sees: the latest commit's, or after a
        restart the stored ceiling (no commit is later; 0 for a new store)."""
        with self._pool_lock:
            return self._committed_ts

    # -- reading -------------------------------------------------------------------------

    def snapshot(self) -> SqliteSnapshot:
        """A read snapshot of the latest commit; call `close()` on it when done.

        Raises:
            PersistenceError: the store is closed or cannot be read.
        """
        with self._pool_lock:
            if self._closed:
                raise PersistenceError("The store is closed")
            txn, self._idle = self._idle, None
            if txn is not None:
                # Invariant: an idle transaction is at the current generation (a write ends
                # it before it changes anything), so it still shows the latest commit.
                return SqliteSnapshot(self, txn)
            generation = self._generation
            conn = self._pool.pop() if self._pool else None
        try:
            if conn is None:
                conn = self._connect()
            txn = self._begin_read(conn, generation)
        except sqlite3.Error as exc:
            if conn is not None:
                self._finish_read(conn)
            raise storage_error(self.path, "Reading", exc) from exc
        return SqliteSnapshot(self, txn)

    def _begin_read(self, conn: sqlite3.Connection, generation: int) -> _ReadTransaction:
        """Begin a read transaction and find the ts of the commit it sees.

        The transaction sees what was committed when its first statement ran. If no write was
        in progress when `generation` was read and none started until after that statement,
        that is the latest commit, `_committed_ts`. Otherwise begin again while holding the
        write lock, which keeps writes out (or is held by this thread, whose write is not
        committed yet): then too the latest commit is what it sees.
        """
        conn.execute("BEGIN")
        conn.execute(_FIRST_READ_SQL).fetchall()
        with self._pool_lock:
            if generation % 2 == 0 and generation == self._generation:
                return _ReadTransaction(conn, self._committed_ts, generation)
        conn.execute("COMMIT")
        with self._write_lock:
            conn.execute("BEGIN")
            conn.execute(_FIRST_READ_SQL).fetchall()
            with self._pool_lock:
                latest = self._generation % 2 == 0  # odd: this thread is writing
                return _ReadTransaction(
                    conn, self._committed_ts, self._generation if latest else None
                )

    def _end_read(self, txn: _ReadTransaction) -> None:
        """A snapshot is done with `txn`: keep it open for the next snapshot while it shows the
        latest commit, else end it."""
        with self._pool_lock:
            if (
                not self._closed
                and self._idle is None
                and txn.generation is not None
                and txn.generation == self._generation
            ):
                self._idle = txn
                return
        self._finish_read(txn.conn)

    def _finish_read(self, conn: sqlite3.Connection) -> None:
        """End the read transaction on `conn` (if any) and return it to the pool."""
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error:
            conn.close()
            return
        self._release(conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if self._closed:
                conn.close()
            else:
                self._pool.append(conn)

    def current_reader(self, ts: int) -> CurrentReader:
        """Reads of the latest committed state, statement by statement (see `CurrentReader`);
        `ts` is the caller's lower bound on the commits it will see."""
        return CurrentReader(self, ts)

    def _fetch_current(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._write_lock:
            if self._closed:
                raise PersistenceError("The store is closed")
            try:
                return self._writer.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(self.path, "Reading", exc) from exc

    def _begin_write(self) -> sqlite3.Connection:
        """Take the writer connection for one write; `_end_write` must follow. Ends the idle
        read transaction first (an open reader would keep SQLite from resetting its WAL, and
        would no longer show the latest commit) and marks the generation odd until the end."""
        self._write_lock.acquire()
        with self._pool_lock:
            self._generation += 1
            idle, self._idle = self._idle, None
        if idle is not None:
            self._finish_read(idle.conn)
        return self._writer

    def _end_write(self, committed_ts: int | None = None) -> None:
        """End a write begun with `_begin_write` (that committed `committed_ts`, if any)."""
        with self._pool_lock:
            if committed_ts is not None and committed_ts > self._committed_ts:
                self._committed_ts = committed_ts
            self._generation += 1
        self._write_lock.release()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """`_begin_write` ... `_end_write` around a block, for writes other than commits. Any
        exception (also one from reading the rows to write, or Ctrl-C) rolls back the block's
        transaction, so that the next write does not join it."""
        writer = self._begin_write()
        try:
            yield writer
        except BaseException as exc:
            self._roll_back(writer, exc, "Writing (nothing was written)")
            raise
        finally:
            self._end_write()

    def _roll_back(self, writer: sqlite3.Connection, exc: BaseException, what: str) -> None:
        """Undo the writer's open transaction after `exc` (any exception: also Ctrl-C between
        statements, so that the next write does not join it); an SQLite error is raised again
        as the `PersistenceError` that says `what` failed. Call from an `except` block."""
        if writer.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                writer.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise storage_error(self.path, what, exc) from exc

    # -- writing (the engine serializes these calls) -------------------------------------

    def create_index(
        self,
        index_id: int,
        table_number: int,
        name: str,
        fields: tuple[str, ...],
        entries: Iterable[tuple[bytes, bytes]],
        *,
        kind: str = "db",
        config: str | None = None,
    ) -> None:
        """Persist a new index with its `(key, id_key)` entries (built from the existing
        documents), in one transaction: a process killed while it runs leaves no index
        rather than an empty one, which queries would trust and find nothing in. A search
        index gets its FTS5 tables, filled from the documents, in the same transaction."""
        search = config_from_json(kind, config) if kind == "search" else None
        with self._writing() as w:
            w.execute("BEGIN")
            w.execute(
                _INSERT_INDEX,
                (index_id, table_number, name, json.dumps(list(fields)), kind, config),
            )
            w.executemany(
                "INSERT INTO index_entries VALUES (?, ?, ?)", ((index_id, k, i) for k, i in entries)
            )
            if isinstance(search, SearchIndexConfig):
                sqlite_search.create_search(w, index_id, table_number, search)
                self._search_rows.forget(index_id)
            w.execute("COMMIT")
            if isinstance(search, SearchIndexConfig):
                self._search_indexes.setdefault(table_number, []).append((index_id, search))

    def fill_index(self, index_id: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Add `(key, id_key)` entries to an existing index, in one transaction (repairs an
        index that an earlier version created empty, see `unfilled_indexes`)."""
        with self._writing() as w:
            w.execute("BEGIN")
            w.executemany(
                "INSERT INTO index_entries VALUES (?, ?, ?)", ((index_id, k, i) for k, i in entries)
            )
            w.execute("COMMIT")

    def unfilled_indexes(self) -> list[int]:
        """The ids of the indexes that hold no entry although their table holds documents.

        Earlier versions created an index and filled it in two transactions, so a process
        killed in between left it empty for good. Cheap: two index lookups per index.
        """
        with self._write_lock:
            try:
                rows = self._writer.execute(
                    "SELECT i.index_id FROM indexes i WHERE i.kind = 'db' AND NOT EXISTS "
                    "(SELECT 1 FROM index_entries e WHERE e.index_id=i.index_id) AND EXISTS "
                    "(SELECT 1 FROM documents d WHERE d.table_number=i.table_number)"
                ).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(self.path, "Reading the catalog of", exc) from exc
        return [index_id for (index_id,) in rows]

    def drop_index(self, index_id: int) -> None:
        """Delete an index and its entries (a search index: its FTS5 tables)."""
        with self._writing() as w:
            w.execute("BEGIN")
            w.execute("DELETE FROM index_entries WHERE index_id=?", (index_id,))
            w.execute("DELETE FROM indexes WHERE index_id=?", (index_id,))
            search = any(i == index_id for s in self._search_indexes.values() for i, _ in s)
            if search:
                sqlite_search.drop_search(w, index_id)
                self._search_rows.forget(index_id)
            w.execute("COMMIT")
            if search:
                for indexes in self._search_indexes.values():
                    indexes[:] = [(i, c) for i, c in indexes if i != index_id]

    def write_commit(
        self, ts: int, records: list[CommitRecord], new_tables: Iterable[TableInfo] = ()
    ) -> None:
        """Apply one commit atomically (with the tables it created) and record its timestamp.

        Raises:
            PersistenceError: nothing of the commit was written.
        """
        inserts, updates, deletes, removed, moved, added = commit_rows(records)
        w = self._begin_write()
        committed = None
        try:
            try:
                w.execute("BEGIN")
                for table in new_tables:
                    w.execute("INSERT INTO tables VALUES (?, ?)", (table.number, table.name))
                    w.executemany(
                        _INSERT_INDEX,
                        [
                            (
                                i.index_id,
                                table.number,
                                i.name,
                                json.dumps(list(i.fields)),
                                "db",
                                None,
                            )
                            for i in table.indexes.values()
                            if i.index_id is not None
                        ],
                    )
                if removed:
                    _apply(w, "DELETE FROM index_entries WHERE index_id=? AND key=?", removed)
                if moved:
                    _apply(w, "UPDATE index_entries SET key=? WHERE index_id=? AND key=?", moved)
                if deletes:
                    _apply(w, "DELETE FROM documents WHERE table_number=? AND id_key=?", deletes)
                if updates:
                    _apply(
                        w, "UPDATE documents SET body=? WHERE table_number=? AND id_key=?", updates
                    )
                if inserts:
                    _apply(w, "INSERT INTO documents VALUES (?, ?, ?)", inserts)
                if added:
                    _apply(w, "INSERT INTO index_entries VALUES (?, ?, ?)", added)
                if self._search_indexes:
                    sqlite_search.write_search(
                        w,
                        self._search_indexes,
                        ((r.table_number, r.id_key, r.doc, r.replaces) for r in records),
                        self._search_rows,
                    )
                ceiling = ts + _TS_LEASE if ts > self._ts_ceiling else None
                if ceiling is not None:
                    w.execute("UPDATE meta SET value=? WHERE key='ts'", (str(ceiling),))
                w.execute("COMMIT")
            except BaseException as exc:
                self._roll_back(w, exc, "Commit failed, nothing was written: writing")
                raise
            if ceiling is not None:
                self._ts_ceiling = ceiling
            committed = ts
        finally:
            self._end_write(committed)

    def documents_of(self, table_number: int) -> Iterator[tuple[bytes, dict[str, Value]]]:
        """Every `(id_key, document)` of a table (for index builds and schema checks)."""
        return all_documents(self, table_number)

    def search_state(
        self, snapshot: Any, index_id: int, spec: SearchSpec, *, all_prefixes: bool
    ) -> SearchState:
        """See `persistence.base.FullTextSearch`: read from the FTS5 tables by the
        snapshot's read transaction (a `CurrentReader`: every statement on the writer
        connection under the write lock, so they all see one commit)."""
        if isinstance(snapshot, SqliteSnapshot):
            conn = snapshot._conn
            if conn is None:
                raise PersistenceError("This snapshot is closed")
            try:
                return sqlite_search.search_state(
                    conn, index_id, spec, all_prefixes=all_prefixes, rows=self._search_rows
                )
            except sqlite3.Error as exc:
                raise storage_error(self.path, "Searching", exc) from exc
        if not isinstance(snapshot, CurrentReader):
            raise PersistenceError(f"Cannot search {self.path} through {snapshot!r}")
        with self._write_lock:
            if self._closed:
                raise PersistenceError("The store is closed")
            try:
                return sqlite_search.search_state(
                    self._writer,
                    index_id,
                    spec,
                    all_prefixes=all_prefixes,
                    rows=self._search_rows,
                )
            except sqlite3.Error as exc:
                raise storage_error(self.path, "Searching", exc) from exc

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection and release the file lock; idempotent."""
        with self._pool_lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, []
            if self._idle is not None:
                pool.append(self._idle.conn)
                self._idle = None
        for conn in pool:
            conn.close()
        with self._write_lock, contextlib.suppress(sqlite3.Error):
            self._writer.close()
        self._cleanup()

    def _cleanup(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the lock
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)

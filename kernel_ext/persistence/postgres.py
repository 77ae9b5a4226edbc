"""PostgreSQL storage: one store that any number of processes, on any number of machines, open
at once (`postgresql://user:password@host:port/dbname`).

Tables (created on first open, in the URL's database; all named `convex_*`):

- `convex_documents(table_number, id_key, body)` and `convex_index_entries(index_id, key,
  id_key)`: as in the SQLite store (`bytea` keys compare bytewise, so index ranges stay byte
  ranges); `convex_tables`, `convex_indexes`: the catalog; `convex_meta`: the format version
  (a store written by an incompatible version is refused) and settings every process shares
  (the served admin key); `convex_pushes`: function definitions pushed to a `serve` process,
  which every other `serve` process applies too; two sequences number tables and indexes.
- `convex_clock`: one row, the ts of the latest commit. A commit sets it to `max(ts + 1, the
  database's clock in ns)`, so timestamps never decrease, whichever process commits.
- `convex_commit_log(ts, prev_ts, commit_id, body)`: recent commits (`commit_log` entries, the
  last `LOG_WINDOW_NS`), from which every process replays the commits made elsewhere.

Commits (`CommitSession`): a READ COMMITTED transaction takes the one cluster-wide lock (`FOR
UPDATE` on the clock row) and reads the log entries the engine has not seen, in one query; the
engine validates against them; a second query writes the documents, index entries and the log
entry, moves the clock, `NOTIFY`s `convex_commits` (with the ts) and commits. When no other
process committed since this one last looked, `commit_if_latest` does it all in one query (a
clock check in place of the log read). Queries are simple-protocol, values inlined as literals
(`_literal`): psycopg's pipeline mode cost more than the round trips it saved, and after a
pipeline PostgreSQL does not arm the idle-in-transaction timer that ends a frozen lock
holder's session (`commit_lock_limit_s`). A commit whose connection is lost is looked up by
its id in the log once its server process is gone (`CommitNotWritten` if it was not stored,
`CommitOutcomeUnknown` if the database cannot tell).

Reads: a snapshot is a REPEATABLE READ, READ ONLY transaction on a pooled connection; its ts is
the clock it sees. A read on a connection found broken (the server restarted) is retried once
on a new one. Every connection has a connect timeout and TCP keepalives, so a dead server is
an error within seconds, never a hang. Errors name the host, port and database, never the
password.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, NamedTuple, TypeVar

import psycopg
from psycopg import sql as pgsql

from kernel_ext.errors import CommitNotWritten, CommitOutcomeUnknown, PersistenceError
from kernel_ext.persistence.base import (
    CommitRecord,
    LogEntry,
    StoredCatalog,
    StoredIndex,
    all_documents,
)
from kernel_ext.persistence.commit_log import LoggedCommit, encode_commit
from kernel_ext.persistence.files import FileStore, PostgresFiles
from kernel_ext.persistence.scans import SqlReads, scan_in_batches
from kernel_ext.persistence.sql_rows import commit_rows
from kernel_ext.persistence.urls import mask_password
from kernel_ext.store.catalog import TableInfo
from kernel_ext.store.values import Value

__all__ = ["CommitSession", "PostgresPersistence", "PostgresSnapshot"]

T = TypeVar("T")

#: Format "2" added the index kind and config (search and vector indexes); a store of
#: format "1" is upgraded when opened (`_UPGRADE_FROM_1`).
_FORMAT_VERSION: Final = "2"
#: How long commits stay in the log (ns): a process that falls further behind (disconnected)
#: catches up by re-running every live query instead of replaying.
LOG_WINDOW_NS: Final = 300 * 1_000_000_000
#: Prune the log once per this many commits of a process.
_PRUNE_EVERY: Final = 256
_CHANNEL: Final = "convex_commits"
#: Entries read per `log_after` call.
_LOG_BATCH: Final = 1000
#: How long (s) a commit session may sit idle in its transaction, holding the commit lock:
#: longer than a mutation run serially under the lock may take (the served time limit is 10 s).
COMMIT_LOCK_LIMIT_S: Final = 30.0
#: A snapshot keeps results of at most this many rows, and at most `_CACHED_ROWS` in all.
_CACHED_RESULT_ROWS: Final = 64
_CACHED_ROWS: Final = 20_000
#: Idle connections kept per process.
_POOL_KEEP: Final = 8
#: A database clock in ns, in SQL.
_NOW_NS: Final = "(extract(epoch from clock_timestamp()) * 1000000000)::bigint"
_CONNECT_OPTIONS: Final[dict[str, Any]] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,
    "application_name": "convex-notebook",
    # The server's side too: a client that vanished while holding the commit lock must not
    # hold up every other process for the hours of the default keepalive.
    # (Commits inline values as literals: standard strings, backslashes kept as they are.)
    "options": (
        "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
        "-c tcp_user_timeout=15000 -c standard_conforming_strings=on"
    ),
}
#: One transaction-level advisory lock key: creating the tables is serialized across processes.
_SETUP_LOCK: Final = 0x636F6E766578  # "convex"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS convex_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS convex_clock (id int PRIMARY KEY CHECK (id = 1), ts bigint NOT NULL);
CREATE TABLE IF NOT EXISTS convex_tables (number int PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS convex_indexes (
    index_id int PRIMARY KEY, table_number int NOT NULL, name text NOT NULL,
    fields text NOT NULL, kind text NOT NULL DEFAULT 'db', config text,
    UNIQUE (table_number, name));
CREATE TABLE IF NOT EXISTS convex_documents (
    table_number int NOT NULL, id_key bytea NOT NULL, body bytea NOT NULL,
    PRIMARY KEY (table_number, id_key));
CREATE TABLE IF NOT EXISTS convex_index_entries (
    index_id int NOT NULL, key bytea NOT NULL, id_key bytea NOT NULL,
    PRIMARY KEY (index_id, key));
CREATE TABLE IF NOT EXISTS convex_commit_log (
    ts bigint PRIMARY KEY, prev_ts bigint NOT NULL, commit_id uuid NOT NULL UNIQUE,
    body bytea NOT NULL);
CREATE TABLE IF NOT EXISTS convex_pushes (seq bigserial PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE IF NOT EXISTS convex_files (
    key text NOT NULL, seq int NOT NULL, data bytea NOT NULL,
    created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (key, seq));
CREATE SEQUENCE IF NOT EXISTS convex_table_numbers;
CREATE SEQUENCE IF NOT EXISTS convex_index_ids;
INSERT INTO convex_clock VALUES (1, 0) ON CONFLICT DO NOTHING;
"""
#: Format "1" to "2", in the transaction that opens the store (under the setup lock).
_UPGRADE_FROM_1: Final = """
ALTER TABLE convex_indexes ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'db',
    ADD COLUMN IF NOT EXISTS config text;
UPDATE convex_meta SET value = '2' WHERE key = 'format' AND value = '1';
"""

_GET_SQL: Final = "SELECT body FROM convex_documents WHERE table_number=%s AND id_key=%s"
#: The statements of a commit, `{values}` filled with rows of literals (see `commit_rows`).
_INSERT_TABLES: Final = "INSERT INTO convex_tables VALUES {values}"
_INSERT_INDEXES: Final = (
    "INSERT INTO convex_indexes (index_id, table_number, name, fields, kind, config) "
    "VALUES {values}"
)
_DELETE_ENTRIES: Final = (
    "DELETE FROM convex_index_entries WHERE (index_id, key) IN (VALUES {values})"
)
_MOVE_ENTRIES: Final = (
    "UPDATE convex_index_entries e SET key = v.new_key FROM (VALUES {values}) "
    "AS v(new_key, index_id, old_key) WHERE e.index_id = v.index_id AND e.key = v.old_key"
)
_DELETE_DOCUMENTS: Final = (
    "DELETE FROM convex_documents WHERE (table_number, id_key) IN (VALUES {values})"
)
_UPDATE_DOCUMENTS: Final = (
    "UPDATE convex_documents d SET body = v.body FROM (VALUES {values}) "
    "AS v(body, table_number, id_key) WHERE d.table_number = v.table_number "
    "AND d.id_key = v.id_key"
)
_INSERT_DOCUMENTS: Final = "INSERT INTO convex_documents VALUES {values}"
_INSERT_ENTRIES: Final = "INSERT INTO convex_index_entries VALUES {values}"
#: Rows per statement, and characters per query sent, of a commit's writes.
_ROWS_PER_STATEMENT: Final = 2000
_BATCH_CHARS: Final = 4_000_000


def _literal(value: Any) -> str:
    """`value` (int, bytes, str or None) as an SQL literal. Only values this module made are
    inlined: ints, bytes as hex, and names and JSON the catalog checked; strings are quoted
    as standard strings (`standard_conforming_strings` is on for every connection)."""
    if isinstance(value, bytes):
        return "'\\x" + value.hex() + "'::bytea"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("cannot inline a string holding NUL in SQL")
        return "'" + value.replace("'", "''") + "'"
    if value is None:
        return "NULL"
    raise TypeError(f"cannot inline {type(value).__name__} in SQL")


_SCAN_IDS_SQL: Final = (
    "SELECT id_key, body FROM convex_documents WHERE table_number=%s AND id_key>=%s "
    "AND id_key<%s ORDER BY id_key {} LIMIT %s"
)
_SCAN_INDEX_SQL: Final = (
    "SELECT e.key, d.body FROM convex_index_entries e JOIN convex_documents d "
    "ON d.table_number=%s AND d.id_key=e.id_key "
    "WHERE e.index_id=%s AND e.key>=%s AND e.key<%s ORDER BY e.key {} LIMIT %s"
)
_SCAN_SQL: Final = {
    (False, False): _SCAN_IDS_SQL.format("ASC"),
    (False, True): _SCAN_IDS_SQL.format("DESC"),
    (True, False): _SCAN_INDEX_SQL.format("ASC"),
    (True, True): _SCAN_INDEX_SQL.format("DESC"),
}
#: A server process by pid and start time (a later process may reuse the pid; an unknown
#: start time matches the pid alone). Parameters: pid, start, start.
_SAME_BACKEND: Final = "pid = %s AND (%s::timestamptz IS NULL OR backend_start = %s)"
#: The SQLSTATE of a deferred-lock commit that found a newer clock (`Stale`).
_STALE: Final = "CX001"
_LOG_SQL: Final = (
    "SELECT ts, prev_ts, body FROM convex_commit_log WHERE ts > %s ORDER BY ts LIMIT %s"
)


class _Where(NamedTuple):
    """What errors name: the server and database, never the password."""

    host: str
    port: str
    dbname: str
    url: str  # masked

    def error(self, action: str, exc: BaseException, secret: str | None) -> PersistenceError:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if secret:
            reason = reason.replace(secret, "***")
        return PersistenceError(
            f"PostgreSQL at {self.host}:{self.port} (database {self.dbname!r}): {action} "
            f"failed: {reason}"
        )


def _where(url: str) -> tuple[_Where, str | None]:
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise PersistenceError(
            f"{mask_password(url)!r} is not a PostgreSQL URL libpq understands ({exc}); write "
            "postgresql://user:password@host:port/dbname"
        ) from None
    password = info.get("password")
    return (
        _Where(
            str(info.get("host") or "localhost"),
            str(info.get("port") or "5432"),
            str(info.get("dbname") or info.get("user") or "?"),
            mask_password(url),
        ),
        str(password) if password else None,
    )


class _Pool:
    """Idle autocommit connections, reused; a connection found broken is dropped (with every
    other idle one: after a server restart all of them are dead)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        self._connect = connect
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self.closed = False

    def get(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self.closed:
                raise PersistenceError("The store is closed")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def put(self, conn: psycopg.Connection[Any]) -> None:
        ok = not conn.broken and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if ok and not self.closed and len(self._idle) < _POOL_KEEP:
                self._idle.append(conn)
                return
        conn.close()

    def discard(self, conn: psycopg.Connection[Any]) -> None:
        """Close `conn` (found broken) and every idle connection."""
        conn.close()
        with self._lock:
            idle, self._idle = self._idle, []
        for other in idle:
            other.close()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresSnapshot(SqlReads):
    """A REPEATABLE READ, READ ONLY transaction at one commit; implements
    `persistence.base.Snapshot`."""

    __slots__ = ("_cache", "_cached_rows", "_conn", "_owner", "ts")
    GET_SQL = _GET_SQL
    SCAN_SQL = _SCAN_SQL

    def __init__(self, owner: PostgresPersistence, conn: psycopg.Connection[Any], ts: int) -> None:
        self._owner = owner
        self._conn: psycopg.Connection[Any] | None = conn
        self.ts = ts
        # Small results by statement: the live queries of one round often read the same
        # documents (a commit that affects a thousand subscriptions), and a round trip costs
        # far more than a lookup. Exact, since nothing changes what the snapshot sees.
        self._cache: dict[tuple[str, tuple[Any, ...]], list[Any]] = {}
        self._cached_rows = 0

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        key = (sql, params)
        rows = self._cache.get(key)
        if rows is not None:
            return rows
        conn = self._conn
        if conn is None:
            raise PersistenceError("This snapshot is closed")
        try:
            rows = conn.execute(sql, params, prepare=True).fetchall()
        except psycopg.Error as exc:
            raise self._owner.error("Reading", exc) from None
        if len(rows) <= _CACHED_RESULT_ROWS and self._cached_rows < _CACHED_ROWS:
            self._cache[key] = rows
            self._cached_rows += len(rows) + 1
        return rows

    def close(self) -> None:
        """End the transaction and return the connection; idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._cache.clear()
        try:
            conn.execute("COMMIT")
        except psycopg.Error:
            conn.close()
            return
        self._owner.pool.put(conn)


class CurrentReader(SqlReads):
    """Reads of the latest committed state, one autocommit statement at a time, for a caller
    that validates its reads against every commit after `ts` (OCC); see
    `Persistence.current_reader`."""

    __slots__ = ("_owner", "ts")
    GET_SQL = _GET_SQL
    SCAN_SQL = _SCAN_SQL

    def __init__(self, owner: PostgresPersistence, ts: int) -> None:
        self._owner = owner
        self.ts = ts

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._owner.fetch(sql, params)

    def close(self) -> None:
        """Nothing to end: each read is a statement of its own."""


class Stale(Exception):
    """`commit_if_latest`'s commit was not written: another process committed since."""


def _session_timeout(owner: PostgresPersistence) -> str:
    """The statement bounding how long a commit session may sit idle holding the lock."""
    return (
        "SET LOCAL idle_in_transaction_session_timeout = "
        f"'{int(owner.commit_lock_limit_s * 1000)}ms'"
    )


class CommitSession:
    """The cluster-wide commit lock, held: a READ COMMITTED transaction that locked the clock
    row. Nothing commits anywhere until it ends (`finish` commits; leaving the `with` block of
    `PostgresPersistence.exclusive` without it rolls back).

    Attributes:
        clock: the ts of the latest commit (no other can come while the lock is held).
    """

    def __init__(
        self,
        owner: PostgresPersistence,
        conn: psycopg.Connection[Any],
        since: int,
        *,
        expect_clock: int | None = None,
    ) -> None:
        self._owner = owner
        self._conn = conn
        self._statements: list[str] = []
        self.finished = False
        if expect_clock is not None:
            # Deferred: `finish` takes the lock in its own query, and fails with `Stale`
            # unless the clock is still `expect_clock` (see `commit_if_latest`).
            self.clock = expect_clock
            self._since = since
            self._log: list[LogEntry] = []
            self._statements = [
                "BEGIN",
                _session_timeout(owner),
                "DO $$ BEGIN IF (SELECT ts FROM convex_clock WHERE id = 1 FOR UPDATE) <> "
                f"{int(expect_clock)} THEN RAISE EXCEPTION 'stale' USING ERRCODE = "
                f"'{_STALE}'; END IF; END $$",
            ]
            return
        # One round trip: the lock, then (behind it, so complete) the log after `since`. One
        # simple query (the numbers are ints, safe to inline), not a pipeline: after a
        # pipeline the server does not arm its idle-in-transaction timer (PostgreSQL 15).
        # (psycopg errors propagate: `PostgresPersistence.exclusive` words them.)
        cur = conn.execute(
            f"BEGIN; {_session_timeout(owner)}; "
            "SELECT ts FROM convex_clock WHERE id = 1 FOR UPDATE; "
            "SELECT ts, prev_ts, body FROM convex_commit_log "
            f"WHERE ts > {int(since)} ORDER BY ts LIMIT {_LOG_BATCH}"
        )
        cur.nextset()  # past BEGIN
        cur.nextset()  # past SET
        row = cur.fetchone()
        cur.nextset()
        rows = cur.fetchall()
        assert row is not None
        self.clock = int(row[0])
        self._since = since
        self._log = [LogEntry(t, p, bytes(b)) for t, p, b in rows]

    def log_after(self, ts: int) -> list[LogEntry]:
        """Every log entry after `ts`, oldest first (all of them: nothing can commit now)."""
        if ts == self._since and len(self._log) < _LOG_BATCH:
            return self._log
        entries: list[LogEntry] = []
        while True:
            batch = self._fetch(_LOG_SQL, (ts, _LOG_BATCH))
            entries.extend(LogEntry(t, p, bytes(b)) for t, p, b in batch)
            if len(batch) < _LOG_BATCH:
                return entries
            ts = entries[-1].ts

    def reader(self) -> CurrentReader:
        """Reads of the latest state (with the lock held, nothing changes it but this
        session; reads do not see this session's own pending writes)."""
        return CurrentReader(self._owner, self.clock)

    def documents_of(self, table_number: int) -> Iterator[tuple[bytes, dict[str, Value]]]:
        """Every `(id_key, document)` of a table, as of the latest commit."""
        return scan_in_batches(
            self._fetch, _SCAN_SQL, table_number, None, lo=b"", hi=b"\xff", descending=False
        )

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise self._owner.error("Reading", exc) from None

    def fetch_now(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run one statement in the session's transaction now (not queued); its rows."""
        return self._fetch(sql, params)

    def write(self, records: list[CommitRecord], new_tables: Iterable[TableInfo] = ()) -> None:
        """Queue a commit's documents, index entries and new tables (sent by `finish`)."""
        inserts, updates, deletes, removed, moved, added = commit_rows(records)
        for table in new_tables:
            self._queue(_INSERT_TABLES, [(table.number, table.name)])
            self._queue(
                _INSERT_INDEXES,
                [
                    (i.index_id, table.number, i.name, json.dumps(list(i.fields)), "db", None)
                    for i in table.indexes.values()
                    if i.index_id is not None
                ],
            )
        self._queue(_DELETE_ENTRIES, removed)
        # Keys end with the document's id, so a moved key never lands on another's old key.
        self._queue(_MOVE_ENTRIES, moved)
        self._queue(_DELETE_DOCUMENTS, deletes)
        self._queue(_UPDATE_DOCUMENTS, updates)
        self._queue(_INSERT_DOCUMENTS, inserts)
        self._queue(_INSERT_ENTRIES, added)

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
        """Queue a new index with its `(key, id_key)` entries."""
        row = (index_id, table_number, name, json.dumps(list(fields)), kind, config)
        self._queue(_INSERT_INDEXES, [row])
        self.fill_index(index_id, entries)

    def fill_index(self, index_id: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Queue `(key, id_key)` entries of an index."""
        self._queue(_INSERT_ENTRIES, [(index_id, key, id_of) for key, id_of in entries])

    def drop_index(self, index_id: int) -> None:
        """Queue the removal of an index and its entries."""
        index_id = int(index_id)
        self._statements.append(f"DELETE FROM convex_index_entries WHERE index_id = {index_id}")
        self._statements.append(f"DELETE FROM convex_indexes WHERE index_id = {index_id}")

    def _queue(self, template: str, rows: list[tuple[Any, ...]]) -> None:
        """Queue `template` with its `{values}` filled by `rows` (several statements for
        many rows)."""
        values: list[str] = []
        size = 0
        for row in rows:
            value = "(" + ", ".join(map(_literal, row)) + ")"
            values.append(value)
            size += len(value)
            # Bounded in rows and in characters (PostgreSQL refuses a message over 1 GB).
            if len(values) == _ROWS_PER_STATEMENT or size > _BATCH_CHARS:
                self._statements.append(template.format(values=", ".join(values)))
                values, size = [], 0
        if values:
            self._statements.append(template.format(values=", ".join(values)))

    def finish(self, body: bytes, ts: int | None = None) -> int:
        """Write what was queued and the log entry `body`, move the clock, notify every process
        and commit; returns the commit's ts (`ts` if given: it must be later than the clock).

        Raises:
            PersistenceError: nothing was written.
            CommitOutcomeUnknown: the connection was lost during the commit and the database
                could not tell afterwards whether it was stored.
        """
        conn = self._conn
        commit_id = uuid.uuid4()
        pid = conn.info.backend_pid
        started = self._owner.backend_start(conn)
        self.finished = True
        new_ts = _NOW_NS if ts is None else str(int(ts))
        tail = [
            "WITH c AS (UPDATE convex_clock SET ts = GREATEST(ts + 1, "
            f"{new_ts}) WHERE id = 1 RETURNING ts) INSERT INTO convex_commit_log SELECT c.ts, "
            f"{int(self.clock)}, '{commit_id}', {_literal(body)} FROM c RETURNING ts",
            # The payload is the ts: a process that knows it already needs no catch-up.
            f"SELECT pg_notify('{_CHANNEL}', (SELECT ts FROM convex_clock WHERE id = 1)::text)",
            "COMMIT",
        ]
        try:
            # A few simple queries of many statements each (usually one: one round trip and
            # no per-statement protocol work; values are inlined as literals).
            batch: list[str] = []
            size = 0
            for statement in self._statements:
                if size + len(statement) > _BATCH_CHARS and batch:
                    conn.execute("; ".join(batch))
                    batch, size = [], 0
                batch.append(statement)
                size += len(statement)
            cur = conn.execute("; ".join([*batch, *tail]))
            for _ in batch:
                cur.nextset()
            row = cur.fetchone()
        except psycopg.OperationalError as exc:
            # The outcome is unknown even on a connection psycopg does not call broken (yet):
            # the server may end it right after the COMMIT went through ("cannot exit pipeline
            # mode while busy"). Ask the commit log once the session is gone.
            conn.close()
            committed = self._owner.lookup_commit(commit_id, (pid, started), exc)
            if committed is None:
                lost = self._owner.error(
                    "Commit (the connection was lost; the commit log shows it was not written)",
                    exc,
                )
                raise CommitNotWritten(str(lost)) from None
            return committed
        except psycopg.Error as exc:
            self._roll_back()
            if exc.sqlstate == _STALE:
                raise Stale from None
            raise self._owner.error("Commit (nothing was written):", exc) from None
        except BaseException:
            # Ctrl-C mid-pipeline: closing the connection rolls back, unless COMMIT had already
            # reached the server: then the commit stands, and this process's follower replays
            # it from the log like another process's.
            conn.close()
            raise
        assert row is not None
        self._owner.committed(row[0])
        return int(row[0])

    def _roll_back(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except psycopg.Error:
            self._conn.close()

    def end(self) -> None:
        """Roll back unless `finish` ran, and return the connection."""
        if not self.finished and not self._conn.closed:
            self._roll_back()
        if self._conn.closed:
            return
        self._owner.pool.put(self._conn)


class PostgresPersistence:
    """A store in a PostgreSQL database; implements `persistence.base.Persistence` plus what
    a shared store needs (`exclusive`, `log_after`, `wait_for_commits`, `next_number`).

    Args:
        url: `postgresql://user:password@host:port/dbname` (the database must exist).
        commit_lock_limit_s: a commit session of this process that sits idle this long while
            it holds the commit lock (the process froze, slept, stopped at a breakpoint) is
            ended by the server, so that the other processes can commit again.

    Raises:
        PersistenceError: the server cannot be reached (host, port and reason named), the
            database does not exist, or it holds a store of an incompatible version.
    """

    shared: Final = True

    def __init__(self, url: str, *, commit_lock_limit_s: float = COMMIT_LOCK_LIMIT_S) -> None:
        self._url = url
        self.commit_lock_limit_s = commit_lock_limit_s
        self._where, self._secret = _where(url)
        self.pool = _Pool(self._connect)
        self._listener: psycopg.Connection[Any] | None = None
        self._listener_lock = threading.Lock()
        self._held = threading.local()  # .session: the commit session this thread holds
        self._backend_starts: weakref.WeakKeyDictionary[psycopg.Connection[Any], Any] = (
            weakref.WeakKeyDictionary()
        )
        self._commits = 0
        self._clock_lock = threading.Lock()
        self._latest = 0
        #: The files' bytes (`ctx.storage`), in `convex_files`.
        self.files: FileStore = PostgresFiles(self)
        conn = self._connect()
        try:
            self._set_up(conn)
        finally:
            conn.close()

    def describe(self) -> str:
        """The URL with its password masked."""
        return self._where.url

    def __repr__(self) -> str:
        return f"PostgresPersistence({self._where.url!r})"

    def error(self, action: str, exc: BaseException) -> PersistenceError:
        """A `PersistenceError` naming the server, database, what failed and why."""
        return self._where.error(action, exc, self._secret)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._url, autocommit=True, **_CONNECT_OPTIONS)
            row = conn.execute(
                "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            ).fetchone()
        except psycopg.Error as exc:
            raise self.error("Connecting", exc) from None
        # What tells this connection's server process from a later one with its pid.
        self._backend_starts[conn] = None if row is None else row[0]
        return conn

    def backend_start(self, conn: psycopg.Connection[Any]) -> Any:
        """When `conn`'s server process started (None if unknown)."""
        return self._backend_starts.get(conn)

    def _set_up(self, conn: psycopg.Connection[Any]) -> None:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
                conn.execute(_SCHEMA)
                conn.execute(
                    "INSERT INTO convex_meta VALUES ('format', %s) ON CONFLICT DO NOTHING",
                    (_FORMAT_VERSION,),
                )
                row = conn.execute("SELECT value FROM convex_meta WHERE key='format'").fetchone()
                if row is not None and row[0] == "1":
                    conn.execute(_UPGRADE_FROM_1)
                    row = (_FORMAT_VERSION,)
                clock = conn.execute("SELECT ts FROM convex_clock WHERE id = 1").fetchone()
        except psycopg.Error as exc:
            raise self.error("Opening the store", exc) from None
        assert row is not None and clock is not None
        if row[0] != _FORMAT_VERSION:
            raise PersistenceError(
                f"The store in {self._where.url} was written by an incompatible version of "
                f"convex-notebook (format {row[0]}, this version reads format "
                f"{_FORMAT_VERSION}); open it with that version, or use another database."
            )
        self._latest = clock[0]

    # -- reading -------------------------------------------------------------------------

    def _first_use(
        self, action: str, use: Callable[[psycopg.Connection[Any]], T]
    ) -> tuple[T, psycopg.Connection[Any]]:
        """`(use(conn), conn)` on a pooled connection, which the caller then keeps or returns
        to the pool. `use` must be safe to run twice: if the first connection turns out lost
        (an idle connection the server dropped when it restarted), it runs once more on a new
        one.

        Raises:
            PersistenceError: `action` failed (the connection went back to the pool, or was
                closed if it cannot be reused).
        """
        for attempt in (1, 2):
            conn = self.pool.get()
            try:
                return use(conn), conn
            except psycopg.OperationalError as exc:
                self.pool.discard(conn)
                if attempt == 1:
                    continue
                raise self.error(action, exc) from None
            except psycopg.Error as exc:
                self.pool.put(conn)  # closed there unless it is idle and usable
                raise self.error(action, exc) from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def with_connection(self, action: str, use: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`use(conn)` on a pooled connection, returned to the pool after (see `_first_use`:
        once more on a new connection if the first was lost)."""
        result, conn = self._first_use(action, use)
        self.pool.put(conn)
        return result

    def fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """The rows of one autocommit SELECT."""
        return self.with_connection(
            "Reading", lambda conn: conn.execute(sql, params, prepare=True).fetchall()
        )

    def last_ts(self) -> int:
        """The ts of the latest commit (the clock row)."""
        rows = self.fetch("SELECT ts FROM convex_clock WHERE id = 1", ())
        return int(rows[0][0])

    def load_catalog(self) -> StoredCatalog:
        """`(tables [(number, name)], indexes [StoredIndex])`."""

        def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
            with conn.transaction():
                tables = conn.execute(
                    "SELECT number, name FROM convex_tables ORDER BY number"
                ).fetchall()
                indexes = conn.execute(
                    "SELECT index_id, table_number, name, fields, kind, config "
                    "FROM convex_indexes ORDER BY index_id"
                ).fetchall()
            return tables, indexes

        tables, rows = self.with_connection("Reading the catalog", read)
        return [(n, name) for n, name in tables], [
            StoredIndex(i, t, name, tuple(json.loads(fields)), kind, config)
            for i, t, name, fields, kind, config in rows
        ]

    def snapshot(self) -> PostgresSnapshot:
        """A REPEATABLE READ snapshot of the latest commit; `close()` it when done."""

        def begin(conn: psycopg.Connection[Any]) -> PostgresSnapshot:
            cur = conn.execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
                "SELECT ts FROM convex_clock WHERE id = 1"
            )
            cur.nextset()  # past BEGIN
            row = cur.fetchone()
            assert row is not None
            return PostgresSnapshot(self, conn, int(row[0]))

        return self._first_use("Reading", begin)[0]

    def current_reader(self, ts: int) -> CurrentReader:
        """Reads of the latest committed state, statement by statement."""
        return CurrentReader(self, ts)

    def documents_of(self, table_number: int) -> Iterator[tuple[bytes, dict[str, Value]]]:
        """Every `(id_key, document)` of a table, read on one snapshot."""
        return all_documents(self, table_number)

    def unfilled_indexes(self) -> list[int]:
        """None: this backend always creates an index and its entries in one transaction."""
        return []

    def set_owner_info(self, url: str | None = None) -> None:
        """Nothing to record: any number of processes may open the store."""

    # -- the commit log ------------------------------------------------------------------

    def log_after(self, ts: int) -> list[LogEntry]:
        """The log entries after `ts`, oldest first (at most `_LOG_BATCH`: call again after
        the last one's ts)."""
        rows = self.fetch(_LOG_SQL, (ts, _LOG_BATCH))
        return [LogEntry(t, p, bytes(b)) for t, p, b in rows]

    def wait_for_commits(self, timeout: float) -> int | None:
        """Wait until a commit is notified (returns the latest ts notified, 0 if unknown) or
        `timeout` seconds pass (None).

        Raises:
            PersistenceError: the notification connection failed (it is opened again on the
                next call).
        """
        with self._listener_lock:
            conn = self._listener
            try:
                if conn is None or conn.closed:
                    conn = self._listener = self._connect()
                    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(_CHANNEL)))
                latest: int | None = None
                for notify in conn.notifies(timeout=timeout, stop_after=1):
                    latest = int(notify.payload) if notify.payload.isdigit() else 0
                # Drain what else is queued, without waiting.
                for notify in conn.notifies(timeout=0):
                    ts = int(notify.payload) if notify.payload.isdigit() else 0
                    latest = ts if latest is None else max(latest, ts)
                return latest
            except psycopg.Error as exc:
                if conn is not None:
                    conn.close()
                self._listener = None
                raise self.error("Listening for commits", exc) from None

    def interrupt_wait(self) -> None:
        """Make a `wait_for_commits` in progress return (used when closing)."""
        with contextlib.suppress(psycopg.Error, PersistenceError):
            self.with_connection(
                "Notifying",
                lambda conn: conn.execute(
                    pgsql.SQL("NOTIFY {}").format(pgsql.Identifier(_CHANNEL))
                ),
            )

    @contextlib.contextmanager
    def exclusive(self, since: int = -1) -> Iterator[CommitSession]:
        """Hold the cluster-wide commit lock for the block (see `CommitSession`); the log
        entries after `since` are read with the lock (`CommitSession.log_after(since)`)."""
        # Taking the lock writes nothing: safe to run again on a new connection.
        session, _ = self._first_use(
            "Taking the commit lock",
            lambda conn: CommitSession(self, conn, since if since >= 0 else 1 << 62),
        )
        self._held.session = session
        try:
            yield session
        finally:
            self._held.session = None
            session.end()

    def commit_if_latest(
        self,
        expect_clock: int,
        records: list[CommitRecord],
        new_tables: Iterable[TableInfo],
        body: bytes,
    ) -> int | None:
        """Commit in ONE round trip if no process committed since `expect_clock` (the caller
        validated against every commit up to it): the lock, the check, the writes, the log
        entry and COMMIT in one query. Returns the commit's ts, or None if another commit came
        first (nothing was written: validate again under the lock, `exclusive`).

        Raises:
            PersistenceError, CommitNotWritten, CommitOutcomeUnknown: as `CommitSession.finish`.
        """
        conn = self.pool.get()
        session = CommitSession(self, conn, expect_clock, expect_clock=expect_clock)
        try:
            session.write(records, new_tables)
            try:
                return session.finish(body)
            except Stale:
                return None
        finally:
            session.end()

    def committed(self, ts: int) -> None:
        """Called by a session after its commit: prunes the log now and then."""
        with self._clock_lock:
            self._latest = max(self._latest, ts)
            self._commits += 1
            prune = self._commits % _PRUNE_EVERY == 0
        if prune:
            with contextlib.suppress(PersistenceError):
                self.with_connection(
                    "Pruning the commit log",
                    lambda conn: conn.execute(
                        "DELETE FROM convex_commit_log WHERE ts < %s", (ts - LOG_WINDOW_NS,)
                    ),
                )

    def lookup_commit(
        self, commit_id: uuid.UUID, backend: tuple[int, Any], cause: BaseException
    ) -> int | None:
        """The ts of the commit `commit_id` if it was stored, None if it was not, once the
        server process that ran it (`backend`: its pid and start time) is gone.

        Raises:
            CommitOutcomeUnknown: the database cannot be asked within a few seconds.
        """
        deadline = time.monotonic() + 10.0
        last: BaseException = cause
        while time.monotonic() < deadline:
            try:
                conn = self._connect()
            except PersistenceError as exc:
                last = exc
                time.sleep(0.2)
                continue
            try:
                if not self._backend_gone(conn, backend, deadline - 2.0):
                    # Still there (the server has not noticed the lost client yet): end it, so
                    # that its transaction cannot commit after the log is read.
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        + _SAME_BACKEND,
                        (*backend, backend[1]),
                    )
                    if not self._backend_gone(conn, backend, deadline):
                        last = RuntimeError(f"its server process {backend[0]} did not end")
                        break
                row = conn.execute(
                    "SELECT ts FROM convex_commit_log WHERE commit_id = %s", (commit_id,)
                ).fetchone()
                return None if row is None else int(row[0])
            except psycopg.Error as exc:
                last = exc
            finally:
                conn.close()
        reason = " ".join(str(last).split())
        if self._secret:
            reason = reason.replace(self._secret, "***")
        raise CommitOutcomeUnknown(
            f"PostgreSQL at {self._where.host}:{self._where.port} (database "
            f"{self._where.dbname!r}): the connection was lost while a commit was being "
            f"written, and the database could not be asked since ({reason}). The mutation may "
            "or may not have been stored: check the data before running it again."
        )

    @staticmethod
    def _backend_gone(
        conn: psycopg.Connection[Any], backend: tuple[int, Any], deadline: float
    ) -> bool:
        """Wait until the server process `backend` (pid, start time; a later process with
        the same pid is another) has ended (False: not by `deadline`)."""
        while time.monotonic() < deadline:
            alive = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE " + _SAME_BACKEND, (*backend, backend[1])
            ).fetchone()
            if alive is None:
                return True
            time.sleep(0.05)
        return False

    def next_number(self, kind: str) -> int:
        """A new table number (`kind` "table") or index id ("index"), unique in the store."""
        sequence = "convex_table_numbers" if kind == "table" else "convex_index_ids"
        return int(self.fetch(f"SELECT nextval('{sequence}')", ())[0][0])

    # -- settings every process shares ---------------------------------------------------

    def setting(self, key: str) -> str | None:
        """The store's setting `key` (e.g. the served admin key), or None."""
        rows = self.fetch("SELECT value FROM convex_meta WHERE key = %s", (f"setting:{key}",))
        return None if not rows else str(rows[0][0])

    def setting_or_default(self, key: str, default: str) -> str:
        """The setting `key`; `default` is stored first if it has none (the first process
        to ask decides, every later one gets the same value)."""
        rows = self.fetch(
            "WITH i AS (INSERT INTO convex_meta VALUES (%s, %s) ON CONFLICT DO NOTHING "
            "RETURNING value) SELECT value FROM i UNION ALL "
            "SELECT value FROM convex_meta WHERE key = %s",
            (f"setting:{key}", default, f"setting:{key}"),
        )
        return str(rows[0][0])

    def add_push(self, body: bytes) -> int:
        """Keep a push of function definitions (what `serve`'s deployer applied), so that
        every `serve` process on the store applies it too; returns its sequence number.

        Called while this thread holds a commit session (inside `Store.record_change`), the
        push is written in that session's transaction: kept exactly when its commit is."""
        sql = "INSERT INTO convex_pushes (body) VALUES (%s) RETURNING seq"
        session: CommitSession | None = getattr(self._held, "session", None)
        rows = self.fetch(sql, (body,)) if session is None else session.fetch_now(sql, (body,))
        return int(rows[0][0])

    def pushes_after(self, seq: int) -> list[tuple[int, bytes]]:
        """The pushes kept after sequence number `seq`, oldest first."""
        rows = self.fetch("SELECT seq, body FROM convex_pushes WHERE seq > %s ORDER BY seq", (seq,))
        return [(int(n), bytes(b)) for n, b in rows]

    # -- writing outside the engine's sessions (the Persistence protocol) ------------------

    def write_commit(
        self, ts: int, records: list[CommitRecord], new_tables: Iterable[TableInfo] = ()
    ) -> None:
        """Apply one commit atomically at `ts` (later than the clock)."""
        tables = list(new_tables)
        with self.exclusive() as session:
            session.write(records, tables)
            session.finish(encode_commit(LoggedCommit(new_tables=tables)), ts)

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
        """Persist a new index with its entries in one commit."""
        with self.exclusive() as session:
            session.create_index(
                index_id, table_number, name, fields, entries, kind=kind, config=config
            )
            session.finish(encode_commit(LoggedCommit(catalog_changed=True)))

    def fill_index(self, index_id: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Add entries to an index in one commit."""
        with self.exclusive() as session:
            session.fill_index(index_id, entries)
            session.finish(encode_commit(LoggedCommit(catalog_changed=True)))

    def drop_index(self, index_id: int) -> None:
        """Delete an index and its entries in one commit."""
        with self.exclusive() as session:
            session.drop_index(index_id)
            session.finish(encode_commit(LoggedCommit(catalog_changed=True)))

    def close(self) -> None:
        """Close every connection; idempotent."""
        self.pool.close()
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

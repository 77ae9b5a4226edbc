"""The persistence seam: what the engine (`kernel_ext.engine.store.Store`) needs from storage.

A backend (`SqlitePersistence`, `MemoryPersistence`, later PostgreSQL) implements `Persistence`:
read snapshots, reads of the latest commit for OCC, atomic commits, the catalog, and index
builds. The engine serializes every write call (one committer); reads may come from any
thread. Build one from a URL with `kernel_ext.persistence.urls.open_persistence`.

`CommitRecord` and `IndexChange` are the records a commit is written as; they live here, beside
the interface, so that no backend imports another.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, runtime_checkable

from kernel_ext.persistence.files import FileStore
from kernel_ext.store.catalog import TableInfo
from kernel_ext.store.search import SearchSpec, SearchState
from kernel_ext.store.transaction import Snapshot
from kernel_ext.store.values import Value

__all__ = [
    "CommitRecord",
    "CommitSession",
    "FullTextSearch",
    "IndexChange",
    "LogEntry",
    "Persistence",
    "SharedPersistence",
    "Snapshot",
    "StoredCatalog",
    "StoredIndex",
    "all_documents",
    "full_text_search",
]


class StoredIndex(NamedTuple):
    """An index as the catalog stores it: `kind` "db" (ordered entries), "search" or
    "vector", and for the last two their config as JSON text (`index_kinds.config_to_json`)."""

    index_id: int
    table_number: int
    name: str
    fields: tuple[str, ...]
    kind: str = "db"
    config: str | None = None


#: What `load_catalog` returns: `(tables [(number, name)], indexes)`.
StoredCatalog = tuple[list[tuple[int, str]], list[StoredIndex]]


class IndexChange(NamedTuple):
    """Remove `old_key` (if any) and add `new_key` (if any) in one index."""

    index_id: int
    old_key: bytes | None
    new_key: bytes | None


class CommitRecord(NamedTuple):
    """One document's new state (`doc` None: deleted), its index changes, and whether it
    replaces a stored version (an update rather than an insert)."""

    table_number: int
    id_key: bytes
    doc: dict[str, Value] | None
    index_changes: tuple[IndexChange, ...]
    replaces: bool = False


class Persistence(Protocol):
    """The storage of one store, as the engine uses it (the engine owns it and closes it).

    Invariants every backend keeps: a snapshot sees exactly one commit (all of it or none of
    it); `write_commit` is atomic (a failure writes nothing of the commit); `last_ts` never
    decreases, also across a reopen; a backend raises `kernel_ext.errors.PersistenceError`
    (never its driver's exceptions) when storage fails, with a message that never shows a
    password.
    """

    files: FileStore  #: the bytes of the store's files (`ctx.storage`)

    def last_ts(self) -> int:
        """The timestamp of the state a new snapshot sees: the latest commit's, or after a
        reopen a ts at or after every stored commit's (0 for a new store)."""
        ...

    def load_catalog(self) -> StoredCatalog:
        """`(tables [(number, name)], indexes [StoredIndex])`, each sorted by number / index
        id. Reads only the catalog, never the documents."""
        ...

    def snapshot(self) -> Snapshot:
        """A read snapshot of the latest commit; call `close()` on it when done.

        Raises:
            PersistenceError: the store is closed or cannot be read.
        """
        ...

    def current_reader(self, ts: int) -> Snapshot:
        """Reads of the latest committed state, statement by statement (no snapshot): for a
        caller that validates everything it read against every commit after `ts` (OCC)
        before relying on it. `ts` is the caller's lower bound on the commits it will see;
        its `close()` releases nothing that matters (it may be skipped)."""
        ...

    def write_commit(
        self, ts: int, records: list[CommitRecord], new_tables: Iterable[TableInfo] = ()
    ) -> None:
        """Apply one commit atomically (with the tables it created and their indexes that
        have an id) and record its timestamp `ts` (later than every earlier commit's).
        Snapshots taken after it returns see it.

        Raises:
            PersistenceError: nothing of the commit was written.
        """
        ...

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
        documents), atomically: a failure or a killed process leaves no index rather than an
        empty one, which queries would trust and find nothing in. A search or vector index
        (`kind`, `config` as in `StoredIndex`) has no entries."""
        ...

    def fill_index(self, index_id: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Add `(key, id_key)` entries to an existing index, atomically (repairs an index
        that `unfilled_indexes` reports)."""
        ...

    def unfilled_indexes(self) -> list[int]:
        """The ids of the indexes that hold no entry although their table holds documents
        (left by earlier versions that created and filled an index in two steps; a backend
        that never did may return [])."""
        ...

    def drop_index(self, index_id: int) -> None:
        """Delete an index and its entries, atomically."""
        ...

    def documents_of(self, table_number: int) -> Iterator[tuple[bytes, dict[str, Value]]]:
        """Every `(id_key, document)` of a table in id order, read at one commit (for index
        builds and schema checks)."""
        ...

    def set_owner_info(self, url: str | None = None) -> None:
        """Record who has the store open (this process, and the URL it serves, if any) where
        another process that finds the store in use can read it (a no-op where nothing
        needs it)."""
        ...

    def close(self) -> None:
        """Release every connection, lock and temporary file; idempotent. Reads and writes
        after it raise `PersistenceError`."""
        ...


class LogEntry(NamedTuple):
    """A commit-log entry of a shared store: the commit's ts, the ts of the commit before it
    (a gap shows that entries were pruned), and its body (`commit_log.decode_commit`)."""

    ts: int
    prev_ts: int
    body: bytes


class CommitSession(Protocol):
    """The cluster-wide commit lock of a shared store, held (`SharedPersistence.exclusive`):
    no process commits until the session ends. Writes are queued and sent by `finish`, in the
    one database transaction that commits them; a session left without `finish` writes
    nothing."""

    clock: int  #: the ts of the latest commit

    def log_after(self, ts: int) -> list[LogEntry]:
        """Every log entry after `ts`, oldest first."""
        ...

    def documents_of(self, table_number: int) -> Iterator[tuple[bytes, dict[str, Value]]]:
        """Every `(id_key, document)` of a table as of the latest commit."""
        ...

    def write(self, records: list[CommitRecord], new_tables: Iterable[TableInfo] = ()) -> None:
        """Queue a commit's documents, index entries and new tables."""
        ...

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
        """Queue a new index with its entries (`kind`, `config` as in `StoredIndex`)."""
        ...

    def drop_index(self, index_id: int) -> None:
        """Queue the removal of an index and its entries."""
        ...

    def finish(self, body: bytes, ts: int | None = None) -> int:
        """Write what was queued plus the log entry `body`, notify every process, commit, and
        return the commit's ts (later than `clock`; from the database's clock).

        Raises:
            PersistenceError: nothing was written.
            CommitOutcomeUnknown: the connection was lost and the database could not tell
                whether the commit was stored.
        """
        ...


@runtime_checkable
class FullTextSearch(Protocol):
    """Optional: a backend that keeps its search indexes itself, in the documents' own
    transactions (SQLite FTS5), so the engine keeps none in memory for it."""

    def search_state(
        self, snapshot: Any, index_id: int, spec: SearchSpec, *, all_prefixes: bool
    ) -> SearchState:
        """What `store.search.rank` needs for `spec` from search index `index_id` exactly as
        `snapshot` (one of this backend's snapshots or current readers) sees it: document
        count, total length, the document frequency of every index term `spec` matches, and
        the documents holding one of the terms ranked that pass `spec`'s filters (term
        frequencies of those terms). `all_prefixes`: also the documents of every term
        extending the prefix, not only of the first `MAX_PREFIX_MATCHES` (for a transaction
        whose own writes change which ones rank).

        Raises:
            PersistenceError: the index cannot be read.
        """
        ...


def full_text_search(persistence: object) -> FullTextSearch | None:
    """`persistence` as a `FullTextSearch` if it keeps its own search indexes, else None."""
    return persistence if isinstance(persistence, FullTextSearch) else None


class SharedPersistence(Persistence, Protocol):
    """Storage that other processes open and commit to at the same time (PostgreSQL). The
    engine commits through `exclusive` sessions and replays the other processes' commits
    from `log_after`, woken by `wait_for_commits`."""

    shared: bool  #: True: tells a shared store from a private one

    def exclusive(self, since: int = -1) -> AbstractContextManager[CommitSession]:
        """Take the cluster-wide commit lock for a `with` block; the session's `log_after(since)`
        costs no extra round trip."""
        ...

    def log_after(self, ts: int) -> list[LogEntry]:
        """Log entries after `ts`, oldest first; a bounded batch (ask again after the last)."""
        ...

    def wait_for_commits(self, timeout: float) -> int | None:
        """Wait until a commit is notified (returns the latest ts notified, 0 if unknown) or
        `timeout` s pass (None).

        Raises:
            PersistenceError: the database cannot be reached (the next call tries again).
        """
        ...

    def interrupt_wait(self) -> None:
        """Make a `wait_for_commits` in progress return soon."""
        ...

    def next_number(self, kind: str) -> int:
        """A new table number (`kind` "table") or index id ("index"), unique in the store."""
        ...

    def commit_if_latest(
        self,
        expect_clock: int,
        records: list[CommitRecord],
        new_tables: Iterable[TableInfo],
        body: bytes,
    ) -> int | None:
        """Commit `records` with the log entry `body` in one round trip if no commit came
        after `expect_clock`; returns its ts, or None (nothing written) if one did.

        Raises:
            PersistenceError: nothing was written.
            CommitOutcomeUnknown: the connection was lost and the database could not tell
                whether the commit was stored.
        """
        ...

    def describe(self) -> str:
        """Where the store is, for messages (never with a password)."""
        ...


def all_documents(
    persistence: Persistence, table_number: int
) -> Iterator[tuple[bytes, dict[str, Value]]]:
    """Every `(id_key, document)` of a table, read on one snapshot of `persistence` (the
    `documents_of` of every backend)."""
    snap = persistence.snapshot()
    try:
        yield from snap.scan(table_number, None, b"", b"\xff", False)
    finally:
        snap.close()

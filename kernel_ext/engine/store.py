"""The store runtime: snapshots, the single committer with OCC validation, and the catalog.

`Store.read(fn)` runs `fn(txn)` on a snapshot. `Store.mutate(fn)` runs it in a writable
transaction that starts at the latest commit ts T and commits; if a commit after T wrote a key
inside its read set, it re-runs `fn`: a few optimistic retries, then once more holding the
commit lock, so that no other commit can intervene (contention slows a mutation down, it never
makes it fail). A mutation reads
the latest committed state statement by statement rather than from a snapshot: validation
against every commit after T is what makes its reads those of the state at T. Until it is
validated, a run may have seen an inconsistent mix, so when `fn` raises, the exception is
surfaced only if the reads validate (otherwise `fn` re-runs). A mutation that raises leaves no
trace: its writes, new tables and scheduled jobs vanish. Commit timestamps are integers
(nanoseconds) that never decrease, also across restarts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple, TypeVar, cast

from kernel_ext.engine import logs
from kernel_ext.engine.search_indexes import SearchIndexes
from kernel_ext.engine.vector_index import VectorIndexes
from kernel_ext.engine.write_log import HISTORY_MAX_KEYS, HISTORY_NS, WriteLog
from kernel_ext.errors import (
    CommitNotWritten,
    ConflictError,
    HistoryUnavailable,
    PersistenceError,
    SchemaError,
    ValidationError,
)
from kernel_ext.persistence.base import (
    CommitRecord,
    CommitSession,
    IndexChange,
    LogEntry,
    Persistence,
    SharedPersistence,
    StoredIndex,
    full_text_search,
)
from kernel_ext.persistence.commit_log import LoggedCommit, decode_commit, encode_commit
from kernel_ext.persistence.files import FileStore
from kernel_ext.store.catalog import (
    BY_CREATION_TIME,
    BY_ID,
    Catalog,
    IndexInfo,
    TableInfo,
    id_key,
    new_table_info,
)
from kernel_ext.store.index_kinds import (
    DB,
    SEARCH,
    VECTOR,
    IndexKind,
    config_from_json,
    config_to_json,
)
from kernel_ext.store.readset import ALL, TABLES, ReadSet, WrittenKey, table_created_key
from kernel_ext.store.schema import SchemaDefinition
from kernel_ext.store.search import table_search_keys
from kernel_ext.store.transaction import Snapshot, Transaction, Write, index_keys
from kernel_ext.store.vector import vector_written_keys

__all__ = ["ALL_KEYS", "Commit", "MUTATION_RECEIPTS", "SCHEDULED_FUNCTIONS", "Store"]

T = TypeVar("T")

SCHEDULED_FUNCTIONS: Final = "_scheduled_functions"
#: Receipts of mutations run for sync sessions (`functions.receipts`).
MUTATION_RECEIPTS: Final = "_mutation_receipts"
#: System tables and their indexes, created with every store.
SYSTEM_TABLES: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    SCHEDULED_FUNCTIONS: {"by_state": ("state.kind", "scheduledTime")},
    MUTATION_RECEIPTS: {"by_key": ("key",)},
    # Crons (`functions.cron_service`): their definitions and next run.
    "_cron_jobs": {"by_name": ("name",)},
    # File storage (`functions.storage`): a row per stored file, and the unused upload URLs.
    "_storage": {},
    "_upload_tokens": {"by_hash": ("hash",)},
}
#: A written key that every read set contains (schema changes invalidate everything).
ALL_KEYS: Final[WrittenKey] = (ALL, b"")
#: The log entry of an index created or dropped on a shared store: other processes reload
#: their catalog and re-run every live query.
_CATALOG_CHANGE: Final = encode_commit(LoggedCommit(keys=[ALL_KEYS], catalog_changed=True))
#: The write log's mark of `record_change` (an index name no read set uses).
_DEFINITIONS_CHANGED: Final[WrittenKey] = ("*definitions", b"")
#: Pauses before the optimistic attempts of a mutation; after the last one conflicts, it runs
#: serially under the commit lock.
_RETRY_DELAYS: Final = (0.0, 0.001, 0.005, 0.02)
#: A shared store's follower reads the log at least this often (s), in case a notification
#: was lost.
_POLL_S: Final = 1.0
#: After the database could not be reached, wait this long (s) before trying again.
_RETRY_S: Final = 0.5

_log = logging.getLogger("kernel_ext.store")


class Commit(NamedTuple):
    """What one commit changed, as told to listeners (subscriptions, scheduler)."""

    ts: int
    writes: dict[str, Write]
    keys: list[WrittenKey]


class _Conflict(Exception):
    def __init__(self, tables: set[str]) -> None:
        super().__init__(tables)
        self.tables = tables


class _TxnCatalog:
    """The shared catalog plus the tables a transaction has created but not committed.

    Args:
        shared: the store's catalog.
        allocate_number: returns an unused table number.
    """

    def __init__(self, shared: Catalog, allocate_number: Callable[[], int]) -> None:
        self.shared = shared
        self.new_tables: dict[str, TableInfo] = {}
        self._allocate_number = allocate_number

    def table(self, name: str) -> TableInfo | None:
        return self.shared.table(name) or self.new_tables.get(name)

    def table_by_number(self, number: int) -> TableInfo | None:
        found = self.shared.table_by_number(number)
        if found is None:
            found = next((t for t in self.new_tables.values() if t.number == number), None)
        return found

    def table_name(self, number: int) -> str | None:
        info = self.table_by_number(number)
        return None if info is None else info.name

    def allocate(self, name: str) -> TableInfo:
        """A new table for the transaction's first insert into `name`. It exists for others
        only once the transaction commits; its by_creation_time index gets a real id then."""
        info = new_table_info(name, self._allocate_number(), -1)
        self.new_tables[name] = info
        return info


def _no_new_tables(name: str) -> TableInfo:
    raise AssertionError(f"a read-only transaction cannot create table {name!r}")


def _index_info(stored: StoredIndex) -> IndexInfo:
    """The catalog's view of a stored index (its config parsed)."""
    config = config_from_json(stored.kind, stored.config)  # refuses an unknown kind
    kind: IndexKind = SEARCH if stored.kind == SEARCH else VECTOR if stored.kind == VECTOR else DB
    return IndexInfo(stored.name, stored.index_id, stored.fields, kind, config)


class Store:
    """One store: persistence, catalog, schema, committer and commit listeners.

    On a shared persistence (PostgreSQL: other processes commit to it too), a commit holds the
    cluster-wide commit lock (`SharedPersistence.exclusive`) while it validates and writes, and
    a follower thread replays the commits of the other processes from the commit log, woken by
    the database's notifications (and every `_POLL_S` in case one was lost): their commits
    reach the write log (OCC), the catalog and the commit listeners (live queries, views,
    the scheduler) exactly as local ones do, in timestamp order.

    Args:
        persistence: the storage backend (owned: closed by `close()`).
    """

    def __init__(self, persistence: Persistence) -> None:
        self.persistence = persistence
        self._shared: SharedPersistence | None = (
            cast("SharedPersistence", persistence)
            if getattr(persistence, "shared", False)
            else None
        )
        self._session: CommitSession | None = None  # held by the thread holding the lock
        # The latest ts another process was notified to have committed: while it is ahead
        # of `_ts`, a one-round-trip commit would only find the clock moved.
        self._notified = 0
        self._closing = threading.Event()
        self._follower: threading.Thread | None = None
        #: Why the database could not be reached, while it cannot (shared stores).
        self.unreachable: PersistenceError | None = None
        self.catalog = Catalog()
        self.schema: SchemaDefinition | None = None
        self._commit_lock = threading.RLock()
        self._counter_lock = threading.Lock()
        self._ts = persistence.last_ts()
        self._writes = WriteLog(horizon=self._ts)
        self._active: dict[int, int] = {}  # id(txn) -> snapshot ts of in-flight mutations
        self._listeners: list[Callable[[Commit], None]] = []
        self._definition_listeners: list[Callable[[int], None]] = []
        self._status_listeners: list[Callable[[str], None]] = []
        #: Full-text indexes (`engine.search_indexes`), kept up to date by `_publish`.
        self._search = SearchIndexes(
            self.catalog,
            self._commit_lock,
            self._ts,
            native=full_text_search(persistence),
        )
        self._last_creation_time = 0.0
        #: Vector indexes (`engine.vector_index`), built on first use, kept by the commits.
        self.vectors = VectorIndexes(self)
        try:
            self._load_catalog()
            self._repair_unfilled_indexes()
            self._ensure_system_tables()
        except BaseException:
            persistence.close()  # releases the file's lock: the store did not open
            raise
        if self._shared is not None:
            self._follower = threading.Thread(
                target=self._follow, name="convex-store-follower", daemon=True
            )
            self._follower.start()

    @property
    def shared(self) -> bool:
        """Whether other processes commit to this store too (PostgreSQL)."""
        return self._shared is not None

    @property
    def files(self) -> FileStore:
        """The bytes of the store's files (`ctx.storage`), beside its documents."""
        return self.persistence.files

    @property
    def ts(self) -> int:
        """The timestamp of the latest commit."""
        return self._ts

    def add_listener(self, listener: Callable[[Commit], None]) -> None:
        """Call `listener(commit)` after each commit, in timestamp order, under the commit
        lock (so it must be quick: enqueue, don't work)."""
        self._listeners.append(listener)

    def add_definitions_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(ts)` when another process of a shared store changed function
        definitions (its `record_change` at `ts`), after the commit was replayed, under the
        commit lock (enqueue, don't work)."""
        self._definition_listeners.append(listener)

    @property
    def status(self) -> str:
        """ "connected", or "reconnecting" while a shared store's database cannot be reached
        (`unreachable` says why)."""
        return "connected" if self.unreachable is None else "reconnecting"

    def on_status(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(status)` from the follower thread when `status` changes; returns a
        function that stops the calls."""
        self._status_listeners.append(listener)

        def stop() -> None:
            with contextlib.suppress(ValueError):  # stopped already
                self._status_listeners.remove(listener)

        return stop

    def _set_unreachable(self, error: PersistenceError | None) -> None:
        was = self.status
        self.unreachable = error
        if self.status != was:
            for listener in list(self._status_listeners):
                try:
                    listener(self.status)
                except Exception:
                    _log.exception("A status listener failed")

    def close(self) -> None:
        """Stop following other processes' commits and close the persistence; idempotent."""
        self._closing.set()
        follower, self._follower = self._follower, None
        if follower is not None and follower is not threading.current_thread():
            assert self._shared is not None
            self._shared.interrupt_wait()
            follower.join(timeout=_POLL_S * 8)
        self.vectors.close()  # their matrices are large; the Store object may stay referenced
        self.persistence.close()

    # -- sharing a store with other processes --------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[CommitSession | None]:
        """Hold the commit lock: this process's and, on a shared store, the cluster-wide one,
        with every commit made elsewhere replayed first. Re-entrant. Yields the database
        session (None on a private store)."""
        with self._commit_lock:
            if self._shared is None or self._session is not None:
                yield self._session
                return
            with self._shared.exclusive(self._ts) as session:
                self._session = session
                try:
                    self._replay(session.log_after(self._ts))
                    yield session
                finally:
                    self._session = None

    def _catch_up(self) -> None:
        """Replay the commits made elsewhere since the latest one this process knows."""
        if self._shared is None:
            return
        while True:
            entries = self._shared.log_after(self._ts)
            if not entries:
                return
            with self._commit_lock:
                self._replay(entries)

    def _replay(self, entries: list[LogEntry], *, resync: bool = False) -> None:
        """Apply commits made elsewhere (under the commit lock), in ts order: catalog, write
        log, listeners. Entries this process already knows are skipped; a gap (entries pruned
        from the log while this process was away) or `resync` makes the last entry a commit
        that every read set overlaps, so that every live query runs again."""
        fresh = [e for e in entries if e.ts > self._ts]
        if not fresh:
            return
        if fresh[0].prev_ts != self._ts:
            resync = True
        for i, entry in enumerate(fresh):
            if entry.ts <= self._ts:  # replayed meanwhile (a listener that committed)
                continue
            logged = decode_commit(entry.body)
            for info in logged.new_tables:
                if self.catalog.table(info.name) is None:
                    self.catalog.install(info)
            if logged.catalog_changed:
                self._reload_catalog()
            keys = list(logged.keys)
            if resync and i == len(fresh) - 1:
                self._reload_catalog()
                keys.insert(0, ALL_KEYS)  # first: that is where views look for it
            self._ts = entry.ts
            self._writes.append(
                entry.ts, [*keys, _DEFINITIONS_CHANGED] if logged.definitions_changed else keys
            )
            self._publish(Commit(entry.ts, logged.writes, keys))
            if logged.definitions_changed:
                for listener in self._definition_listeners:
                    listener(entry.ts)
        self._prune_log()

    def _reload_catalog(self) -> None:
        """Bring the catalog up to the stored one (tables and indexes created or dropped by
        other processes)."""
        tables, indexes = self.persistence.load_catalog()
        for number, name in tables:
            if self.catalog.table(name) is None:
                self.catalog.add_table(name, number)
        stored: dict[int, dict[str, IndexInfo]] = {}
        for row in indexes:
            stored.setdefault(row.table_number, {})[row.name] = _index_info(row)
        for info in self.catalog.tables():
            declared = stored.get(info.number, {})
            for name, known in info.all_indexes().items():
                if name != BY_ID and declared.get(name) != known:
                    self.catalog.drop_index(info.name, name)
            for name, index in declared.items():
                if name not in info.all_indexes():
                    self.catalog.add_index(info.name, index)

    def _follow(self) -> None:
        """The follower thread of a shared store (see the class docstring). When the database
        cannot be reached it says so once (log and `unreachable`), retries, and once back
        makes every live query run again, so that each delivers the current result."""
        shared = self._shared
        assert shared is not None
        while not self._closing.is_set():
            try:
                notified = shared.wait_for_commits(_POLL_S)
                if self._closing.is_set():
                    return
                if notified:
                    self._notified = max(self._notified, notified)
                if self.unreachable is None:
                    if notified is None or notified == 0 or notified > self._ts:
                        self._catch_up()  # news, or the poll in case a notification was lost
                    continue
                entries = shared.log_after(self._ts)
                with self._commit_lock:
                    self._replay(entries, resync=True)
                self._catch_up()
                _log.warning("%s: reachable again; live queries caught up", shared.describe())
                self._set_unreachable(None)
            except PersistenceError as exc:
                if self._closing.is_set():
                    return
                if self.unreachable is None:
                    _log.warning("%s; retrying every %s s", exc, _RETRY_S)
                self._set_unreachable(exc)
                self._closing.wait(_RETRY_S)
            except Exception:  # a bug: say so, keep following
                _log.exception("Replaying commits of other processes failed")
                self._closing.wait(_RETRY_S)

    def _store_commit(
        self,
        session: CommitSession | None,
        records: list[CommitRecord],
        new_tables: list[TableInfo],
        logged: Callable[[], LoggedCommit],
    ) -> int:
        """Write one commit (under `_exclusive`) and return its ts: on a private store at
        `_next_ts()`, on a shared one through `session`, with `logged()` as its log entry."""
        if session is None:
            ts = self._next_ts()
            self.persistence.write_commit(ts, records, new_tables)
            return ts
        session.write(records, new_tables)
        return session.finish(encode_commit(logged()))

    def _finish_commit(self, ts: int, writes: dict[str, Write], keys: list[WrittenKey]) -> None:
        """Make a stored commit known: ts, write log, listeners (under `_exclusive`)."""
        self._ts = ts
        self._writes.append(ts, keys)
        self._prune_log()
        self._publish(Commit(ts, writes, keys))

    # -- catalog -------------------------------------------------------------------------

    def _load_catalog(self) -> None:
        tables, indexes = self.persistence.load_catalog()
        for number, name in tables:
            self.catalog.add_table(name, number)
        for stored in indexes:
            info = self.catalog.table_by_number(stored.table_number)
            if info is not None:
                self.catalog.add_index(info.name, _index_info(stored))
        self._next_table_number = self.catalog.next_table_number()
        self._next_index_id = self.catalog.next_index_id()

    def _allocate_number(self) -> int:
        if self._shared is not None:
            return self._shared.next_number("table")
        with self._counter_lock:
            number = self._next_table_number
            self._next_table_number += 1
            return number

    def _allocate_index_id(self) -> int:
        if self._shared is not None:
            return self._shared.next_number("index")
        with self._counter_lock:
            index_id = self._next_index_id
            self._next_index_id += 1
            return index_id

    def _create_table_now(self, name: str) -> TableInfo:
        with self._exclusive() as session:
            existing = self.catalog.table(name)
            if existing is not None:
                return existing
            info = new_table_info(name, self._allocate_number(), self._allocate_index_id())
            if session is None:
                self.persistence.write_commit(self._ts, [], [info])
                return self.catalog.install(info)
            session.write([], [info])
            keys = [(TABLES, table_created_key(info.number))]
            ts = session.finish(encode_commit(LoggedCommit(keys=keys, new_tables=[info])))
            self.catalog.install(info)
            self._finish_commit(ts, {}, keys)
            return info

    def _create_index_now(self, table: TableInfo, wanted: IndexInfo) -> None:
        """Create the index `wanted` (its id is allocated here) of `table`."""
        # Created and filled in one storage transaction (a kill leaves no index, never an
        # empty one), and known to the catalog only once it is stored complete.
        name = wanted.name
        with self._exclusive() as session:
            current = self.catalog.table(table.name)
            made = None if current is None else current.all_indexes().get(name)
            if made is not None and made.shape == wanted.shape:
                return  # another process of a shared store made it since the caller looked
            if made is not None:
                raise SchemaError(
                    f"Index {name!r} of table {table.name!r} was just defined otherwise "
                    f"({made.kind} index of {list(made.fields)}) by another process of this "
                    "store; install the schema again once the other process is done."
                )
            index_id = self._allocate_index_id()
            index = IndexInfo(name, index_id, wanted.fields, wanted.kind, wanted.config)
            # Only ordered indexes have entries; search and vector indexes are described by
            # their config (the backend builds what it keeps for them from the documents).
            ordered = index.kind == DB
            config = config_to_json(index.config)
            if session is None:
                self.persistence.create_index(
                    index_id,
                    table.number,
                    name,
                    index.fields,
                    self._entries_of(table, index) if ordered else (),
                    kind=index.kind,
                    config=config,
                )
            else:
                # The lock keeps every other commit out: the documents read are all there are.
                entries = (
                    [(index.key_of(doc), key) for key, doc in session.documents_of(table.number)]
                    if ordered
                    else []
                )
                session.create_index(
                    index_id,
                    table.number,
                    name,
                    index.fields,
                    entries,
                    kind=index.kind,
                    config=config,
                )
                # Other processes re-run everything (rare): a query by an index that changed
                # under it must not keep its result.
                ts = session.finish(_CATALOG_CHANGE)
            self.catalog.add_index(table.name, index)
            if session is not None:
                self._finish_commit(ts, {}, [])

    def _entries_of(self, table: TableInfo, index: IndexInfo) -> Iterator[tuple[bytes, bytes]]:
        """The `(key, id_key)` entries of `index` built from the stored documents."""
        for key, doc in self.persistence.documents_of(table.number):
            yield index.key_of(doc), key

    def _repair_unfilled_indexes(self) -> None:
        """Fill the indexes an earlier version left empty (created, then killed before it
        filled them): a query by such an index would silently find nothing."""
        unfilled = set(self.persistence.unfilled_indexes())
        for table in self.catalog.tables():
            for index in table.indexes.values():
                if index.index_id in unfilled:
                    self.persistence.fill_index(index.index_id, self._entries_of(table, index))

    def _ensure_system_tables(self) -> None:
        with self._commit_lock:
            for name, indexes in SYSTEM_TABLES.items():
                info = self._create_table_now(name)
                for index, fields in indexes.items():
                    if index not in info.indexes:
                        self._create_index_now(info, IndexInfo(index, None, fields))

    def set_schema(self, schema: SchemaDefinition | None) -> None:
        """Install a schema: check existing documents against it, create its tables, build new
        indexes and drop indexes it no longer declares. Every live query re-runs.

        Documents that the schema would store differently (ints in `v.number()` fields,
        written before such ints were stored as floats) are then stored again as it says, in
        mutations of their own, so that queries with float bounds find them.

        Raises:
            SchemaError: an existing document does not match; nothing was changed.
        """
        restore: list[str] = []
        with self._commit_lock:
            if schema is not None:
                restore = self._check_existing_documents(schema)
                for name, definition in schema.tables.items():
                    info = self._create_table_now(name)
                    self._reconcile_indexes(
                        info,
                        {
                            i.name: IndexInfo(i.name, None, i.fields, i.kind, i.config)
                            for i in definition.indexes
                        },
                    )
            self.schema = schema
            # A schema change is a commit that every read set overlaps: it conflicts with
            # running mutations and re-runs every live query (in every process of a shared
            # store). Its ts is durable like any other.
            with self._exclusive() as session:
                ts = self._store_commit(
                    session, [], [], lambda: LoggedCommit(keys=[ALL_KEYS], catalog_changed=True)
                )
                self._finish_commit(ts, {}, [ALL_KEYS])
        self._store_again(restore)

    def record_change(self, change: Callable[[], T]) -> T:
        """Make `change()` (a change outside the documents, such as redefining functions) a
        commit without writes: it gets a ts, live queries see a commit, and reads as of an
        earlier ts are no longer answered from the latest state. Returns what it returns."""
        with self._exclusive() as session:
            result = change()
            ts = self._store_commit(session, [], [], lambda: LoggedCommit(definitions_changed=True))
            self._ts = ts
            # In the write log only (no read set holds that key, so neither OCC nor live
            # queries react to it): `read_as_of` sees a redefinition like any later commit.
            self._writes.append(ts, [_DEFINITIONS_CHANGED])
            self._publish(Commit(ts, {}, []))
        return result

    def _check_existing_documents(self, schema: SchemaDefinition) -> list[str]:
        """Check every document of the schema's tables; returns the ids of those it would
        store differently (`validate_write` returns a copy only then)."""
        if not schema.schema_validation:
            return []
        restore: list[str] = []
        for name in schema.tables:
            info = self.catalog.table(name)
            if info is None:
                continue
            for _, doc in self.persistence.documents_of(info.number):
                try:
                    stored = schema.validate_write(name, doc, self.catalog.table_name)
                except ValidationError as exc:
                    raise SchemaError(
                        f"Existing document {doc['_id']} in table {name!r} does not match the "
                        f"new schema; fix or delete it first.\n{exc}"
                    ) from exc
                if stored is not doc:
                    restore.append(str(doc["_id"]))
        return restore

    def _store_again(self, ids: list[str]) -> None:
        """Replace each document by itself, so that the current schema stores it as it says
        (one mutation per 1,000 documents; a document deleted meanwhile is skipped)."""

        def replace_all(batch: list[str]) -> Callable[[Transaction], None]:
            def run(txn: Transaction) -> None:
                for doc_id in batch:
                    doc = txn.get(doc_id)
                    if doc is not None:
                        txn.replace(doc_id, {k: v for k, v in doc.items() if k[:1] != "_"})

            return run

        for start in range(0, len(ids), 1000):
            self.mutate(replace_all(ids[start : start + 1000]))

    def _reconcile_indexes(self, info: TableInfo, declared: dict[str, IndexInfo]) -> None:
        """Drop the indexes of `info` that `declared` (by name, ids ignored) does not list as
        they are, and create those it lists that do not exist."""
        for name in list(info.all_indexes()):
            with self._exclusive() as session:
                # Read under the lock: another process may have changed it since.
                index = info.all_indexes().get(name)
                wanted = declared.get(name)
                if (
                    index is None
                    or name in (BY_CREATION_TIME, BY_ID)
                    or (wanted is not None and wanted.shape == index.shape)
                ):
                    continue
                assert index.index_id is not None
                self._search.drop(index.index_id)
                if session is None:
                    self.persistence.drop_index(index.index_id)
                else:
                    session.drop_index(index.index_id)
                    ts = session.finish(_CATALOG_CHANGE)
                    self._finish_commit(ts, {}, [])
                self.catalog.drop_index(info.name, name)
        for name, wanted in declared.items():
            made = info.all_indexes().get(name)
            if made is None:
                self._create_index_now(info, wanted)
            elif made.shape != wanted.shape:  # another process made it meanwhile
                raise SchemaError(
                    f"Index {name!r} of table {info.name!r} was just defined otherwise "
                    f"({made.kind} index of {list(made.fields)}) by another process of this "
                    "store; install the schema again once the other process is done."
                )

    # -- transactions --------------------------------------------------------------------

    def next_creation_time(self) -> float:
        """A `_creationTime` (ms since epoch) greater than every earlier one."""
        with self._counter_lock:
            now = time.time() * 1000.0
            self._last_creation_time = max(now, math.nextafter(self._last_creation_time, math.inf))
            return self._last_creation_time

    def transaction(self, snapshot: Snapshot, *, writable: bool) -> Transaction:
        """A transaction over `snapshot` (the caller closes both)."""
        if not writable:
            txn = Transaction(
                snapshot,
                self.catalog,
                self.schema,
                writable=False,
                allocate_table=_no_new_tables,
                creation_time=self.next_creation_time,
            )
        else:
            catalog = _TxnCatalog(self.catalog, self._allocate_number)
            txn = Transaction(
                snapshot,
                catalog,
                self.schema,
                writable=True,
                allocate_table=catalog.allocate,
                creation_time=self.next_creation_time,
            )
        txn.searcher = self._search.search
        txn.vectors = self.vectors
        return txn

    def snapshot(self) -> Snapshot:
        """A read snapshot of the latest commit; close it with `close_snapshot`.

        On a shared store the snapshot may see commits of other processes that this one has
        not replayed yet: they are replayed before it is returned, so that the catalog knows
        their tables and live queries know their commits."""
        snap = self.persistence.snapshot()
        if self._shared is not None and snap.ts > self._ts:
            try:
                self._catch_up()
            except BaseException:
                snap.close()
                raise
        return snap

    @staticmethod
    def close_snapshot(snapshot: Snapshot) -> None:
        """End a snapshot opened by `snapshot()`."""
        snapshot.close()

    def read(
        self, fn: Callable[[Transaction], T], snapshot: Snapshot | None = None
    ) -> tuple[T, ReadSet, int]:
        """Run `fn` in a read-only transaction (on `snapshot`, or a fresh one).

        Returns:
            `(result, finalized read set, snapshot ts)`; `fn`'s exceptions propagate.
        """
        snap = self.snapshot() if snapshot is None else snapshot
        txn = self.transaction(snap, writable=False)
        try:
            return fn(txn), txn.read_set.finalize(), snap.ts
        finally:
            txn.closed = True
            if snapshot is None:
                self.close_snapshot(snap)

    def keep_history(self) -> None:
        """Keep recent history in the write log, so that `read_as_of` can answer reads as of
        a ts of the last `HISTORY_NS` (without it, only as of the latest commit)."""
        with self._commit_lock:
            self._writes.keep_history()

    def read_as_of(self, ts: int, fn: Callable[[Transaction], T]) -> T:
        """Run `fn` read-only and return what it returns (or raise what it raises) as of
        commit `ts`.

        The store keeps only the latest version of each document, so `fn` runs on the latest
        snapshot, and its outcome is the one at `ts` exactly when nothing after `ts` changed
        what it read: no commit wrote into its read set, no schema change and no
        `record_change` came since. The write log's history says which commits came.

        Raises:
            HistoryUnavailable: `ts` is later than the latest commit or older than the history
                reaches, or something after `ts` changed what `fn` read.
        """
        if ts > self._ts:
            self._catch_up()  # `ts` may come from another process of a shared store
        if ts > self._ts:
            raise HistoryUnavailable(
                f"ts {ts} is later than the latest commit ({self._ts}); ask for a ts this "
                "store has returned (query_ts)"
            )
        snap = self.snapshot()
        txn = self.transaction(snap, writable=False)
        value: Any = None
        error: Exception | None = None
        try:
            value = fn(txn)
        except Exception as exc:  # its error at `ts`, if nothing it read changed since
            error = exc
        finally:
            txn.closed = True
            self.close_snapshot(snap)
        read_set = txn.read_set.finalize()
        self._catch_up()  # the commits of other processes that the snapshot may have seen
        with self._commit_lock:  # waits for a schema change in progress to be logged
            later = self._writes.after(ts)
        if later is None:
            raise HistoryUnavailable(
                f"ts {ts} is older than the write history this store keeps (the last "
                f"{HISTORY_NS // 1_000_000_000} s, {HISTORY_MAX_KEYS:,} written keys); read at "
                "a recent ts (query_ts)"
            )
        for commit_ts, keys in later:
            if _DEFINITIONS_CHANGED in keys:  # even during the read: it may run the new code
                raise HistoryUnavailable(
                    f"The functions were redefined after ts {ts}: what they returned then is "
                    "not known; read at a recent ts (query_ts)"
                )
            # A schema change counts even if it is later than the snapshot: it altered the
            # catalog before it was logged.
            if (commit_ts <= snap.ts or ALL_KEYS in keys) and read_set.overlaps(keys):
                raise HistoryUnavailable(
                    f"What this query reads changed after ts {ts} (at {commit_ts}); this "
                    "store keeps only the latest version of each document"
                )
        if error is not None:
            raise error
        return cast("T", value)

    def mutate(self, fn: Callable[[Transaction], T]) -> tuple[T, int]:
        """Run `fn` in a writable transaction and commit it, re-running it on conflicts.

        A few optimistic attempts run concurrently with other mutations; if each of them
        conflicts (a commit after its start wrote into what it read), the last attempt runs
        serially: it holds the commit lock from its first read to its commit, so no other
        commit can intervene and it cannot conflict. Contention slows a mutation down (and
        blocks other commits while it runs serially); it never makes it fail.

        Returns:
            `(result, commit ts)`.

        Raises:
            Exception: whatever `fn` raised, if its reads validate; nothing was written.
            ConflictError: never for contention (see above). Only if the serial attempt
                itself fails validation, which the single committer rules out; kept as the
                documented error of a store whose commits could come from elsewhere.
        """
        conflicts: set[str] = set()
        forget_output = logs.checkpoint()
        for delay in _RETRY_DELAYS:
            if delay:
                forget_output()  # a discarded attempt's log lines are not the mutation's
                time.sleep(delay)
            try:
                return self._attempt(fn)
            except _Conflict as conflict:
                conflicts |= conflict.tables
        # Serially: while this thread holds the lock nothing else commits (in any process of
        # a shared store), so the reads are those of the state at the start ts and validation
        # passes. On a shared store a serial attempt whose connection was lost before its
        # commit was stored (`CommitNotWritten`) runs once more.
        for _ in range(2 if self._shared is not None else 1):
            forget_output()
            with self._exclusive():
                try:
                    return self._attempt(fn)
                except _Conflict as conflict:
                    conflicts |= conflict.tables
                    if conflict.tables:
                        break
        if self._shared is not None and not conflicts:
            raise PersistenceError(
                f"{self._shared.describe()}: this mutation ran under the commit lock twice, and "
                "each time the connection was lost before its commit was stored (nothing was "
                "written). A mutation that keeps conflicting runs under the lock, which it may "
                "hold for at most 30 s: make it shorter, or check the database's health."
            )
        tables = ", ".join(f'"{t}"' for t in sorted(conflicts)) or "the same"
        raise ConflictError(
            f"Documents read from or written to the {tables} table changed while this "
            "mutation was being run, even while it ran serially under the commit lock. This "
            "is a bug of the store: please report it."
        )

    def _attempt(self, fn: Callable[[Transaction], T]) -> tuple[T, int]:
        """One run of `fn` and its commit.

        Raises:
            _Conflict: a commit after the run's start ts wrote into its reads: run it again.
        """
        # Register the start ts before reading anything, so that pruning keeps every commit
        # this transaction must be validated against.
        token = object()
        with self._counter_lock:
            ts = self._active[id(token)] = self._ts
        txn = self.transaction(self.persistence.current_reader(ts), writable=True)
        try:
            try:
                result = fn(txn)
            except Exception:
                # The reads may mix commits after ts; an error caused by such a mix must not
                # escape: re-run instead (`_Conflict`) unless the reads validate.
                txn.closed = True
                self._check_reads(txn)
                raise
            txn.closed = True
            return result, self.commit(txn)
        finally:
            txn.closed = True
            with self._counter_lock:
                del self._active[id(token)]

    def _check_reads(self, txn: Transaction) -> None:
        """Raise `_Conflict` if a commit after the transaction's ts wrote into its reads."""
        read_set = txn.read_set.finalize()
        self._catch_up()  # commits made elsewhere before the reads ran are in the log now
        with self._commit_lock:
            self._validate(txn.snapshot.ts, read_set)

    def commit(self, txn: Transaction) -> int:
        """Validate and write a transaction's writes; returns the commit timestamp (the
        snapshot's for a transaction without writes).

        Raises:
            _Conflict: a later commit wrote into the transaction's read set.
        """
        writes = txn.write_set()
        read_set = txn.read_set.finalize()
        if not writes:
            # Nothing to write: validating against what is known once caught up is enough
            # (no need for a shared store's cluster-wide lock).
            self._catch_up()
            with self._commit_lock:
                self._validate(txn.snapshot.ts, read_set)
            return txn.snapshot.ts
        if self._shared is not None and self._session is None and self._notified <= self._ts:
            with self._commit_lock:
                ts = self._commit_if_latest(txn, writes, read_set)
            if ts is not None:
                return ts
        with self._exclusive() as session:
            self._validate(txn.snapshot.ts, read_set)
            records, keys, new_tables = self._prepare_commit(txn, writes)
            ts = self._with_new_tables(
                new_tables,
                lambda: self._store_commit(
                    session, records, new_tables, lambda: LoggedCommit(writes, keys, new_tables)
                ),
            )
            if ts is None:
                # Known not to be stored: run it again on a new connection, as for a conflict.
                raise _Conflict(set())
            self._finish_commit(ts, writes, keys)
            return ts

    def _prepare_commit(
        self, txn: Transaction, writes: dict[str, Write]
    ) -> tuple[list[CommitRecord], list[WrittenKey], list[TableInfo]]:
        """`(storage records, written keys, tables the commit creates)` of a transaction's
        writes (call with the commit lock held). Creating a table writes its `TABLES` key.

        Raises:
            _Conflict: another commit created a table this one creates.
        """
        assert isinstance(txn.catalog, _TxnCatalog)
        tables = self._tables_for(txn.catalog, writes)
        records, keys = self._records(writes, tables)
        new_tables = (
            [t for t in tables.values() if self.catalog.table(t.name) is None]
            if txn.catalog.new_tables
            else []
        )
        keys.extend((TABLES, table_created_key(info.number)) for info in new_tables)
        return records, keys, new_tables

    def _with_new_tables(
        self, new_tables: list[TableInfo], store: Callable[[], int | None]
    ) -> int | None:
        """`store()` with `new_tables` in the catalog while it runs (a snapshot that sees the
        commit's rows must see their tables); they stay only if it returns a ts. Returns
        that ts, or None (nothing stored: `store()` returned None or raised
        `CommitNotWritten`)."""
        try:
            for info in new_tables:  # inside the `try`: every way out undoes it
                self.catalog.install(info)
            ts = store()
        except CommitNotWritten:
            ts = None
        except BaseException:
            for info in new_tables:
                self.catalog.remove_table(info.name)
            raise
        if ts is None:
            for info in new_tables:
                self.catalog.remove_table(info.name)
        return ts

    def _commit_if_latest(
        self, txn: Transaction, writes: dict[str, Write], read_set: ReadSet
    ) -> int | None:
        """A shared store's commit in one round trip, when no other process committed since
        the latest commit this process knows (the common case of a process writing alone):
        validated against the local write log, which then holds every commit. Returns its ts,
        or None (nothing written) when another commit came first: then the caller commits
        under the cluster-wide lock. Call with the commit lock held.

        Raises:
            _Conflict: a commit this process knows wrote into the read set.
        """
        shared = self._shared
        assert shared is not None
        self._validate(txn.snapshot.ts, read_set)
        records, keys, new_tables = self._prepare_commit(txn, writes)
        body = encode_commit(LoggedCommit(writes, keys, new_tables))
        known = self._ts
        ts = self._with_new_tables(
            new_tables, lambda: shared.commit_if_latest(known, records, new_tables, body)
        )
        if ts is not None:
            self._finish_commit(ts, writes, keys)
        return ts

    def _validate(self, since: int, read_set: ReadSet) -> None:
        tables = self._writes.tables_overlapping(since, read_set)
        if tables is None:
            raise _Conflict(set())  # the commits it would need to check were pruned
        if tables:
            raise _Conflict(tables)

    def _tables_for(self, catalog: _TxnCatalog, writes: dict[str, Write]) -> dict[str, TableInfo]:
        tables: dict[str, TableInfo] = {}
        for write in writes.values():
            if write.table in tables:
                continue
            info = self.catalog.table(write.table)
            if info is None:
                pending = catalog.new_tables.get(write.table)
                if pending is None:  # it saw a table another commit installed, then removed
                    raise _Conflict({write.table})
                info = new_table_info(pending.name, pending.number, self._allocate_index_id())
            elif write.table in catalog.new_tables:
                raise _Conflict({write.table})  # another mutation created it first: re-run
            tables[write.table] = info
        return tables

    @staticmethod
    def _records(
        writes: dict[str, Write], tables: dict[str, TableInfo]
    ) -> tuple[list[CommitRecord], list[WrittenKey]]:
        """The storage records of a commit (each with the index entries that change), and the
        index keys it wrote: the old and the new key of each written document in every index
        of its table (an unchanged key once)."""
        records: list[CommitRecord] = []
        keys: list[WrittenKey] = []
        for doc_id, write in writes.items():
            changes = []
            table = tables[write.table]
            if table.search_indexes:  # search terms and vector filter keys (rare: checked once)
                keys.extend(table_search_keys(table, write.old, write.new))
                keys.extend(vector_written_keys(table, write.old, write.new))
            for info, name, old, new, unchanged in index_keys(table, write):
                if old is not None:
                    keys.append((name, old))
                if new is not None:
                    keys.append((name, new))
                if info.index_id is not None and not unchanged:
                    changes.append(IndexChange(info.index_id, old, new))
            records.append(
                CommitRecord(
                    table.number,
                    id_key(doc_id),
                    write.new,
                    tuple(changes),
                    write.old is not None,
                )
            )
        return records, keys

    def _prune_log(self) -> None:
        self._writes.prune(self._ts, self._oldest_active)

    def _oldest_active(self) -> int:
        """The start ts of the oldest running mutation (the latest ts if none runs)."""
        with self._counter_lock:
            return min(self._active.values(), default=self._ts)

    def _next_ts(self) -> int:
        """The ts for the next commit; `self._ts` moves only once the commit is stored, so a
        snapshot taken at `self._ts` never lacks a commit at or before it."""
        return max(self._ts + 1, time.time_ns())

    def _publish(self, commit: Commit) -> None:
        self._search.on_commit(commit.ts, commit.writes, commit.keys)
        for listener in self._listeners:
            listener(commit)

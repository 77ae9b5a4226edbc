"""In-process storage without SQLite: plain dicts and sorted key lists, nothing lasting.

It keeps what `SqlitePersistence` keeps (documents by `(table_number, id_key)`, index entries
by the same order-preserving key bytes, the catalog) and answers the same calls, so it proves
the persistence seam and runs the engine's tests without a file.

Multi-version: every document and index entry holds a short tuple of versions
`((ts, value), ...)` in ts order (value None: deleted). A snapshot at ts sees, per key, the
latest version at or before ts, so it stays one consistent commit while later commits are
written from another thread. A version is dropped as soon as no open snapshot can see it (at
once when none is open; else at a later commit, from a queue of keys to compact), so a store
without long-lived snapshots holds one version per key.

Concurrency: one lock guards every change and the sorted key lists. Version tuples are never
changed in place (a write stores a new tuple), so a point read takes no lock: it reads a
tuple and picks its version. A scan copies a batch of keys under the lock (a sorted list must
not change while it is walked), then resolves their versions without it. Bodies are stored
encoded (`encode_document`) and decoded per read, like SQLite's: a caller may change the dict
it gets.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice, pairwise
from typing import Final

from sortedcontainers import SortedList

from kernel_ext.errors import PersistenceError
from kernel_ext.persistence.base import CommitRecord, StoredCatalog, StoredIndex, all_documents
from kernel_ext.persistence.files import FileStore, MemoryFiles
from kernel_ext.store.catalog import TableInfo
from kernel_ext.store.codec import decode_document, encode_document
from kernel_ext.store.values import Value

__all__ = ["MemoryPersistence", "MemorySnapshot"]

_FIRST_BATCH: Final = 16
_MAX_BATCH: Final = 1024
#: A ts later than every commit: `CurrentReader`-style reads of the latest state.
_LATEST: Final = 1 << 127

Row = tuple[bytes, dict[str, Value]]
#: `((ts, value), ...)` in ts order; value None: absent from that ts on.
Versions = tuple[tuple[int, bytes | None], ...]


def _visible(versions: Versions | None, ts: int) -> bytes | None:
    """The value `versions` holds at `ts` (None: absent)."""
    if not versions:
        return None
    last_ts, value = versions[-1]
    if last_ts <= ts:  # the common case: one version, older than the reader
        return value
    for vts, value in reversed(versions):
        if vts <= ts:
            return value
    return None


def _prune(versions: Versions, open_ts: list[int]) -> Versions:
    """The versions some reader may still see: the latest one (new snapshots see it) and, per
    open snapshot ts, the latest at or before it. A leading deletion is dropped (absent is
    what a reader sees before the first version anyway); `()` when nothing is left."""
    if len(versions) > 1:
        kept = [v for v, nxt in pairwise(versions) if _open_between(open_ts, v[0], nxt[0])]
        kept.append(versions[-1])
    else:
        kept = list(versions)
    while kept and kept[0][1] is None:
        del kept[0]
    return tuple(kept)


def _open_between(open_ts: list[int], lo: int, hi: int) -> bool:
    """Whether a snapshot ts in `open_ts` (sorted) lies in `[lo, hi)`."""
    i = bisect.bisect_left(open_ts, lo)
    return i < len(open_ts) and open_ts[i] < hi


def _bodies(
    docs: _Keyed, index: _Keyed | None, keys: list[bytes], ts: int
) -> list[tuple[bytes, bytes]]:
    """`(key, body)` of the `keys` present at `ts` (`index` None: `keys` are document ids);
    an index entry joins its document, and is skipped if the document is absent at `ts`
    (like SQLite's join)."""
    doc_versions = docs.versions
    rows = []
    if index is None:
        for key in keys:
            body = _visible(doc_versions.get(key), ts)
            if body is not None:
                rows.append((key, body))
        return rows
    entry_versions = index.versions
    for key in keys:
        id_key = _visible(entry_versions.get(key), ts)
        body = None if id_key is None else _visible(doc_versions.get(id_key), ts)
        if body is not None:
            rows.append((key, body))
    return rows


class _Keyed:
    """One keyed structure (a table's documents, or an index's entries): versions by key, and
    every key that has versions in order (for scans)."""

    __slots__ = ("keys", "versions")

    def __init__(self) -> None:
        self.versions: dict[bytes, Versions] = {}
        self.keys: SortedList = SortedList()

    def batch(self, lo: bytes, hi: bytes, descending: bool, count: int) -> list[bytes]:
        """Up to `count` keys in `[lo, hi)` in scan order (call under the owner's lock)."""
        found = self.keys.irange(lo, hi, (True, False), reverse=descending)
        return list(islice(found, count))

    def has_live(self) -> bool:
        """Whether some key is present at the latest commit."""
        return any(v[-1][1] is not None for v in self.versions.values())


class MemorySnapshot:
    """A read snapshot at one commit; implements `store.transaction.Snapshot`.

    Get it from `MemoryPersistence.snapshot()` and `close()` it when done (an open snapshot
    keeps the versions it sees); reads after `close()` raise `PersistenceError`.
    """

    __slots__ = ("_closed", "_owner", "ts")

    def __init__(self, owner: MemoryPersistence, ts: int) -> None:
        self._owner = owner
        self._closed = False
        self.ts: int = ts

    def _check(self) -> None:
        if self._closed:
            raise PersistenceError("This snapshot is closed")

    def get(self, table_number: int, id_key: bytes) -> dict[str, Value] | None:
        """The document, or None."""
        self._check()
        return self._owner._get(table_number, id_key, self.ts)

    def scan(
        self, table_number: int, index_id: int | None, lo: bytes, hi: bytes, descending: bool
    ) -> Iterator[Row]:
        """Rows in `[lo, hi)` in key order (`index_id` None: the documents by id)."""
        self._check()
        return self._owner._scan(
            table_number, index_id, lo, hi, descending=descending, check=self._check, ts=self.ts
        )

    def close(self) -> None:
        """End this snapshot; idempotent."""
        if not self._closed:
            self._closed = True
            self._owner._release(self.ts)


class MemoryCurrentReader:
    """Reads of the latest committed state, each call on its own (see
    `sqlite.CurrentReader`): each read sees one whole commit, consecutive reads may see
    different ones.

    Args:
        owner: the persistence to read.
        ts: a commit ts at or before every state this reader will see.
    """

    __slots__ = ("_owner", "ts")

    def __init__(self, owner: MemoryPersistence, ts: int) -> None:
        self._owner = owner
        self.ts = ts

    def get(self, table_number: int, id_key: bytes) -> dict[str, Value] | None:
        """The document as of the latest commit, or None."""
        return self._owner._get_latest(table_number, id_key)

    def scan(
        self, table_number: int, index_id: int | None, lo: bytes, hi: bytes, descending: bool
    ) -> Iterator[Row]:
        """Rows in `[lo, hi)` in key order; each batch is read at the latest commit."""
        owner = self._owner
        return owner._scan(
            table_number, index_id, lo, hi, descending=descending, check=owner._check_open, ts=None
        )

    def close(self) -> None:
        """Nothing to end: each read is on its own."""


class MemoryPersistence:
    """A store held in this process's memory; nothing outlives it. Implements
    `persistence.base.Persistence`.

    Same calls and contracts as `SqlitePersistence` (the engine serializes the writes);
    snapshots and reads may come from any thread.
    """

    def __init__(self) -> None:
        self.files: FileStore = MemoryFiles()  #: the files' bytes (`ctx.storage`)
        self._lock = threading.Lock()  # guards every change, the key lists and `_open`
        self._committed_ts = 0
        self._closed = False
        self._tables: dict[int, str] = {}
        self._indexes: dict[int, StoredIndex] = {}
        self._docs: dict[int, _Keyed] = {}
        self._entries: dict[int, _Keyed] = {}
        self._open: dict[int, int] = {}  # snapshot ts -> how many are open
        # (ts written, structure, key) of keys that kept older versions for open snapshots,
        # in ts order; each key at most once (`_queued`), so that a snapshot left open keeps
        # the queue as long as the keys, not as long as the writes.
        self._pending: deque[tuple[int, _Keyed, bytes]] = deque()
        self._queued: set[tuple[_Keyed, bytes]] = set()

    # -- catalog -------------------------------------------------------------------------

    def load_catalog(self) -> StoredCatalog:
        """`(tables [(number, name)], indexes [StoredIndex])`."""
        with self._lock:
            tables = sorted(self._tables.items())
            indexes = [info for _, info in sorted(self._indexes.items())]
        return tables, indexes

    def last_ts(self) -> int:
        """The timestamp of the latest commit (0 for a new store)."""
        return self._committed_ts

    def set_owner_info(self, url: str | None = None) -> None:
        """Nothing to record: no other process can see this store."""

    # -- reading -------------------------------------------------------------------------

    def snapshot(self) -> MemorySnapshot:
        """A read snapshot of the latest commit; call `close()` on it when done.

        Raises:
            PersistenceError: the store is closed.
        """
        with self._lock:
            self._check_open()
            ts = self._committed_ts
            self._open[ts] = self._open.get(ts, 0) + 1
        return MemorySnapshot(self, ts)

    def current_reader(self, ts: int) -> MemoryCurrentReader:
        """Reads of the latest committed state, call by call (see `MemoryCurrentReader`)."""
        return MemoryCurrentReader(self, ts)

    def documents_of(self, table_number: int) -> Iterator[tuple[bytes, dict[str, Value]]]:
        """Every `(id_key, document)` of a table (for index builds and schema checks)."""
        return all_documents(self, table_number)

    def _check_open(self) -> None:
        if self._closed:
            raise PersistenceError("The store is closed")

    def _release(self, ts: int) -> None:
        with self._lock:
            left = self._open[ts] - 1
            if left:
                self._open[ts] = left
            else:
                del self._open[ts]

    def _get(self, table_number: int, id_key: bytes, ts: int) -> dict[str, Value] | None:
        """The document at `ts`, without the lock (version tuples never change)."""
        self._check_open()
        docs = self._docs.get(table_number)
        body = None if docs is None else _visible(docs.versions.get(id_key), ts)
        return None if body is None else decode_document(body)

    def _get_latest(self, table_number: int, id_key: bytes) -> dict[str, Value] | None:
        """The document as of the latest commit (under the lock: never half a commit)."""
        with self._lock:
            self._check_open()
            docs = self._docs.get(table_number)
            body = None if docs is None else _visible(docs.versions.get(id_key), _LATEST)
        return None if body is None else decode_document(body)

    def _scan(
        self,
        table_number: int,
        index_id: int | None,
        lo: bytes,
        hi: bytes,
        *,
        descending: bool,
        check: Callable[[], None],
        ts: int | None,
    ) -> Iterator[Row]:
        """Rows in `[lo, hi)` in key order at `ts` (None: each batch at the latest commit,
        read under the lock), fetched in growing batches like SQLite's; `check()` before
        each batch raises once the reader is closed."""
        docs = self._docs.get(table_number)
        keyed = docs if index_id is None else self._entries.get(index_id)
        if docs is None or keyed is None:
            return
        index = None if index_id is None else keyed
        batch = _FIRST_BATCH
        while lo < hi:
            check()
            with self._lock:
                keys = keyed.batch(lo, hi, descending, batch)
                rows = None if ts is not None else _bodies(docs, index, keys, _LATEST)
            if ts is not None:
                rows = _bodies(docs, index, keys, ts)
            assert rows is not None
            for key, body in rows:
                yield key, decode_document(body)
            if len(keys) < batch:
                return
            if descending:
                hi = keys[-1]
            else:
                lo = keys[-1] + b"\x00"
            batch = min(batch * 2, _MAX_BATCH)

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
        """Record a new index with its `(key, id_key)` entries (built from the existing
        documents): known only once complete."""
        keyed = _Keyed()
        self._fill(keyed, entries)
        with self._lock:
            self._check_open()
            self._indexes[index_id] = StoredIndex(
                index_id, table_number, name, tuple(fields), kind, config
            )
            self._entries[index_id] = keyed

    def fill_index(self, index_id: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Add `(key, id_key)` entries to an existing index."""
        keyed = _Keyed()
        self._fill(keyed, entries)
        with self._lock:
            self._check_open()
            target = self._entries.setdefault(index_id, _Keyed())
            for key, versions in keyed.versions.items():
                if key not in target.versions:
                    target.keys.add(key)
                target.versions[key] = versions

    def _fill(self, keyed: _Keyed, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Put `entries` into `keyed` (not yet shared) as of the latest commit."""
        ts = self._committed_ts
        for key, id_key in entries:
            keyed.versions[key] = ((ts, id_key),)
        keyed.keys.update(keyed.versions)

    def unfilled_indexes(self) -> list[int]:
        """The ids of the indexes that hold no entry although their table holds documents
        (never the case here: an index is filled before it is recorded)."""
        with self._lock:
            return [
                index_id
                for index_id, index in self._indexes.items()
                if index.kind == "db"
                and not self._entries.get(index_id, _Keyed()).has_live()
                and self._docs.get(index.table_number, _Keyed()).has_live()
            ]

    def drop_index(self, index_id: int) -> None:
        """Delete an index and its entries (a scan already running keeps reading them)."""
        with self._lock:
            self._check_open()
            self._indexes.pop(index_id, None)
            self._entries.pop(index_id, None)

    def write_commit(
        self, ts: int, records: list[CommitRecord], new_tables: Iterable[TableInfo] = ()
    ) -> None:
        """Apply one commit atomically (with the tables it created) and record its timestamp.

        Raises:
            PersistenceError: the store is closed, or the commit inserts a document that
                exists; nothing of the commit was written.
        """
        bodies = [None if r.doc is None else encode_document(r.doc) for r in records]
        with self._lock:
            self._check_open()
            self._check_inserts(records)
            for table in new_tables:
                self._add_table(table)
            open_ts = sorted(self._open)
            for r in records:  # every old index key goes before any new one is added
                for change in r.index_changes:
                    if change.old_key is not None and change.old_key != change.new_key:
                        keyed = self._entries.setdefault(change.index_id, _Keyed())
                        self._put(keyed, change.old_key, None, ts, open_ts)
            for r, body in zip(records, bodies, strict=True):
                docs = self._docs.setdefault(r.table_number, _Keyed())
                self._put(docs, r.id_key, body, ts, open_ts)
                for change in r.index_changes:
                    if change.new_key is not None and change.old_key != change.new_key:
                        keyed = self._entries.setdefault(change.index_id, _Keyed())
                        self._put(keyed, change.new_key, r.id_key, ts, open_ts)
            self._compact(open_ts, ts)
            self._committed_ts = max(self._committed_ts, ts)

    def _check_inserts(self, records: list[CommitRecord]) -> None:
        for r in records:
            if r.doc is not None and not r.replaces:
                docs = self._docs.get(r.table_number)
                if docs is not None and _visible(docs.versions.get(r.id_key), _LATEST):
                    raise PersistenceError(
                        f"Commit failed, nothing was written: table {r.table_number} already "
                        f"holds the document {r.id_key!r} that it inserts"
                    )

    def _add_table(self, table: TableInfo) -> None:
        self._tables[table.number] = table.name
        self._docs.setdefault(table.number, _Keyed())
        for index in table.indexes.values():
            if index.index_id is not None:
                self._indexes[index.index_id] = StoredIndex(
                    index.index_id, table.number, index.name, tuple(index.fields)
                )
                self._entries.setdefault(index.index_id, _Keyed())

    def _put(
        self, keyed: _Keyed, key: bytes, value: bytes | None, ts: int, open_ts: list[int]
    ) -> None:
        """Give `key` the version `(ts, value)`, keeping the older ones open snapshots see."""
        old = keyed.versions.get(key)
        if old is None:
            if value is None:
                return
            keyed.versions[key] = ((ts, value),)
            keyed.keys.add(key)
            return
        self._store(keyed, key, _prune((*old, (ts, value)), open_ts), ts)

    def _store(self, keyed: _Keyed, key: bytes, versions: Versions, ts: int) -> None:
        """Keep `versions` of `key` (none: forget the key); queue the key for compaction at
        a commit after `ts` if it holds older versions."""
        if not versions:
            del keyed.versions[key]
            keyed.keys.remove(key)
            return
        keyed.versions[key] = versions
        if len(versions) > 1 and (keyed, key) not in self._queued:
            self._queued.add((keyed, key))
            self._pending.append((ts, keyed, key))

    def _compact(self, open_ts: list[int], ts: int) -> None:
        """At the commit `ts`: drop the versions that no open snapshot sees any more, for the
        keys queued before the oldest open snapshot (all of them when none is open). A key
        that still needs older versions is queued again at `ts`."""
        pending = self._pending
        oldest = open_ts[0] if open_ts else _LATEST
        for _ in range(len(pending)):
            if pending[0][0] > oldest:
                return
            _, keyed, key = pending.popleft()
            self._queued.discard((keyed, key))
            old = keyed.versions.get(key)
            if old is not None:
                self._store(keyed, key, _prune(old, open_ts), ts)

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Forget everything; idempotent. Snapshots and reads raise `PersistenceError`."""
        with self._lock:
            self._closed = True
            self._docs.clear()
            self._entries.clear()
            self._pending.clear()
            self._queued.clear()

"""The vector indexes of a store: exact (numpy) matrices kept current by its commits.

Each process keeps its own: an index is built from the documents the first time a search
uses it (a store that never searches pays nothing), then maintained from every commit the
store publishes, local or replayed from other processes of a shared store (`Commit.writes`
has the old and new version of each document). Each index knows the ts its contents are
as of, and logs which ids each recent commit wrote, so that a search at an older snapshot
can tell which documents to read again (`store.vector_query`). A schema change, or a gap in
a shared store's log, drops every index: the next search builds it again.

Thread-safe: one lock guards every index; a commit's update holds it for a few row writes,
a search for one matrix product.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Final

from kernel_ext.store.catalog import IndexInfo, TableInfo
from kernel_ext.store.expressions import field_value
from kernel_ext.store.index_kinds import VectorIndexConfig
from kernel_ext.store.keys import KEY_MAX
from kernel_ext.store.readset import ALL
from kernel_ext.store.vector import VectorRequest, document_vector
from kernel_ext.store.vector_matrix import VectorMatrix

if TYPE_CHECKING:
    from kernel_ext.engine.store import Commit, Store

__all__ = ["MAX_LOGGED_IDS", "VectorIndexes"]

_log = logging.getLogger(__name__)

#: How many written ids an index's log keeps (a search at a snapshot older than the log
#: scans the table instead).
MAX_LOGGED_IDS: Final = 50_000
#: Seconds a search waits for the commits its snapshot sees to reach the index (they are
#: published right after they are stored: a bound, not a delay).
_DISPATCH_WAIT: Final = 5.0


class _Index:
    """One vector index's matrix, the ts it is as of, and its log of written ids."""

    def __init__(self, table: TableInfo, index: IndexInfo, config: VectorIndexConfig) -> None:
        self.table = table.name
        self.number = table.number
        self.config = config
        self.matrix = VectorMatrix(config.dimensions, config.filter_fields)
        self.ts = 0
        #: Commits after this ts are in `log`.
        self.horizon = 0
        self.log: deque[tuple[int, tuple[str, ...]]] = deque()
        self.logged = 0
        self.building = True
        self.dropped = False
        self.buffer: list[Commit] = []
        self.ready = threading.Event()
        self.failed: BaseException | None = None

    def apply(self, commit: Commit) -> None:
        """Bring the matrix to `commit` (one after `ts`; earlier ones are in it already)."""
        if commit.ts <= self.ts:
            return
        written = tuple(i for i, w in commit.writes.items() if w.table == self.table)
        for doc_id in written:
            new = commit.writes[doc_id].new
            vector = None if new is None else document_vector(new, self.config)
            if vector is None:
                self.matrix.remove(doc_id)
            else:
                assert new is not None
                values = [field_value(new, f) for f in self.config.filter_fields]
                self.matrix.upsert(doc_id, vector, values)
        if written:
            self.log.append((commit.ts, written))
            self.logged += len(written)
            while self.logged > MAX_LOGGED_IDS:
                ts, ids = self.log.popleft()
                self.logged -= len(ids)
                self.horizon = ts
        self.ts = commit.ts

    def changed_since(self, ts: int) -> set[str] | None:
        """The ids written after `ts` (up to `self.ts`), or None if the log does not reach
        back to `ts`."""
        if ts < self.horizon:
            return None
        changed: set[str] = set()
        for commit_ts, ids in reversed(self.log):
            if commit_ts <= ts:
                break
            changed.update(ids)
        return changed


class VectorIndexes:
    """The vector indexes of one store (see the module docstring); the store's
    `VectorCandidates` (`store.vector_query`).

    Args:
        store: the store; its commits are followed from now on.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._moved = threading.Condition(self._lock)
        self._indexes: dict[int, _Index] = {}
        store.add_listener(self._on_commit)

    def candidates(
        self, table: TableInfo, index: IndexInfo, request: VectorRequest, snapshot_ts: int, k: int
    ) -> tuple[list[str], set[str]] | None:
        """See `VectorCandidates.candidates`; builds the index on first use."""
        entry = self._index(table, index)
        with self._moved:
            # A snapshot may see a commit being published right now: wait for it.
            self._moved.wait_for(
                lambda: entry.ts >= snapshot_ts or entry.dropped, timeout=_DISPATCH_WAIT
            )
            if entry.dropped or entry.ts < snapshot_ts:
                return None
            changed = entry.changed_since(snapshot_ts)
            if changed is None:
                return None
            top = entry.matrix.top(request.vector, k + len(changed), request.clauses)
        return top, changed

    def close(self) -> None:
        """Free every index (the store closes); a search still running scans instead."""
        with self._moved:
            self._drop_all()
            self._moved.notify_all()

    def _index(self, table: TableInfo, index: IndexInfo) -> _Index:
        assert index.index_id is not None and isinstance(index.config, VectorIndexConfig)
        while True:
            with self._lock:
                entry = self._indexes.get(index.index_id)
                build = entry is None
                if entry is None:
                    entry = self._indexes[index.index_id] = _Index(table, index, index.config)
            if build:
                self._build(entry, index.index_id)
            entry.ready.wait()
            if entry.failed is None:
                return entry
            if build:
                raise entry.failed

    def _build(self, entry: _Index, index_id: int) -> None:
        """Fill `entry` from a snapshot; the commits published meanwhile were buffered
        (registered before the snapshot opened: none is missed)."""
        try:
            snap = self._store.snapshot()
            try:
                for _, doc in snap.scan(entry.number, None, b"", KEY_MAX, False):
                    vector = document_vector(doc, entry.config)
                    if vector is not None:
                        values = [field_value(doc, f) for f in entry.config.filter_fields]
                        entry.matrix.upsert(str(doc["_id"]), vector, values)
            finally:
                self._store.close_snapshot(snap)
            with self._moved:
                entry.ts = entry.horizon = snap.ts
                for commit in entry.buffer:
                    entry.apply(commit)
                entry.buffer.clear()
                entry.building = False
                self._moved.notify_all()
        except BaseException as exc:
            entry.failed = exc
            with self._lock:
                if self._indexes.get(index_id) is entry:
                    del self._indexes[index_id]
            raise
        finally:
            entry.ready.set()

    def _on_commit(self, commit: Commit) -> None:
        """The store's commit listener (under its commit lock: quick). Never raises: the
        commit is stored, and the listeners after this one (live queries) must see it."""
        if not self._indexes:
            return
        with self._moved:
            try:
                if any(index == ALL for index, _ in commit.keys):
                    # A schema change (indexes may be gone or redefined), or a gap in a shared
                    # store's log (commits this process never saw): build again when used.
                    self._drop_all()
                for entry in self._indexes.values():
                    if entry.building:
                        entry.buffer.append(commit)
                    else:
                        entry.apply(commit)
            except Exception:  # a half-applied index would answer wrongly: rebuild it
                _log.exception("Keeping the vector indexes failed; they are built again")
                self._drop_all()
            self._moved.notify_all()

    def _drop_all(self) -> None:
        """Forget every index (under the lock); searches using one scan instead."""
        for entry in self._indexes.values():
            entry.dropped = True
        self._indexes.clear()

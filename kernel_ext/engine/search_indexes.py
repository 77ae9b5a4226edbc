"""The store's full-text indexes: kept by the backend when it can (SQLite FTS5, see
`persistence.base.FullTextSearch`), else in this process (`store.search.InvertedIndex`).

A backend that keeps them answers every search from the snapshot's own transaction (exactly
its commit's state); the engine then ranks with the same pure BM25 (`store.search.rank`) and
builds no index in memory. Otherwise (memory and PostgreSQL stores):

One inverted index per search index, built on its first search from the documents of a
snapshot at exactly the latest commit applied (under the commit lock, so that none is applied
meanwhile; not from the newest stored documents, which on a shared store may hold commits not
replayed yet), then kept up to date from every commit the store publishes: its own and, on a
shared (PostgreSQL) store, those of other processes as they are replayed. A gap in the
replayed log or a schema change drops every index (built again when used). So every backend
ranks with the same tokenizer and BM25, from the same statistics.

Snapshot consistency: a search on a snapshot at ts asks the index for its state at ts. A
commit is stored (and seen by new snapshots) a moment before the store publishes it, so a
search first waits (bounded) until the index has applied every commit up to ts; an index ahead
of ts undoes its changes after ts from the history it keeps; a ts older than that history (or
than the index itself) is answered by an index built from the snapshot's own documents. A
mutation (which reads the latest state and is validated by OCC) reads the latest state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Final

from kernel_ext.errors import PersistenceError
from kernel_ext.persistence.base import FullTextSearch
from kernel_ext.store.catalog import Catalog
from kernel_ext.store.index_kinds import SearchIndexConfig
from kernel_ext.store.keys import KEY_MAX
from kernel_ext.store.readset import ALL
from kernel_ext.store.search import HistoryTooShort, InvertedIndex, SearchSpec, SearchState
from kernel_ext.store.values import Value

__all__ = ["SearchIndexes"]

#: Seconds a search waits for the commits its snapshot sees to be applied (they are being
#: published under the commit lock: this is a bound, not a delay).
_APPLY_WAIT: Final = 10.0


class SearchIndexes:
    """Every search index of one store (see the module docstring).

    Args:
        catalog: the store's catalog (tables of the commits' writes).
        lock: the store's commit lock (held while an index is built).
        ts: the latest commit's ts when the store opened.
        native: the backend, if it keeps the search indexes itself (then none is kept here).
    """

    def __init__(
        self,
        catalog: Catalog,
        lock: Any,
        ts: int,
        *,
        native: FullTextSearch | None = None,
    ) -> None:
        self._native = native
        self._catalog = catalog
        self._commit_lock = lock
        self._cond = threading.Condition()
        self._applied = ts
        self._indexes: dict[int, InvertedIndex] = {}

    def on_commit(
        self, ts: int, writes: dict[str, Any], keys: Iterable[tuple[str, bytes]] = ()
    ) -> None:
        """Apply a published commit (under the commit lock, in ts order). A key of index
        `ALL` (a schema change, or a gap in a shared store's log: commits this process never
        saw, whose writes no index has) drops every index: each is built again when used."""
        with self._cond:
            if any(index == ALL for index, _ in keys):
                self._indexes.clear()
            if self._indexes:
                for doc_id, write in writes.items():
                    table = self._catalog.table(write.table)
                    if table is None:
                        continue
                    for info in table.search_indexes.values():
                        index = None if info.index_id is None else self._indexes.get(info.index_id)
                        if index is not None:
                            index.apply(ts, doc_id, write.new)
            self._applied = max(self._applied, ts)
            self._cond.notify_all()

    def drop(self, index_id: int) -> None:
        """Free an index that was dropped."""
        with self._cond:
            self._indexes.pop(index_id, None)

    def search(  # noqa: PLR0917 (the `store.search.Searcher` signature)
        self,
        snapshot: Any,
        table_number: int,
        index_id: int,
        config: SearchIndexConfig,
        spec: SearchSpec,
        latest: bool,
    ) -> SearchState:
        """The state of a search index for `spec` as `snapshot` sees it (`latest`: as of the
        latest commit applied, for a mutation's reads)."""
        if self._native is not None:
            # A mutation's own writes may change which prefix terms rank: it needs them all.
            return self._native.search_state(snapshot, index_id, spec, all_prefixes=latest)
        index = self._index(table_number, index_id, config, snapshot)
        ts = snapshot.ts
        with self._cond:
            if not latest and not self._cond.wait_for(lambda: self._applied >= ts, _APPLY_WAIT):
                raise PersistenceError(
                    f"The search index was not brought up to commit {ts} in time; try again"
                )
            if index is not None and self._indexes.get(index_id) is index:  # (not dropped)
                try:
                    return index.state(spec, None if latest else ts)
                except HistoryTooShort:
                    pass
        # Older than what the index knows: read the snapshot's own documents.
        rebuilt = InvertedIndex(config, ts)
        rebuilt.load(_docs(snapshot, table_number))
        return rebuilt.state(spec, ts)

    def _index(
        self, table_number: int, index_id: int, config: SearchIndexConfig, snapshot: Any
    ) -> InvertedIndex | None:
        """The index, built from `snapshot` if there is none and `snapshot` is exactly at the
        latest commit applied (else None: this search reads the snapshot itself). Not from
        the newest stored documents: on a shared store they may hold commits of other
        processes not replayed yet, which the index would then count before their ts."""
        with self._cond:
            found = self._indexes.get(index_id)
            if found is not None and found.config == config:
                return found
        with self._commit_lock:  # no commit is applied while the documents are read
            with self._cond:
                found = self._indexes.get(index_id)
                if found is not None and found.config == config:
                    return found
                ts = self._applied
            if snapshot.ts != ts:
                return None
            index = InvertedIndex(config, ts)
            index.load(_docs(snapshot, table_number))
            with self._cond:
                self._indexes[index_id] = index
            return index


def _docs(snapshot: Any, table_number: int) -> Any:
    rows: Any = snapshot.scan(table_number, None, b"", KEY_MAX, False)
    docs: list[dict[str, Value]] = [doc for _, doc in rows]
    return docs

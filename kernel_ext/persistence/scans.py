"""Index scans in growing batches, shared by the SQL backends (SQLite, PostgreSQL).

A scan reads `[lo, hi)` of one index in key order, one `SELECT ... LIMIT n` at a time: the
first batch is small so that `first()` reads little, later ones double so that `collect()`
makes few round trips. Each backend supplies its SQL (its placeholders) and a `fetch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Final

from kernel_ext.store.codec import decode_document
from kernel_ext.store.values import Value

__all__ = ["FIRST_BATCH", "MAX_BATCH", "Fetch", "Row", "ScanSql", "SqlReads", "scan_in_batches"]

FIRST_BATCH: Final = 16
MAX_BATCH: Final = 1024

Row = tuple[bytes, dict[str, Value]]
#: Runs one SELECT and returns all its rows.
Fetch = Callable[[str, tuple[Any, ...]], list[Any]]
#: The scan's SQL by `(by an index, descending)`; parameters: `table_number`, then
#: `index_id` for an index, then `lo`, `hi` and the batch size. Rows are `(key, body)`.
ScanSql = Mapping[tuple[bool, bool], str]


def scan_in_batches(
    fetch: Fetch,
    sql: ScanSql,
    table_number: int,
    index_id: int | None,
    *,
    lo: bytes,
    hi: bytes,
    descending: bool,
) -> Iterator[Row]:
    """Rows in `[lo, hi)` in key order (`index_id` None: the documents by id)."""
    statement = sql[index_id is not None, descending]
    prefix: tuple[int, ...] = (table_number,) if index_id is None else (table_number, index_id)
    batch = FIRST_BATCH
    while lo < hi:
        rows = fetch(statement, (*prefix, lo, hi, batch))
        for key, body in rows:
            yield bytes(key), decode_document(body)
        if len(rows) < batch:
            return
        if descending:
            hi = bytes(rows[-1][0])
        else:
            lo = bytes(rows[-1][0]) + b"\x00"
        batch = min(batch * 2, MAX_BATCH)


class SqlReads:
    """`get` and `scan` of a `Snapshot` for an SQL backend: a subclass supplies `_fetch` (one
    SELECT, all its rows) and its SQL (`GET_SQL`: the body of one document by
    `(table_number, id_key)`; `SCAN_SQL`: see `ScanSql`)."""

    __slots__ = ()
    GET_SQL: ClassVar[str]
    SCAN_SQL: ClassVar[ScanSql]

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    def get(self, table_number: int, id_key: bytes) -> dict[str, Value] | None:
        """The document with that (encoded) id in that table, or None."""
        rows = self._fetch(self.GET_SQL, (table_number, id_key))
        return decode_document(rows[0][0]) if rows else None

    def scan(
        self, table_number: int, index_id: int | None, lo: bytes, hi: bytes, descending: bool
    ) -> Iterator[Row]:
        """Rows in `[lo, hi)` in key order (`index_id` None: the documents by id)."""
        return scan_in_batches(
            self._fetch, self.SCAN_SQL, table_number, index_id, lo=lo, hi=hi, descending=descending
        )

"""Read sets: the index key intervals a function execution depended on.

One mechanism serves both optimistic concurrency control (a commit conflicts with a running
mutation if it wrote a key inside the mutation's read set) and reactivity (a commit invalidates
a subscription if it wrote a key inside the subscription's read set). Keys are the encoded
index keys of the old and the new version of each written document.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from kernel_ext.store.keys import key_successor
from kernel_ext.store.search import SEARCH_READ_MARK, search_overlaps

__all__ = [
    "ALL",
    "TABLES",
    "Interval",
    "ReadSet",
    "ScanProgress",
    "WrittenKey",
    "table_created_key",
]

#: The index name of a written key that every read set overlaps (a schema change).
ALL: Final = "*"
#: The index name of the key a commit that creates a table writes (`table_created_key`), and
#: a read of an id whose table does not exist (yet) reads.
TABLES: Final = "*tables"


def table_created_key(number: int) -> bytes:
    """The key of "table `number` exists" (see `TABLES`)."""
    return number.to_bytes(8, "big")


#: (index name "table.index", lo, hi): a half-open interval of encoded keys.
Interval = tuple[str, bytes, bytes]
#: (index name "table.index", encoded key) of a document version a commit wrote.
WrittenKey = tuple[str, bytes]


@dataclass
class ScanProgress:
    """How far an index scan has been consumed; becomes an interval when the read set is
    finalized. A scan that ran to its end covers its whole range; one stopped early covers the
    range up to (and including) the last row consumed."""

    index: str
    lo: bytes
    hi: bytes
    descending: bool
    last_key: bytes | None = None
    exhausted: bool = False

    def interval(self) -> Interval | None:
        """The interval read so far, or None if no row was consumed and the range not ended."""
        if self.exhausted:
            return (self.index, self.lo, self.hi)
        if self.last_key is None:
            return None
        if self.descending:
            return (self.index, self.last_key, self.hi)
        return (self.index, self.lo, key_successor(self.last_key))


@dataclass
class ReadSet:
    """Intervals per index, plus scans still in progress."""

    intervals: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    scans: list[ScanProgress] = field(default_factory=list)

    def add(self, index: str, lo: bytes, hi: bytes) -> None:
        """Record that every key in `[lo, hi)` of `index` was read."""
        self.intervals.setdefault(index, []).append((lo, hi))

    def add_point(self, index: str, key: bytes) -> None:
        """Record a point read (e.g. `db.get`), whether or not a document was there."""
        self.intervals.setdefault(index, []).append((key, key_successor(key)))

    def add_search(self, name: str, read: bytes) -> None:
        """Record a full-text search (`store.search.search_read`) of the search index `name`
        (`search_read_name`): overlapped only by a written version that matches it."""
        self.intervals.setdefault(name, []).append((read, b""))

    def track(self, scan: ScanProgress) -> ScanProgress:
        """Track a scan whose interval is decided when the read set is finalized."""
        self.scans.append(scan)
        return scan

    def finalize(self) -> ReadSet:
        """Turn tracked scans into intervals; returns self."""
        for scan in self.scans:
            interval = scan.interval()
            if interval is not None:
                self.add(*interval)
        self.scans.clear()
        return self

    def all_intervals(self) -> Iterable[Interval]:
        """Every recorded interval (finalize first)."""
        for index, intervals in self.intervals.items():
            for lo, hi in intervals:
                yield (index, lo, hi)

    def overlaps(self, written: Iterable[WrittenKey]) -> bool:
        """True if any written key lies inside an interval of this read set (the index `"*"`
        stands for a change every read depends on, such as a new schema)."""
        for index, key in written:
            if index == ALL:
                return True
            if index.endswith(SEARCH_READ_MARK):
                if any(search_overlaps(r, key) for r, _ in self.intervals.get(index, ())):
                    return True
                continue
            for lo, hi in self.intervals.get(index, ()):
                if lo <= key < hi:
                    return True
        return False

    def merge(self, other: ReadSet) -> None:
        """Add another (finalized) read set's intervals to this one."""
        for index, intervals in other.finalize().intervals.items():
            self.intervals.setdefault(index, []).extend(intervals)

"""A LiveTable's rows sorted by one column, kept sorted change by change.

`SortedOrder` is built once when the user sorts by a column (O(n log n)); afterwards each
changed row costs O(log n): `remove(row)` and `insert(row)` say at which display position the
row left or arrived, and `row_at(position)` maps a display position to its row in O(log n).
Sort keys follow Convex's total order (`kernel_ext.compare_values`: undefined < null < int64
< float64 < boolean < string < bytes < array < object); rows with equal values are ordered by
their `_id` (documents) or by the whole row (other rows), and a descending sort is the exact
reverse of the ascending one. Pure: no I/O.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from typing import Any, Final

from sortedcontainers import SortedList

from kernel_ext import UNDEFINED, compare_values

__all__ = ["SortedOrder", "sort_key"]

_ORDERED: Final = functools.cmp_to_key(compare_values)
_RANKS: Final = {type(None): 1, int: 2, float: 3, bool: 4, str: 5, bytes: 6, list: 7, dict: 8}


def _float_bits(x: float) -> int:
    """An integer whose order is IEEE-754 totalOrder (as the store orders floats)."""
    bits: int = struct.unpack(">Q", struct.pack(">d", x))[0]
    return (~bits & 0xFFFF_FFFF_FFFF_FFFF) if bits >> 63 else bits | (1 << 63)


def sort_key(value: Any) -> tuple[int, Any]:
    """A key whose Python order is Convex's total order over values (`compare_values`).

    Scalars get cheap native keys (strings compare by code point, which is their UTF-8 byte
    order); arrays and objects fall back to `compare_values` itself.
    """
    rank = _RANKS.get(type(value))
    if rank is None:
        return (0, 0) if value is UNDEFINED else (9, _ORDERED(value))
    if rank == 3:
        return (3, _float_bits(value))
    if rank >= 7:
        return (rank, _ORDERED(value))
    return (rank, 0 if value is None else value)


class _Same:
    """A row carried in a sort entry that never decides the order (equal keys mean
    interchangeable rows) and never compares dicts."""

    __slots__ = ("row",)

    def __init__(self, row: Any) -> None:
        self.row = row

    def __eq__(self, other: object) -> bool:
        return True

    def __lt__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


def _identity(row: Any) -> Any:
    if isinstance(row, dict):
        row_id = row.get("_id")
        if isinstance(row_id, str):
            return (0, row_id)  # documents: unique ids
    return (1, _ORDERED(row))


class SortedOrder:
    """The rows ordered by `column` (a row without it: undefined, first ascending).

    Args:
        rows: the rows, in any order.
        column: the field to sort by (for rows that are not dicts: the row itself).
        descending: largest first.
    """

    def __init__(self, rows: Iterable[Any], column: str, *, descending: bool = False) -> None:
        self.column = column
        self.descending = descending
        self._entries: SortedList = SortedList(map(self._entry, rows))

    def _entry(self, row: Any) -> tuple[Any, ...]:
        cell = row.get(self.column, UNDEFINED) if isinstance(row, dict) else row
        rank, value = sort_key(cell)
        return (rank, value, _identity(row), _Same(row))

    def __len__(self) -> int:
        return len(self._entries)

    def _position(self, index: int, size: int) -> int:
        return size - 1 - index if self.descending else index

    def row_at(self, position: int) -> Any:
        """The row shown at display `position` (0 <= position < len)."""
        entry = self._entries[self._position(position, len(self._entries))]
        return entry[3].row

    def remove(self, row: Any) -> int:
        """Take `row` out; returns the display position it had.

        Raises:
            ValueError: `row` is not in the order.
        """
        entry = self._entry(row)
        index = self._entries.index(entry)
        position = self._position(index, len(self._entries))
        del self._entries[index]
        return position

    def insert(self, row: Any) -> int:
        """Add `row`; returns the display position it takes."""
        entry = self._entry(row)
        self._entries.add(entry)
        index = self._entries.bisect_left(entry)
        return self._position(index, len(self._entries))

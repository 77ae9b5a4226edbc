"""Sorted rows with immutable snapshots: the state of a maintained view.

`SortedRows` maps unique byte keys (index keys, group keys) to rows, in key order, and answers
the position of a key. `snapshot()` returns a `RowsSnapshot`: a read-only
`collections.abc.Sequence` of the rows at that moment, which later changes never alter.

The rows live in chunks of at most `2 * CHUNK` entries; a chunk's keys and rows are tuples that
are never changed in place (copy on write): a change copies one chunk (O(CHUNK)), and a
snapshot copies only the list of chunk references (O(n / CHUNK)), never the rows. So a view of
a million rows changes one row in microseconds and hands out a new immutable value in tens of
microseconds, while every earlier value stays valid.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, overload

__all__ = ["CHUNK", "RowsSnapshot", "SortedRows"]

#: Chunks are split above twice this many entries.
CHUNK: Final = 1000


class RowsSnapshot(Sequence[Any]):
    """An immutable sequence of rows (a view's value at one timestamp).

    Supports `len`, indexing (negative too), slices (a list), iteration, `reversed`, and `==`
    with any sequence of the same rows (a `list` included). `list(snapshot)` copies it.
    `position_of(key)` finds a row by its key.
    """

    __slots__ = ("_key_chunks", "_len", "_offsets", "_reverse", "_row_chunks")

    def __init__(
        self,
        key_chunks: tuple[tuple[bytes, ...], ...],
        row_chunks: tuple[tuple[Any, ...], ...],
        *,
        reverse: bool = False,
    ) -> None:
        self._key_chunks = key_chunks
        self._row_chunks = row_chunks
        # offsets[i]: rows before chunk i (ascending order)
        self._offsets = [0, *itertools.accumulate(map(len, row_chunks))]
        self._len = self._offsets[-1]
        self._reverse = reverse

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("RowsSnapshot index out of range")
        if self._reverse:
            index = self._len - 1 - index
        chunk = bisect.bisect_right(self._offsets, index) - 1
        return self._row_chunks[chunk][index - self._offsets[chunk]]

    def __iter__(self) -> Iterator[Any]:
        if self._reverse:
            for chunk in reversed(self._row_chunks):
                yield from reversed(chunk)
        else:
            for chunk in self._row_chunks:
                yield from chunk

    def __reversed__(self) -> Iterator[Any]:
        return iter(RowsSnapshot(self._key_chunks, self._row_chunks, reverse=not self._reverse))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(other) == self._len and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so not hashable

    def __repr__(self) -> str:
        shown = ", ".join(repr(row) for row in itertools.islice(self, 3))
        more = ", ..." if self._len > 3 else ""
        return f"RowsSnapshot([{shown}{more}], {self._len} rows)"

    def position_of(self, key: bytes) -> int | None:
        """The position of the row with `key` in this sequence, None if it has none."""
        chunk = _chunk_of(self._key_chunks, key)
        if chunk is None:
            return None
        keys = self._key_chunks[chunk]
        i = bisect.bisect_left(keys, key)
        if i == len(keys) or keys[i] != key:
            return None
        position = self._offsets[chunk] + i
        return self._len - 1 - position if self._reverse else position

    def row_of(self, key: bytes) -> Any:
        """The row with `key`, None if there is none."""
        position = self.position_of(key)
        return None if position is None else self[position]

    def keys(self) -> Iterator[bytes]:
        """The keys in this sequence's order."""
        if self._reverse:
            for chunk in reversed(self._key_chunks):
                yield from reversed(chunk)
        else:
            for chunk in self._key_chunks:
                yield from chunk


def _chunk_of(key_chunks: Sequence[tuple[bytes, ...]], key: bytes) -> int | None:
    """The chunk whose key range would hold `key` (by the chunks' last keys), None if empty."""
    if not key_chunks:
        return None
    lo, hi = 0, len(key_chunks)
    while lo < hi:  # the first chunk whose last key >= key
        mid = (lo + hi) // 2
        if key_chunks[mid][-1] < key:
            lo = mid + 1
        else:
            hi = mid
    return min(lo, len(key_chunks) - 1)


class SortedRows:
    """Rows by unique key, in key order, with copy-on-write chunks (see the module docstring).

    Args:
        items: the initial `(key, row)` pairs, in ascending key order, keys unique.
    """

    __slots__ = ("_keys", "_len", "_rows")

    def __init__(self, items: Iterable[tuple[bytes, Any]] = ()) -> None:
        self._keys: list[tuple[bytes, ...]] = []
        self._rows: list[tuple[Any, ...]] = []
        pairs = list(items)
        for start in range(0, len(pairs), CHUNK):
            part = pairs[start : start + CHUNK]
            self._keys.append(tuple(k for k, _ in part))
            self._rows.append(tuple(r for _, r in part))
        self._len = len(pairs)

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: bytes) -> bool:
        return self._find(key)[1] is not None

    def _find(self, key: bytes) -> tuple[int | None, int | None]:
        """(chunk that would hold `key`, index of `key` in it or None if absent)."""
        chunk = _chunk_of(self._keys, key)
        if chunk is None:
            return None, None
        keys = self._keys[chunk]
        i = bisect.bisect_left(keys, key)
        return chunk, (i if i < len(keys) and keys[i] == key else None)

    def get(self, key: bytes) -> Any:
        """The row with `key`, None if absent."""
        chunk, i = self._find(key)
        return None if chunk is None or i is None else self._rows[chunk][i]

    def put(self, key: bytes, row: Any) -> Any:
        """Set the row of `key` (inserted if absent); returns the row it replaced, or None."""
        chunk, i = self._find(key)
        if chunk is None:
            self._keys.append((key,))
            self._rows.append((row,))
            self._len += 1
            return None
        keys, rows = self._keys[chunk], self._rows[chunk]
        if i is not None:
            old = rows[i]
            self._rows[chunk] = (*rows[:i], row, *rows[i + 1 :])
            return old
        j = bisect.bisect_left(keys, key)
        keys, rows = (*keys[:j], key, *keys[j:]), (*rows[:j], row, *rows[j:])
        if len(keys) > 2 * CHUNK:  # split: chunks stay small, so a copy stays cheap
            self._keys[chunk : chunk + 1] = [keys[:CHUNK], keys[CHUNK:]]
            self._rows[chunk : chunk + 1] = [rows[:CHUNK], rows[CHUNK:]]
        else:
            self._keys[chunk], self._rows[chunk] = keys, rows
        self._len += 1
        return None

    def pop(self, key: bytes) -> Any:
        """Remove `key`; returns its row (None if it was absent)."""
        chunk, i = self._find(key)
        if chunk is None or i is None:
            return None
        keys, rows = self._keys[chunk], self._rows[chunk]
        old = rows[i]
        if len(keys) == 1:
            del self._keys[chunk], self._rows[chunk]
        else:
            self._keys[chunk] = (*keys[:i], *keys[i + 1 :])
            self._rows[chunk] = (*rows[:i], *rows[i + 1 :])
        self._len -= 1
        return old

    def first_key(self) -> bytes | None:
        """The smallest key, None if empty."""
        return self._keys[0][0] if self._keys else None

    def last_key(self) -> bytes | None:
        """The largest key, None if empty."""
        return self._keys[-1][-1] if self._keys else None

    def snapshot(self, *, reverse: bool = False) -> RowsSnapshot:
        """The current rows as an immutable sequence (descending key order if `reverse`)."""
        return RowsSnapshot(tuple(self._keys), tuple(self._rows), reverse=reverse)

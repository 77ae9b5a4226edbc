"""The write log: the keys each recent commit wrote, in commit order.

Two readers use it. OCC validation asks which commits after a mutation's start ts wrote into
its reads; `Store.read_as_of` asks whether anything a read depends on was written after an
earlier ts. So it keeps every commit a running mutation may still be validated against, plus
recent history for reads as of an earlier ts: commits of the last `HISTORY_NS`, at most
`HISTORY_MAX_KEYS` written keys in all (bulk imports write many keys per commit).

Not thread-safe: the store uses it under its commit lock. Entries are never changed once
appended, so a copy of some of them can be checked outside that lock.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from kernel_ext.store.readset import ReadSet, WrittenKey

__all__ = ["HISTORY_MAX_KEYS", "HISTORY_NS", "Entry", "WriteLog"]

#: How far back (ns of commit time) the history reaches for reads as of an earlier ts.
HISTORY_NS: Final = 30 * 1_000_000_000
#: How many written keys the history holds at most (memory stays bounded).
HISTORY_MAX_KEYS: Final = 20_000

#: (commit ts, the keys it wrote)
Entry = tuple[int, list[WrittenKey]]


class WriteLog:
    """Recent commits' written keys (see the module docstring).

    Args:
        horizon: the ts up to which commits are not in the log (the latest commit when a
            store opens: earlier ones were never seen by this process).
    """

    def __init__(self, horizon: int) -> None:
        self._entries: deque[Entry] = deque()
        self._keys = 0
        #: Commits at or before this ts are not in the log (any more).
        self.horizon = horizon

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, ts: int, keys: list[WrittenKey]) -> None:
        """Record a commit (ts increasing)."""
        self._entries.append((ts, keys))
        self._keys += len(keys)

    def prune(self, latest_ts: int, needed_after: int) -> None:
        """Drop what neither a running mutation nor the history needs.

        Args:
            latest_ts: the latest commit's ts (the history's age is measured from it).
            needed_after: running mutations are validated against the commits after this ts
                (the oldest start ts among them; the latest ts when none runs).
        """
        entries = self._entries
        while entries:
            ts, keys = entries[0]
            if ts > needed_after:
                break  # a running mutation may still be validated against it
            if ts > latest_ts - HISTORY_NS and self._keys <= HISTORY_MAX_KEYS:
                break  # recent history, within its size
            entries.popleft()
            self._keys -= len(keys)
            self.horizon = ts

    def after(self, ts: int) -> list[Entry] | None:
        """The commits after `ts` (oldest first), or None if the log no longer reaches back
        to `ts`."""
        if ts < self.horizon:
            return None
        found: list[Entry] = []
        for entry in reversed(self._entries):
            if entry[0] <= ts:
                break
            found.append(entry)
        found.reverse()
        return found

    def tables_overlapping(self, since: int, read_set: ReadSet) -> set[str] | None:
        """The tables of the commits after `since` that wrote into `read_set` (empty: none
        did), or None if the log no longer reaches back to `since`."""
        if since < self.horizon:
            return None
        tables: set[str] = set()
        for ts, keys in reversed(self._entries):
            if ts <= since:
                break
            if read_set.overlaps(keys):
                tables |= {k[0].split(".", 1)[0] for k in keys}
        return tables

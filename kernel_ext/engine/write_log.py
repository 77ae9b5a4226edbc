"""The write log: the keys each recent commit wrote, in commit order.

Two readers use it. OCC validation asks which commits after a mutation's start ts wrote into
its reads; `Store.read_as_of` asks whether anything a read depends on was written after an
earlier ts. So it keeps every commit a running mutation may still be validated against, and,
once `keep_history()` was called (a server does: its HTTP API reads as of an earlier ts),
recent history too: commits of the last `HISTORY_NS`, at most `HISTORY_MAX_KEYS` written keys
in all (bulk imports write many keys per commit). Whatever runs, the log never holds more than
`MAX_KEYS` written keys: a mutation that has run so long that the commits it must be
validated against were dropped cannot be validated, so it re-runs (`after` returns None; the
store treats that as a conflict) instead of holding the memory of every commit since it
started. History is not free (~2 µs per mutation in
the mutation benchmark, memory that leaves the caches), so a store nobody reads that way keeps
none.

Not thread-safe: the store uses it under its commit lock. Entries are never changed once
appended, so a copy of some of them can be checked outside that lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from kernel_ext.store.readset import ReadSet, WrittenKey

__all__ = ["HISTORY_MAX_KEYS", "HISTORY_NS", "MAX_KEYS", "Entry", "WriteLog"]

#: How far back (ns of commit time) the history reaches for reads as of an earlier ts.
HISTORY_NS: Final = 30 * 1_000_000_000
#: How many written keys the history holds at most (memory stays bounded).
HISTORY_MAX_KEYS: Final = 20_000
#: How many written keys the log holds at most, also while a mutation that started long ago
#: still runs (~150 bytes each: about 30 MB).
MAX_KEYS: Final = 200_000

#: (commit ts, the keys it wrote)
Entry = tuple[int, tuple[WrittenKey, ...]]


class WriteLog:
    """Recent commits' written keys (see the module docstring).

    Args:
        horizon: the ts up to which commits are not in the log (the latest commit when a
            store opens: earlier ones were never seen by this process).
        max_keys: the hard bound on written keys held (default `MAX_KEYS`).
    """

    def __init__(self, horizon: int, *, max_keys: int | None = None) -> None:
        self._entries: deque[Entry] = deque()
        self._keys = 0
        self._history_ns = 0
        self._history_keys = 0
        self._max_keys = MAX_KEYS if max_keys is None else max_keys
        #: Commits at or before this ts are not in the log (any more).
        self.horizon = horizon

    def __len__(self) -> int:
        return len(self._entries)

    def keep_history(self) -> None:
        """From now on keep `HISTORY_NS` of commits (at most `HISTORY_MAX_KEYS` keys)."""
        self._history_ns, self._history_keys = HISTORY_NS, HISTORY_MAX_KEYS

    def append(self, ts: int, keys: Sequence[WrittenKey]) -> None:
        """Record a commit (ts increasing)."""
        # As a tuple: thousands of entries of immutable tuples are untracked by the cyclic
        # garbage collector, where lists would make every full collection walk them.
        self._entries.append((ts, tuple(keys)))
        self._keys += len(keys)

    def prune(self, latest_ts: int, needed_after: Callable[[], int]) -> None:
        """Drop what neither a running mutation nor the history needs, and beyond
        `max_keys` the oldest commits regardless (a mutation that needed them re-runs).

        Args:
            latest_ts: the latest commit's ts (the history's age is measured from it).
            needed_after: returns the ts after which running mutations may still be
                validated against commits (the oldest start ts among them; the latest ts when
                none runs); asked only if the oldest commit is beyond the history.
        """
        entries = self._entries
        needed: int | None = None
        while entries:
            ts, keys = entries[0]
            if self._keys <= self._max_keys:
                if ts > latest_ts - self._history_ns and self._keys <= self._history_keys:
                    break  # recent history, within its size
                if needed is None:
                    needed = needed_after()
                if ts > needed:
                    break  # a running mutation may still be validated against it
            entries.popleft()
            self._keys -= len(keys)
            self.horizon = ts

    def after(self, ts: int) -> list[Entry] | None:
        """The commits after `ts` (oldest first), or None if the log no longer reaches back
        to `ts`."""
        if ts < self.horizon:
            return None
        if not self._entries or self._entries[-1][0] <= ts:
            return []  # no commit since: the usual case for a mutation
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
        later = self.after(since)
        if later is None:
            return None
        return {
            key[0].split(".", 1)[0] for _, keys in later if read_set.overlaps(keys) for key in keys
        }

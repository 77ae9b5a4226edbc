"""Which live queries does a commit affect? An interval index over their read sets.

For each store index, point reads (`db.get`) sit in a dict and ranges in an interval tree, so
matching one written key costs O(log n + k) for n registered intervals and k matches: the work
grows with the subscriptions actually affected, not with all of them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from intervaltree import IntervalTree

from kernel_ext.store.keys import key_successor
from kernel_ext.store.readset import ALL, Interval, WrittenKey
from kernel_ext.store.search import (
    is_search_name,
    parse_read,
    parse_written,
    search_overlaps,
    token_prefixes,
)

__all__ = ["ALL", "SubscriptionIndex"]


class SubscriptionIndex:
    """Maps read-set intervals to the ids of the queries that read them."""

    def __init__(self) -> None:
        self._points: dict[str, dict[bytes, set[Hashable]]] = {}
        self._trees: dict[str, IntervalTree] = {}
        # Queries by range: the tree holds each distinct range once (the library hashes
        # intervals by their bounds, so many equal ranges in one tree would make lookups
        # quadratic), and this maps the range to every query that read it.
        self._ranges: dict[str, dict[tuple[bytes, bytes], set[Hashable]]] = {}
        self._registered: dict[Hashable, list[Interval]] = {}
        # Searches (`store.search`) by index name, then by exact term and by prefix: a
        # written version is checked against the searches of its tokens only.
        self._terms: dict[str, dict[str, set[tuple[Hashable, bytes]]]] = {}
        self._prefixes: dict[str, dict[str, set[tuple[Hashable, bytes]]]] = {}

    def __len__(self) -> int:
        return len(self._registered)

    def register(self, query_id: Hashable, intervals: Iterable[Interval]) -> None:
        """Replace the intervals registered for `query_id`."""
        # A query may read the same range twice; an empty range reads nothing.
        kept = [
            (i, lo, hi)
            for i, lo, hi in dict.fromkeys(intervals)
            if lo < hi or is_search_name(i)  # (a search read's "hi" is empty)
        ]
        if self._registered.get(query_id) == kept:
            return  # a re-run that read the same ranges: nothing to move
        self.remove(query_id)
        for index, lo, hi in kept:
            if is_search_name(index):
                self._search_entries(index, lo, add=(query_id, lo))
            elif hi == key_successor(lo):
                self._points.setdefault(index, {}).setdefault(lo, set()).add(query_id)
            else:
                holders = self._ranges.setdefault(index, {}).setdefault((lo, hi), set())
                if not holders:
                    self._trees.setdefault(index, IntervalTree()).addi(lo, hi)
                holders.add(query_id)
        self._registered[query_id] = kept

    def remove(self, query_id: Hashable) -> None:
        """Forget a query's intervals (no-op if it has none)."""
        for index, lo, hi in self._registered.pop(query_id, ()):
            if is_search_name(index):
                self._search_entries(index, lo, drop=(query_id, lo))
            elif hi == key_successor(lo):
                holders = self._points[index][lo]
                holders.discard(query_id)
                if not holders:
                    del self._points[index][lo]
            else:
                holders = self._ranges[index][(lo, hi)]
                holders.discard(query_id)
                if not holders:
                    del self._ranges[index][(lo, hi)]
                    self._trees[index].removei(lo, hi)

    def match(self, keys: Iterable[WrittenKey]) -> set[Hashable]:
        """The ids of queries with an interval containing any of the written keys."""
        found: set[Hashable] = set()
        for index, key in keys:
            if index == ALL:
                return set(self._registered)
            if is_search_name(index):
                found |= self._match_search(index, key)
                continue
            points = self._points.get(index)
            if points:
                found |= points.get(key, set())
            tree = self._trees.get(index)
            if tree:
                ranges = self._ranges[index]
                for interval in tree.at(key):
                    found |= ranges[(interval.begin, interval.end)]
        return found

    def _search_entries(
        self,
        index: str,
        read: bytes,
        *,
        add: tuple[Hashable, bytes] | None = None,
        drop: tuple[Hashable, bytes] | None = None,
    ) -> None:
        """Add or drop a search read under each of its exact terms and its prefix."""
        _, terms, prefix = parse_read(read)
        places = [(self._terms, t) for t in terms if t != prefix]
        if prefix is not None:
            places.append((self._prefixes, prefix))
        for table, term in places:
            by_term = table.setdefault(index, {})
            holders = by_term.setdefault(term, set())
            if add is not None:
                holders.add(add)
            if drop is not None:
                holders.discard(drop)
                if not holders:
                    del by_term[term]

    def _match_search(self, index: str, key: bytes) -> set[Hashable]:
        """The queries whose search of `index` a written version (`key`) matches."""
        _, tokens = parse_written(key)
        terms = self._terms.get(index, {})
        prefixes = self._prefixes.get(index, {})
        candidates: set[tuple[Hashable, bytes]] = set()
        for token in tokens:
            candidates |= terms.get(token, set())
            if prefixes:
                for p in token_prefixes(token):
                    candidates |= prefixes.get(p, set())
        return {query_id for query_id, read in candidates if search_overlaps(read, key)}

"""Maintained views: a returned query or aggregate, kept up to date from document changes.

A query function may return its query (or an aggregate of it) instead of consuming it
(`LazyResult`). For a live subscription the engine then keeps a *view* instead of re-running
the function: `open_view()` builds it from one scan, and each later commit's changed documents
(old and new version) go through `apply(old, new)`: each is tested against the index range and
the filter and inserted into / removed from the view's sorted rows, so a change costs
O(changed documents x log n), not O(result).

- `QueryView`: the documents of `with_index` range + `filter`, in `order`, maybe `limit(k)`.
  A limited view keeps the first k documents; when deletes make it short, `refill(source)`
  scans on from its last key (the caller hands it a transaction at the view's timestamp).
- `AggregateView`: `group_by(...).agg(...)` / `agg(...)`: the accumulators of each group
  (`GroupedAggregate`), and the group rows in group order.

`take_diff(ts, base_ts)` returns what changed since the last call (`ResultDiff`: positions of
removed, inserted and updated rows), None when nothing did; `value()` is the view's current
value, an immutable `RowsSnapshot` (an ungrouped aggregate: its one dict). The value is exactly
what consuming the query at the same timestamp returns (property-tested against re-runs).
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel_ext.store.expressions import Expression, as_boolean
from kernel_ext.store.keys import key_successor
from kernel_ext.store.ranges import KeyRange
from kernel_ext.store.readset import Interval, ReadSet
from kernel_ext.store.rows import RowsSnapshot, SortedRows
from kernel_ext.store.values import Value, same_value

if TYPE_CHECKING:
    from kernel_ext.store.aggregates import AggregateSpec, GroupedAggregate
    from kernel_ext.store.catalog import IndexInfo
    from kernel_ext.store.query import QuerySource

__all__ = [
    "AggregateView",
    "MaintainedView",
    "QueryView",
    "ResultDiff",
    "ViewPlan",
    "ViewSeed",
    "diff_rebuilt",
    "diff_values",
    "rows_of",
]

Row = tuple[bytes, dict[str, Value]]


@dataclass(frozen=True)
class ResultDiff:
    """How a live result changed from the value at `base_ts` to the value at `ts`.

    Apply it to a list holding the previous value with `apply_to`: delete the `removed`
    positions (of the previous value), then insert each `(position, row)` of `inserted` in
    ascending order (positions in the new value), then set each `(position, row)` of
    `updated` (positions in the new value). `base_ts` None: the diff replaces everything (it
    removes every previous row and inserts every new one).
    """

    ts: int
    base_ts: int | None
    removed: tuple[int, ...] = ()
    inserted: tuple[tuple[int, Any], ...] = ()
    updated: tuple[tuple[int, Any], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.removed or self.inserted or self.updated)

    def apply_to(self, rows: list[Any]) -> None:
        """Change `rows` (the previous value, as a list) into the new value, in place."""
        for position in reversed(self.removed):
            del rows[position]
        for position, row in self.inserted:
            rows.insert(position, row)
        for position, row in self.updated:
            rows[position] = row

    @classmethod
    def replacing(cls, previous_rows: int, value: Value, ts: int) -> ResultDiff:
        """The diff that replaces `previous_rows` rows by every row of `value` (`rows_of`)."""
        return cls(
            ts,
            None,
            tuple(range(previous_rows)),
            tuple(enumerate(rows_of(value))),
        )


def rows_of(value: Any) -> Sequence[Any]:
    """The rows a diff counts in a value: a list or other sequence as it is, None as no row,
    anything else (one dict, a number) as one row."""
    if value is None:
        return ()
    if isinstance(value, list | tuple | RowsSnapshot):
        return value
    return (value,)


def diff_values(
    previous: RowsSnapshot, current: RowsSnapshot, touched: Iterable[bytes], ts: int, base_ts: int
) -> ResultDiff:
    """The diff from `previous` to `current` given the keys that may have changed."""
    removed: list[int] = []
    inserted: list[tuple[int, Any]] = []
    updated: list[tuple[int, Any]] = []
    for key in touched:
        before = previous.position_of(key)
        after = current.position_of(key)
        if after is None:
            if before is not None:
                removed.append(before)
        elif before is None:
            inserted.append((after, current[after]))
        else:
            old, new = previous[before], current[after]
            # (Convex equality: Python's `==` equates 0 and 0.0, True and 1.)
            if old is not new and not same_value(old, new):
                updated.append((after, new))
    removed.sort()
    inserted.sort(key=lambda change: change[0])
    updated.sort(key=lambda change: change[0])
    return ResultDiff(ts, base_ts, tuple(removed), tuple(inserted), tuple(updated))


def diff_rebuilt(
    previous: RowsSnapshot, current: RowsSnapshot, ts: int, base_ts: int
) -> ResultDiff | None:
    """The diff from `previous` to `current`, two values of a view built twice (O(n)); None
    when the rows both hold are not in the same relative order (the order itself changed,
    say from "asc" to "desc"), which positions of changed rows cannot express: the whole
    value replaces the previous one then."""
    before, after = list(previous.keys()), list(current.keys())
    in_after, in_before = set(after), set(before)
    if [k for k in before if k in in_after] != [k for k in after if k in in_before]:
        return None
    return diff_values(
        previous, current, dict.fromkeys(itertools.chain(before, after)), ts, base_ts
    )


@dataclass(frozen=True)
class ViewPlan:
    """What a view reads: one index range of one table, then filters, in an order."""

    table: str
    index: IndexInfo
    key_range: KeyRange
    filters: tuple[Expression, ...]
    descending: bool

    def matches(self, doc: dict[str, Value] | None) -> bytes | None:
        """The document's index key if it is in the range and passes the filters, else None."""
        if doc is None:
            return None
        key = self.index.key_of(doc)
        if not self.key_range.lo <= key < self.key_range.hi:
            return None
        for expression in self.filters:
            if not as_boolean(expression.evaluate(doc)):
                return None
        return key

    def interval(self) -> Interval:
        """The index interval the view depends on."""
        return (f"{self.table}.{self.index.name}", self.key_range.lo, self.key_range.hi)


@dataclass(frozen=True)
class ViewSeed:
    """What a live query's run returns when its function returned a viewable lazy result: the
    view, and the reads the function made before returning it (a commit into those changes
    what the function returns: it runs again)."""

    view: MaintainedView
    prelude: ReadSet


class MaintainedView(abc.ABC):
    """A live value kept up to date from document changes (see the module docstring)."""

    def __init__(self, plan: ViewPlan, value: RowsSnapshot) -> None:
        self.plan = plan
        self._value = value  # the value handed out last
        self._touched: dict[bytes, None] = {}  # keys that may differ from `_value`

    @property
    def table(self) -> str:
        """The table whose documents the view reads."""
        return self.plan.table

    @property
    def needs_refill(self) -> bool:
        """True if `refill(source)` must run before `take_diff` (a short top-k)."""
        return False

    def refill(self, source: QuerySource) -> None:
        """Read what the view lacks from `source` (at the timestamp of the last change);
        only views that can run short (`needs_refill`) override it."""
        return

    @abc.abstractmethod
    def apply(self, old: dict[str, Value] | None, new: dict[str, Value] | None) -> None:
        """One document of the view's table changed from `old` to `new` (None: absent)."""

    @abc.abstractmethod
    def _current(self) -> RowsSnapshot:
        """The rows now."""

    def take_diff(self, ts: int, base_ts: int) -> ResultDiff | None:
        """The change since the last call (or since the view was built), None if nothing
        changed; the view's value is then the value at `ts`."""
        if not self._touched:
            return None
        current = self._current()
        diff = diff_values(self._value, current, self._touched, ts, base_ts)
        self._touched.clear()
        self._value = current
        return diff if diff else None

    def value(self) -> Value:
        """The current value: an immutable sequence of rows."""
        return self._value

    def rows(self) -> RowsSnapshot:
        """The current rows (the value of a grouped view; one row for an ungrouped one)."""
        return self._value

    def interval(self) -> Interval:
        """The index interval whose writes the view must see."""
        return self.plan.interval()


class QueryView(MaintainedView):
    """The documents of a returned query, maybe the first `limit` of them."""

    def __init__(self, plan: ViewPlan, rows: Iterable[Row], limit: int | None) -> None:
        ordered = list(rows)
        if plan.descending:
            ordered.reverse()
        self._rows = SortedRows(ordered)
        self._limit = limit
        # Every matching document of the range is in the view (always, without a limit).
        self._complete = limit is None or len(ordered) < limit
        super().__init__(plan, self._rows.snapshot(reverse=plan.descending))

    def _current(self) -> RowsSnapshot:
        return self._rows.snapshot(reverse=self.plan.descending)

    def apply(self, old: dict[str, Value] | None, new: dict[str, Value] | None) -> None:
        plan = self.plan
        old_key, new_key = plan.matches(old), plan.matches(new)
        held = old_key is not None and self._rows.pop(old_key) is not None
        if held:
            self._touched[old_key] = None  # type: ignore[index]
        # A document that stays at its key stays in the view (also the last of a top-k).
        if new_key is not None and ((held and new_key == old_key) or self._admits(new_key)):
            self._rows.put(new_key, new)
            self._touched[new_key] = None
            self._trim()

    def _admits(self, key: bytes) -> bool:
        """A top-k view holds only keys before its last one (in scan order): a later key
        may come after documents that a refill has still to find."""
        if self._complete:
            return True
        edge = self._rows.first_key() if self.plan.descending else self._rows.last_key()
        if edge is None:
            return False
        return key > edge if self.plan.descending else key < edge

    def _trim(self) -> None:
        while self._limit is not None and len(self._rows) > self._limit:
            edge = self._rows.first_key() if self.plan.descending else self._rows.last_key()
            assert edge is not None
            self._rows.pop(edge)
            self._touched[edge] = None
            self._complete = False

    @property
    def needs_refill(self) -> bool:
        return self._limit is not None and not self._complete and len(self._rows) < self._limit

    def refill(self, source: QuerySource) -> None:
        plan = self.plan
        info = source.index_info(plan.table, plan.index.name)
        if info is None:
            self._complete = True  # the table is gone: nothing more to find
            return
        lo, hi = plan.key_range.lo, plan.key_range.hi
        if plan.descending:
            first = self._rows.first_key()
            key_range = KeyRange(lo, hi if first is None else first)
        else:
            last = self._rows.last_key()
            key_range = KeyRange(lo if last is None else key_successor(last), hi)
        assert self._limit is not None
        wanted = self._limit - len(self._rows)
        for key, doc in _matching(plan, source.scan(plan.table, info, key_range, plan.descending)):
            self._rows.put(key, doc)
            self._touched[key] = None
            wanted -= 1
            if wanted == 0:
                return
        self._complete = True


def _matching(plan: ViewPlan, rows: Iterator[Row]) -> Iterator[Row]:
    for key, doc in rows:
        if all(as_boolean(f.evaluate(doc)) for f in plan.filters):
            yield key, doc


class AggregateView(MaintainedView):
    """The groups of a returned aggregate (one dict when ungrouped)."""

    def __init__(self, plan: ViewPlan, spec: AggregateSpec, docs: Iterable[dict[str, Value]]):
        from kernel_ext.store.aggregates import GroupedAggregate

        self._state: GroupedAggregate = GroupedAggregate(spec)
        self._state.extend(docs)
        self._grouped = bool(spec.group_fields)
        self._rows = SortedRows(
            (key, self._state.row_of(key)) for key in sorted(self._state.groups)
        )
        if not self._grouped and not len(self._rows):
            self._rows.put(b"", self._state.empty_row())  # the outputs of no documents
        super().__init__(plan, self._rows.snapshot())

    def _current(self) -> RowsSnapshot:
        return self._rows.snapshot()

    def apply(self, old: dict[str, Value] | None, new: dict[str, Value] | None) -> None:
        plan = self.plan
        old_in = old if plan.matches(old) is not None else None
        new_in = new if plan.matches(new) is not None else None
        if old_in is None and new_in is None:
            return
        self._state.apply(old_in, new_in)
        for doc in (old_in, new_in):
            if doc is not None:
                self._touched[self._state.group_key(doc)] = None

    def take_diff(self, ts: int, base_ts: int) -> ResultDiff | None:
        for key in self._touched:  # the rows of the changed groups, made once per round
            row = self._state.row_of(key)
            if row is not None:
                self._rows.put(key, row)
            elif self._grouped:
                self._rows.pop(key)  # its last document went away
            else:
                self._rows.put(key, self._state.empty_row())
        return super().take_diff(ts, base_ts)

    def value(self) -> Value:
        if self._grouped:
            return self._value
        return self._value[0]

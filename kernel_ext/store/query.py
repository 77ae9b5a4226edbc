"""The query builder: `db.query(table).with_index(...).order(...).filter(...).collect()`.

Builders are immutable: every method returns a new query, so a base query can be reused.
Nothing runs until a consumer (`collect`, `take`, `first`, `unique`, `paginate`, iteration).
Rows stream from the source in index order; filters run after the range, so rows they drop
still count as read (for reactivity and conflicts, as in Convex).

Ints and floats in comparisons. An int64 sorts below every float64, so comparing a float field
with an int (`q.gt("weight", 4000)`) would match every document or none. When the schema says
the field holds only float64 (`v.number()`) and enforces it, the int bound (within +-2**53) is
compared as the float it stands for: no document can hold an int there, so the int can only
mean that float (Python has no separate literal for it, and the official Python client sends an
int argument as a float for the same reason). Convex itself never converts in queries; here the
answer is the same as Convex's for the float the user meant. Where the int cannot be read so
(schema validation off, so stored values may be ints; an int beyond +-2**53; a float compared
with a `v.int64()` field), the query runs as written and warns (`StoreWarning`, once per
function and field), naming the field and the table.
"""

from __future__ import annotations

import abc
import base64
import binascii
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from kernel_ext.errors import QueryError
from kernel_ext.store.catalog import BY_CREATION_TIME, IndexInfo
from kernel_ext.store.expressions import (
    Expression,
    FilterBuilder,
    as_boolean,
    map_field_literals,
)
from kernel_ext.store.keys import key_successor
from kernel_ext.store.notices import warn_once
from kernel_ext.store.ranges import IndexRangeBuilder, KeyRange, RangeOp, compile_range
from kernel_ext.store.validators import NumberKind
from kernel_ext.store.values import Value

if TYPE_CHECKING:
    from kernel_ext.store.aggregates import Aggregate, GroupBy
    from kernel_ext.store.search import SearchFilterBuilder
    from kernel_ext.store.search_query import SearchQuery
    from kernel_ext.store.vector_query import VectorQuery
    from kernel_ext.store.views import MaintainedView, ViewPlan

__all__ = [
    "DocumentQuery",
    "MAX_PAGE_SIZE",
    "LazyResult",
    "Query",
    "QuerySource",
    "decode_cursor",
    "encode_cursor",
]

MAX_PAGE_SIZE: Final = 32000
_END_CURSOR: Final = "_end"
_FLOAT_SAFE_INT: Final = 2**53

Row = tuple[bytes, dict[str, Value]]


class QuerySource(Protocol):
    """What a query needs from the transaction that runs it."""

    def index_info(self, table: str, index: str) -> IndexInfo | None:
        """The index, None if the table does not exist; raises `QueryError` for an unknown
        index of an existing table."""

    def scan(
        self, table: str, index: IndexInfo, key_range: KeyRange, descending: bool
    ) -> Iterator[Row]:
        """Stream `(key, document)` rows of the range in index order, recording reads."""

    def search(
        self, table: str, index: str, build: Callable[[SearchFilterBuilder], Any]
    ) -> Iterator[tuple[float, dict[str, Value]]]:
        """`(score, document)` of a full-text search of search index `index` (the search
        built by `build(q)`), best first, recording the read (`store.search`); documents are
        read as they are iterated, at most `MAX_RESULTS` + 1 (more is an error)."""

    def begin_paginate(self) -> None:
        """Called once per `paginate`; raises if the execution already paginated."""

    def number_kind(self, table: str, path: str) -> tuple[NumberKind, bool] | None:
        """The numeric type the schema gives field `path` of `table` and whether writes are
        validated (so stored values have it), or None if the schema says nothing."""


def encode_cursor(key: bytes) -> str:
    """An opaque cursor for a key position."""
    return base64.urlsafe_b64encode(key).decode("ascii")


def decode_cursor(cursor: str) -> bytes | None:
    """The key position of a cursor, or None for the end cursor; raises `QueryError` if the
    string is not a cursor."""
    if cursor == _END_CURSOR:
        return None
    try:
        return base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise QueryError(f"Invalid pagination cursor {cursor!r}") from exc


class LazyResult(abc.ABC):
    """A lazy result a query function may return; callers receive `consume()`, which is
    `collect()`.

    A function may return a query (or an aggregate) instead of consuming it: whoever runs the
    function (embedded or remote client, official clients, magics, `returns=` validation)
    gets `consume()` of it, computed inside the same transaction so that its reads are part
    of the function's read set.
    """

    __slots__ = ()

    @abc.abstractmethod
    def collect(self) -> Any:
        """The value this lazy result stands for, computed in its transaction."""

    def consume(self) -> Value:
        """`collect()`: the value a function returning this lazy result gives its callers."""
        value: Value = self.collect()
        return value

    def open_view(self) -> MaintainedView | None:
        """A maintained view of this result, built by one scan in its transaction (its value
        is `consume()`'s), or None if this result cannot be maintained incrementally (then a
        live subscription re-runs the function on each relevant commit)."""
        return None


class DocumentQuery(LazyResult):
    """A lazy result that yields documents, in its own order: the consumers every kind of
    query shares (`collect`, `take`, `first`, `unique`), built on its `__iter__`."""

    __slots__ = ()
    table: str

    @abc.abstractmethod
    def __iter__(self) -> Iterator[dict[str, Value]]:
        """The matching documents, in order; stopping early reads (and depends on) less."""

    def collect(self) -> list[dict[str, Value]]:
        """All matching documents."""
        return list(self)

    def take(self, n: int) -> list[dict[str, Value]]:
        """The first `n` matching documents."""
        if type(n) is not int or n < 0:
            raise QueryError(f"take(n): n must be a non-negative integer, got {n!r}")
        return list(itertools.islice(self, n))

    def first(self) -> dict[str, Value] | None:
        """The first matching document, or None."""
        docs = self.take(1)
        return docs[0] if docs else None

    def unique(self) -> dict[str, Value] | None:
        """The single matching document, None if there is none; raises `QueryError` if there
        are several."""
        docs = self.take(2)
        if len(docs) > 1:
            ids = ", ".join(str(d["_id"]) for d in docs)
            raise QueryError(
                "unique() query returned more than one result from table "
                f"{self.table}:\n [{ids}, ...]"
            )
        return docs[0] if docs else None


@dataclass(frozen=True)
class Query(DocumentQuery):
    """A query over one table. Build it with `ctx.db.query(table)`."""

    _source: QuerySource
    table: str
    index: str = BY_CREATION_TIME
    range_ops: tuple[RangeOp, ...] = ()
    descending: bool | None = None
    filters: tuple[Expression, ...] = ()
    _indexed: bool = False
    _limit: int | None = None  # `limit(n)`: at most this many matching documents

    # -- building ------------------------------------------------------------------------

    def with_index(
        self, name: str, range_fn: Callable[[IndexRangeBuilder], Any] | None = None
    ) -> Query:
        """Read the table through index `name`, optionally limited to a range built by
        `range_fn(q)` with `q.eq(...)`, then `q.gt/gte(...)`, then `q.lt/lte(...)`."""
        if self._limit is not None:
            self._after_limit("with_index")
        if self._indexed or self.descending is not None or self.filters:
            raise QueryError(".with_index() must come right after db.query(table), once")
        ops: tuple[RangeOp, ...] = ()
        if range_fn is not None:
            builder = IndexRangeBuilder()
            result = range_fn(builder)
            if result is not builder:
                raise QueryError(
                    "The with_index callback must return the range builder, e.g. "
                    "lambda q: q.eq('field', value)"
                )
            ops = tuple(builder.ops)
            for i, op in enumerate(ops):  # numbers must agree with the field's type
                value = self._agreeing(op.field, op.value, name)
                if value is not op.value:
                    ops = (*ops[:i], RangeOp(op.op, op.field, value), *ops[i + 1 :])
        # Positional construction: `dataclasses.replace` costs three times as much, on the
        # path of every indexed query.
        return Query(self._source, self.table, name, ops, self.descending, self.filters, True)

    def with_search_index(
        self, name: str, search_fn: Callable[[SearchFilterBuilder], Any]
    ) -> SearchQuery:
        """Search the table's search index `name`: `search_fn(q)` returns
        `q.search(field, text)` with optional `.eq(filter_field, value)` filters. Results come
        in relevance order (`store.search_query`)."""
        from kernel_ext.store.search_query import SearchQuery  # it imports this module

        if self._indexed or self.descending is not None or self.filters or self._limit:
            raise QueryError(".with_search_index() must come right after db.query(table), once")
        return SearchQuery(self._source, self.table, name, search_fn)

    def order(self, order: Literal["asc", "desc"]) -> Query:
        """Set the order of the index scan (default "asc")."""
        if self._limit is not None:
            self._after_limit("order")
        if self.descending is not None:
            raise QueryError("Queries may only specify order at most once")
        if order not in ("asc", "desc"):
            raise QueryError(f'order must be "asc" or "desc", got {order!r}')
        return Query(
            self._source,
            self.table,
            self.index,
            self.range_ops,
            order == "desc",
            self.filters,
            self._indexed,
        )

    def filter(self, predicate: Callable[[FilterBuilder], Expression]) -> Query:
        """Keep only documents for which the expression built by `predicate(q)` is true."""
        if self._limit is not None:
            self._after_limit("filter")
        expression = predicate(FilterBuilder())
        if not isinstance(expression, Expression):
            raise QueryError(
                "The filter callback must return an expression built with q, e.g. "
                "lambda q: q.eq(q.field('done'), False)"
            )
        expression = map_field_literals(
            expression, lambda path, value: self._agreeing(path, value, None)
        )
        return Query(
            self._source,
            self.table,
            self.index,
            self.range_ops,
            self.descending,
            (*self.filters, expression),
            self._indexed,
        )

    def limit(self, n: int) -> Query:
        """At most the first `n` matching documents (in the query's order), lazily: nothing
        runs until the query is consumed, and then it reads exactly what `.take(n)` reads.
        Consumed, it gives the list `.take(n)` gives; `take(k)` of it the first `min(n, k)`;
        `first()` and `unique()` look at the limited documents only. A query function may
        return it unconsumed (see `LazyResult`). It comes last: `limit` twice keeps the
        smaller `n`; `filter`, `order` and `with_index` after it, and `paginate()` of it, are
        refused (`QueryError`).
        """
        if type(n) is not int or n < 0:  # bool is refused too: `limit(True)` is a mistake
            raise QueryError(
                f"limit(n): n must be a non-negative integer such as .limit(10), got {n!r}"
            )
        if self._limit is not None:
            n = min(n, self._limit)
        return Query(
            self._source,
            self.table,
            self.index,
            self.range_ops,
            self.descending,
            self.filters,
            self._indexed,
            n,
        )

    def with_vector_index(self, name: str, opts: Mapping[str, Any]) -> VectorQuery:
        """The documents most similar to `opts["vector"]` in vector index `name`, best
        first (`opts`: `vector`, `limit` 1..256 default 10, `filter`); see
        `kernel_ext.store.vector_query`. It comes right after `db.query(table)`."""
        from kernel_ext.store.vector_query import VectorQuery  # it imports this module

        if self._indexed or self.descending is not None or self.filters or self._limit is not None:
            raise QueryError(".with_vector_index() must come right after db.query(table)")
        return VectorQuery(self._source, self.table, name, opts)  # type: ignore[arg-type]

    def group_by(self, *fields: str) -> GroupBy:
        """Group the matching documents by `fields` (dotted paths allowed); call
        `.agg(name=(field, func), ...)` on the result (see `kernel_ext.store.aggregates`)."""
        from kernel_ext.store.aggregates import GroupBy  # aggregates imports this module

        return GroupBy(self, fields)

    def agg(self, **outputs: Any) -> Aggregate:
        """Aggregate all matching documents into ONE dict: `name=(field, func)` with func one
        of count, sum, mean, min, max (see `kernel_ext.store.aggregates`)."""
        from kernel_ext.store.aggregates import Aggregate, AggregateSpec

        return Aggregate(self, AggregateSpec.build((), outputs))

    def _after_limit(self, method: str) -> None:
        raise QueryError(
            f".{method}() cannot follow .limit(n): build the query first "
            "(with_index, order, filter), then call .limit(n) last"
        )

    def _agreeing(self, path: str, value: Value, index: str | None) -> Value:
        """`value` as compared with field `path` in a range of `index` (None: in a filter),
        see the module docstring: an int made a float for a float64-only field, else as it
        is, with a warning if the types differ."""
        t = type(value)
        if t is not int and t is not float:
            return value
        found = self._source.number_kind(self.table, path)
        if found is None:
            return value
        kind, enforced = found
        if kind == "float64" and t is int:
            if enforced and -_FLOAT_SAFE_INT <= value <= _FLOAT_SAFE_INT:
                return float(value)
            why = (
                "schema validation is off, so stored values may be ints or floats"
                if enforced is False
                else "it is beyond +-2**53, where a float cannot hold every int"
            )
            self._warn_mixed(path, index, f"v.number(), float64) with the int {value}", why)
        elif kind == "int64" and t is float:
            self._warn_mixed(path, index, f"v.int64()) with the float {value!r}", "")
        return value

    def _warn_mixed(self, path: str, index: str | None, what: str, why: str) -> None:
        where = "filter" if index is None else f"with_index({index!r})"
        warn_once(
            ("mixed-number", self.table, path),
            f"{where} on table {self.table!r} compares field {path!r} (declared {what}"
            f"{f' ({why})' if why else ''}: every int64 sorts below every float64, so this "
            "comparison matches all documents or none. Compare with a value of the field's "
            "type.",
        )

    # -- running -------------------------------------------------------------------------

    def view_plan(self) -> ViewPlan | None:
        """What a view of this query reads (None: the table does not exist)."""
        from kernel_ext.store.views import ViewPlan  # views imports this module

        plan = self._plan()
        if plan is None:
            return None
        info, key_range = plan
        return ViewPlan(self.table, info, key_range, self.filters, bool(self.descending))

    def open_view(self) -> MaintainedView | None:
        """A `QueryView` of the matching documents (see `LazyResult.open_view`)."""
        from kernel_ext.store.views import QueryView

        plan = self.view_plan()
        if plan is None:
            return None
        return QueryView(plan, self._rows(), self._limit)

    def _plan(self) -> tuple[IndexInfo, KeyRange] | None:
        info = self._source.index_info(self.table, self.index)
        if info is None:
            return None
        key_range = compile_range(f"{self.table}.{self.index}", info.key_fields, self.range_ops)
        return info, key_range

    def _rows(self) -> Iterator[Row]:
        """The matching rows, the first `limit` of them with a limit. `islice` stops right
        after the last one without pulling the next row from the scan, so the read set ends
        at that row (as for `take`), and a limit of 0 never starts the scan."""
        rows = self._matching_rows()
        return rows if self._limit is None else itertools.islice(rows, self._limit)

    def _matching_rows(self) -> Iterator[Row]:
        plan = self._plan()
        if plan is None:
            return
        info, key_range = plan
        rows = self._source.scan(self.table, info, key_range, bool(self.descending))
        filters = self.filters
        if not filters:
            yield from rows
            return
        for key, doc in rows:
            if all(as_boolean(f.evaluate(doc)) for f in filters):
                yield key, doc

    def __iter__(self) -> Iterator[dict[str, Value]]:
        """Stream matching documents; stopping early reads (and depends on) less."""
        for _, doc in self._rows():
            yield doc

    def paginate(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        """One page: `{"page", "isDone", "continueCursor"}`.

        `opts` has `numItems` and `cursor` (None for the first page); optional `endCursor`
        (return exactly the documents up to it, ignoring numItems) and `maximumRowsRead`.
        Cursors are key positions: a page boundary does not move when earlier documents are
        deleted. When a page fills exactly at the end of the range, `isDone` is False and the
        next page is empty with `isDone` True (as the Convex backend does).
        """
        if self._limit is not None:
            raise QueryError(
                "paginate() cannot be used on a query with .limit(n): paginate the query "
                "without limit (numItems sets the page size), or consume it with .collect()"
            )
        num_items, cursor, end_cursor, max_rows = _pagination_options(opts)
        self._source.begin_paginate()
        start = None if cursor is None else decode_cursor(cursor)
        if cursor is not None and start is None:
            return {"page": [], "isDone": True, "continueCursor": _END_CURSOR}
        end = None if end_cursor is None else decode_cursor(end_cursor)
        desc = bool(self.descending)

        def narrow(key_range: KeyRange) -> KeyRange:
            lo, hi = key_range.lo, key_range.hi
            if start is not None:
                lo, hi = (lo, min(hi, start)) if desc else (max(lo, key_successor(start)), hi)
            if end is not None:
                lo, hi = (max(lo, end), hi) if desc else (lo, min(hi, key_successor(end)))
            return KeyRange(lo, max(lo, hi))

        return self._fill_page(narrow, num_items, end_cursor, max_rows)

    def _fill_page(
        self,
        narrow: Callable[[KeyRange], KeyRange],
        num_items: int,
        end_cursor: str | None,
        max_rows: int | None,
    ) -> dict[str, Any]:
        page: list[dict[str, Value]] = []
        rows_read = 0
        plan = self._plan()
        if plan is not None:
            info, key_range = plan
            scan = self._source.scan(self.table, info, narrow(key_range), bool(self.descending))
            for key, doc in scan:
                rows_read += 1
                if all(as_boolean(f.evaluate(doc)) for f in self.filters):
                    page.append(doc)
                if end_cursor is None and len(page) >= num_items:
                    return _page(page, False, encode_cursor(key))
                if max_rows is not None and rows_read >= max_rows and end_cursor is None:
                    result = _page(page, False, encode_cursor(key))
                    result["pageStatus"] = "SplitRequired"
                    return result
        if end_cursor is not None:
            return _page(page, end_cursor == _END_CURSOR, end_cursor)
        return _page(page, True, _END_CURSOR)


def _page(page: list[dict[str, Value]], done: bool, cursor: str) -> dict[str, Any]:
    return {"page": page, "isDone": done, "continueCursor": cursor}


def _pagination_options(opts: Mapping[str, Any]) -> tuple[int, str | None, str | None, int | None]:
    if not isinstance(opts, Mapping):
        raise QueryError('paginate() takes {"numItems": n, "cursor": None | str}')
    num_items = _positive_int(opts.get("numItems"), "numItems")
    if num_items > MAX_PAGE_SIZE:
        raise QueryError(f"Requested too many items: {num_items} (at most {MAX_PAGE_SIZE})")
    cursor = opts.get("cursor")
    end_cursor = opts.get("endCursor")
    for name, c in (("cursor", cursor), ("endCursor", end_cursor)):
        if c is not None and not isinstance(c, str):
            raise QueryError(f"paginate(): {name} must be a string or None, got {c!r}")
    max_rows = opts.get("maximumRowsRead")
    return (
        num_items,
        cursor,
        end_cursor,
        None if max_rows is None else _positive_int(max_rows, "maximumRowsRead"),
    )


def _positive_int(value: Any, name: str) -> int:
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise QueryError(f"paginate(): {name} must be a positive integer, got {value!r}")
    if value < 1:
        raise QueryError(f"paginate(): Must request at least 1 document while paginating ({name})")
    return value

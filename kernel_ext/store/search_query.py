"""Search queries: `db.query(t).with_search_index(name, lambda q: q.search(f, text)...)`.

Consumed like any query (`take`, `first`, `unique`, `collect`, `paginate`, iteration), always
in relevance order (`store.search`); `.filter(...)` after it keeps the documents its
expression accepts (they are checked one by one, after the index's own filters, as in Convex).
At most `MAX_RESULTS` (1,024) documents of the index may be scanned: reading past them is an
error (`take(n)` of fewer is fine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernel_ext.errors import QueryError
from kernel_ext.store.expressions import Expression, FilterBuilder, as_boolean
from kernel_ext.store.keys import encode_key, encode_value
from kernel_ext.store.query import DocumentQuery, decode_cursor, encode_cursor
from kernel_ext.store.search import MAX_RESULTS, SearchFilterBuilder
from kernel_ext.store.values import Value

if TYPE_CHECKING:
    from kernel_ext.store.query import QuerySource

__all__ = ["SearchQuery"]

_END_CURSOR = "_end"
#: Ints a float64 holds exactly (beyond them an int is never made a float).
_FLOAT_SAFE_INT = 2**53


@dataclass(frozen=True)
class SearchQuery(DocumentQuery):
    """A full-text search over one table's search index (build it with
    `Query.with_search_index`)."""

    _source: QuerySource
    table: str
    index: str
    build: Callable[[SearchFilterBuilder], Any]
    filters: tuple[Expression, ...] = ()

    def filter(self, predicate: Callable[[FilterBuilder], Expression]) -> SearchQuery:
        """Keep only the documents for which the expression built by `predicate(q)` is true
        (checked after the search, in relevance order)."""
        expression = predicate(FilterBuilder())
        if not isinstance(expression, Expression):
            raise QueryError(
                "The filter callback must return an expression built with q, e.g. "
                "lambda q: q.eq(q.field('done'), False)"
            )
        return SearchQuery(
            self._source, self.table, self.index, self.build, (*self.filters, expression)
        )

    def order(self, order: str) -> SearchQuery:
        """Refused: search results are always in relevance order."""
        raise QueryError(
            "Search queries must always be in relevance order. Can not set order manually."
        )

    def with_index(self, *_: Any, **__: Any) -> SearchQuery:
        """Refused: a query reads one index."""
        raise QueryError(
            ".with_index() cannot follow .with_search_index(): a query reads one index"
        )

    def _ranked(self) -> Iterator[tuple[bytes, dict[str, Value]]]:
        """`(position, document)` of the matching documents, best first; raises past
        `MAX_RESULTS` scanned."""
        results = self._source.search(self.table, self.index, self._build)
        for scanned, (score, doc) in enumerate(results):
            if scanned >= MAX_RESULTS:
                raise QueryError(
                    f"Search query scanned too many documents (more than {MAX_RESULTS}) in "
                    f"{self.table}.{self.index}: use .take(n) with a smaller n, or paginate"
                )
            if all(as_boolean(f.evaluate(doc)) for f in self.filters):
                yield encode_key((-score, -doc["_creationTime"], doc["_id"])), doc

    def _build(self, q: SearchFilterBuilder) -> Any:
        """The user's builder, then each `eq` value as index ranges compare it: an int with a
        float64 field that validated writes keep floats (`v.number()`) is that float."""
        built = self.build(q)
        if built is q:
            q.eqs = [(path, self._agreeing(path, value)) for path, value in q.eqs]
        return built

    def _agreeing(self, path: str, value: Value) -> Value:
        if type(value) is not int:
            return value
        found = self._source.number_kind(self.table, path)
        if found == ("float64", True) and -_FLOAT_SAFE_INT <= value <= _FLOAT_SAFE_INT:
            return float(value)
        return value

    def __iter__(self) -> Iterator[dict[str, Value]]:
        """Stream the matching documents, best first."""
        for _, doc in self._ranked():
            yield doc

    def collect(self) -> list[dict[str, Value]]:
        """Every matching document (an error beyond `MAX_RESULTS`)."""
        return list(self)

    def paginate(self, opts: Mapping[str, Any]) -> dict[str, Any]:
        """One page of results in relevance order: `{"page", "isDone", "continueCursor"}`
        (`numItems`, `cursor`; a cursor is the last document's position in relevance order).

        The next page holds the documents ranked after the cursor's document, and any other
        after the cursor's position: a commit since the last page changes every score (the
        document count and average length are in all of them), so positions alone would
        skip documents whose scores grew past the cursor's."""
        if not isinstance(opts, Mapping):
            raise QueryError('paginate() takes {"numItems": n, "cursor": None | str}')
        num_items = opts.get("numItems")
        if type(num_items) is float and num_items.is_integer():
            num_items = int(num_items)
        if type(num_items) is not int or num_items < 1:
            raise QueryError(f"paginate(): numItems must be a positive integer, got {num_items!r}")
        cursor = opts.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise QueryError(f"paginate(): cursor must be a string or None, got {cursor!r}")
        self._source.begin_paginate()
        start = None if cursor is None else decode_cursor(cursor)
        if cursor is not None and start is None:
            return {"page": [], "isDone": True, "continueCursor": _END_CURSOR}
        page: list[dict[str, Value]] = []
        after_anchor = start is None
        for position, doc in self._ranked():
            if not after_anchor:
                assert start is not None
                if start.endswith(encode_value(doc["_id"])):  # (an id ends a position)
                    after_anchor = True  # the cursor's own document
                    continue
                if position <= start:
                    continue
            page.append(doc)
            if len(page) >= num_items:
                return {"page": page, "isDone": False, "continueCursor": encode_cursor(position)}
        return {"page": page, "isDone": True, "continueCursor": _END_CURSOR}

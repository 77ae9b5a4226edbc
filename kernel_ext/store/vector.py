"""Vector search requests, filters, and the keys that make vector reads reactive.

A vector index (`index_kinds.VectorIndexConfig`) holds the documents whose vector field is an
array of exactly `dimensions` finite numbers; any other document is stored but left out of it,
as Convex does. A search (`VectorRequest`) takes a query vector of that length, a `limit`
(1..256, default 10) and an optional filter: `q.eq(field, value)` on declared filter fields,
combined with `|` or `q.or_(...)` (an OR of at most 64 values; Convex has no AND here).
Results are ranked by cosine similarity (`_score`, -1..1), best first; ties go to the newer
document (larger `_creationTime`), then the smaller id. A zero vector scores 0 with everything.

Reactivity and OCC use the ordinary read-set machinery (`readset`) with one more kind of key.
Under the index name `"table.index"`, each document version in the index writes a *filter key*
`encode_key([field, value])` per filter field (an index without filter fields: one membership
key). A filtered search reads the point of each of its `eq` values; an unfiltered one reads
the whole index. A commit writes these keys for the old and the new version of a document only
when it enters or leaves the index or changes its vector or a filter field: a write that
changes other fields of a document is seen only by searches that returned it (they read
its id, `by_id`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from kernel_ext.errors import QueryError
from kernel_ext.store.catalog import IndexInfo, TableInfo
from kernel_ext.store.expressions import field_value
from kernel_ext.store.index_kinds import VECTOR, VectorIndexConfig
from kernel_ext.store.keys import KEY_MAX, encode_key
from kernel_ext.store.readset import ReadSet, WrittenKey
from kernel_ext.store.values import Value, same_value

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_FILTER_VALUES",
    "MAX_LIMIT",
    "VectorFilter",
    "VectorFilterBuilder",
    "VectorRequest",
    "document_vector",
    "filter_keys",
    "parse_request",
    "record_vector_read",
    "vector_config",
    "vector_indexes",
    "vector_written_keys",
]

#: Convex's bounds on `limit` and its default.
MAX_LIMIT: Final = 256
DEFAULT_LIMIT: Final = 10
#: Convex's bound on the `eq` values of one filter.
MAX_FILTER_VALUES: Final = 64
#: The key every version in an index without filter fields writes.
_MEMBER: Final = encode_key(("",))


@dataclass(frozen=True)
class VectorFilter:
    """An OR of `eq` clauses `(field, value)`; combine with `|` (or `q.or_`)."""

    clauses: tuple[tuple[str, Value], ...]

    def __or__(self, other: object) -> VectorFilter:
        if not isinstance(other, VectorFilter):
            return NotImplemented
        return VectorFilter(self.clauses + other.clauses)

    def __and__(self, other: object) -> VectorFilter:
        raise QueryError(
            "Vector search filters combine with OR only (q.or_(...) or |), as in Convex; "
            "filter on one field with q.eq and narrow the results afterwards"
        )

    def __bool__(self) -> bool:
        raise QueryError("Use | or q.or_(...) to combine vector filters, not `or`/`and`")


class VectorFilterBuilder:
    """The `q` of a vector search's `filter`: `q.eq(field, value)`, `q.or_(...)`."""

    def eq(self, field: str, value: Value) -> VectorFilter:
        """Documents whose filter field `field` equals `value`."""
        if not isinstance(field, str):
            raise QueryError(f"q.eq(field, value): field must be a string, got {field!r}")
        return VectorFilter(((field, value),))

    def or_(self, *filters: VectorFilter) -> VectorFilter:
        """Documents that pass any of `filters` (Convex's `q.or`)."""
        clauses: tuple[tuple[str, Value], ...] = ()
        for f in filters:
            if not isinstance(f, VectorFilter):
                raise QueryError(f"q.or_(...) takes q.eq(...) expressions, got {f!r}")
            clauses += f.clauses
        return VectorFilter(clauses)


@dataclass(frozen=True)
class VectorRequest:
    """A checked vector search: the query vector, `limit`, and the filter's `(field,
    value)` clauses (None: no filter; an empty tuple matches nothing)."""

    vector: tuple[float, ...]
    limit: int
    clauses: tuple[tuple[str, Value], ...] | None

    def passes(self, doc: dict[str, Value]) -> bool:
        """Whether a document (in the index) passes the filter."""
        if self.clauses is None:
            return True
        return any(same_value(field_value(doc, f), v) for f, v in self.clauses)


def vector_indexes(table: TableInfo) -> list[IndexInfo]:
    """The vector indexes of a table."""
    return [i for i in table.search_indexes.values() if i.kind == VECTOR]


def vector_config(table: TableInfo, name: str) -> tuple[IndexInfo, VectorIndexConfig]:
    """The vector index `name` of `table` and its config.

    Raises:
        QueryError: no such index, or it is not a vector index.
    """
    index = table.all_indexes().get(name)
    if index is None or not isinstance(index.config, VectorIndexConfig):
        names = sorted(i.name for i in vector_indexes(table))
        what = "not found" if index is None else f"is a {index.kind} index, not a vector index"
        raise QueryError(
            f"Index {table.name}.{name} {what}. Declare it in the schema with "
            f'.vector_index("{name}", vector_field=..., dimensions=...); vector indexes of '
            f"{table.name!r}: {names}"
        )
    return index, index.config


def parse_request(label: str, config: VectorIndexConfig, opts: Any) -> VectorRequest:
    """Check `{"vector", "limit", "filter"}` against an index's config (`label`: its
    "table.index", for messages).

    Raises:
        QueryError: a missing or ill-sized vector, a limit outside 1..256, a filter on an
            undeclared field or with more than 64 values, an unknown option.
    """
    if not isinstance(opts, Mapping):
        raise QueryError('A vector search takes {"vector": [...], "limit": n, "filter": fn}')
    unknown = sorted(set(opts) - {"vector", "limit", "filter"})
    if unknown:
        raise QueryError(f"Unknown vector search options {unknown}: use vector, limit, filter")
    vector = _query_vector(label, config, opts.get("vector"))
    limit = opts.get("limit", DEFAULT_LIMIT)
    if type(limit) is float and limit.is_integer():
        limit = int(limit)
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(
            f"Vector search limit must be an integer between 1 and {MAX_LIMIT}, got {limit!r}"
        )
    predicate = opts.get("filter")
    clauses = None if predicate is None else _clauses(label, config, predicate)
    return VectorRequest(vector, limit, clauses)


def _query_vector(label: str, config: VectorIndexConfig, vector: Any) -> tuple[float, ...]:
    """The query vector as floats: a list or tuple of real numbers, or a 1-D numpy array (an
    embedding model's output, as it comes)."""
    if vector is None:
        raise QueryError(
            f"Vector search on {label}: `vector` is missing; it must be a list of numbers "
            f"({config.dimensions} of them)"
        )
    if isinstance(vector, np.ndarray) and vector.ndim == 1:
        vector = vector.tolist()
    if not isinstance(vector, list | tuple):
        raise QueryError(
            f"Vector search on {label}: `vector` must be a list of numbers, got a "
            f"{type(vector).__name__}"
        )
    for i, x in enumerate(vector):
        if not isinstance(x, numbers.Real) or isinstance(x, bool):
            raise QueryError(
                f"Vector search on {label}: `vector` must be a list of numbers, but item {i} "
                f"is {x!r} ({type(x).__name__})"
            )
    if len(vector) != config.dimensions:
        raise QueryError(
            f"Vector search on {label}: the query vector has {len(vector)} dimensions, the "
            f"index has {config.dimensions}"
        )
    try:
        floats = tuple(float(x) for x in vector)
    except OverflowError:  # an int beyond float's range
        floats = (math.inf,)
    if not all(math.isfinite(x) for x in floats):
        raise QueryError(f"Vector search on {label}: the query vector holds NaN or infinity")
    return floats


def _clauses(
    label: str, config: VectorIndexConfig, predicate: Callable[[VectorFilterBuilder], Any]
) -> tuple[tuple[str, Value], ...]:
    if not callable(predicate):
        raise QueryError("Vector search `filter` must be a function, e.g. lambda q: q.eq(f, x)")
    built = predicate(VectorFilterBuilder())
    if not isinstance(built, VectorFilter):
        raise QueryError(
            "The vector search filter must return q.eq(...) or q.or_(...), e.g. "
            "lambda q: q.or_(q.eq('genre', 'comedy'), q.eq('genre', 'drama'))"
        )
    if len(built.clauses) > MAX_FILTER_VALUES:
        raise QueryError(
            f"Vector search on {label}: the filter has {len(built.clauses)} values, at most "
            f"{MAX_FILTER_VALUES} are allowed"
        )
    for f, value in built.clauses:
        if f not in config.filter_fields:
            raise QueryError(
                f"Vector search on {label}: {f!r} is not a filter field of the index; "
                f"declared filter fields: {list(config.filter_fields)}"
            )
        encode_key((value,))  # refuses what is not a Convex value
    return built.clauses


def _is_number(x: object) -> bool:
    t = type(x)
    return t is float or t is int


def document_vector(doc: dict[str, Value], config: VectorIndexConfig) -> list[float] | None:
    """The document's vector if it belongs in the index (a list of `dimensions` finite
    numbers), else None."""
    value = field_value(doc, config.vector_field)
    if type(value) is not list or len(value) != config.dimensions:
        return None
    for x in value:
        if not _is_number(x) or not math.isfinite(x):
            return None
    return value


def filter_keys(doc: dict[str, Value], config: VectorIndexConfig) -> list[bytes]:
    """The filter keys a version in the index writes (see the module docstring)."""
    if not config.filter_fields:
        return [_MEMBER]
    return [encode_key((f, field_value(doc, f))) for f in config.filter_fields]


def record_vector_read(read_set: ReadSet, label: str, request: VectorRequest) -> None:
    """Record that a search read what its results depend on in index `label`."""
    if request.clauses is None:
        read_set.add(label, b"", KEY_MAX)
        return
    for f, value in request.clauses:
        read_set.add_point(label, encode_key((f, value)))


def vector_written_keys(
    table: TableInfo, old: dict[str, Value] | None, new: dict[str, Value] | None
) -> list[WrittenKey]:
    """The filter keys one written document writes in the vector indexes of its table:
    those of its old and its new version in each index, unless it stayed out of the index or
    kept its vector and filter fields."""
    keys: list[WrittenKey] = []
    for index in vector_indexes(table):
        config = index.config
        assert isinstance(config, VectorIndexConfig)
        in_old = old is not None and document_vector(old, config) is not None
        in_new = new is not None and document_vector(new, config) is not None
        if not in_old and not in_new:
            continue
        if in_old and in_new and _same_fields(old, new, config.fields):  # type: ignore[arg-type]
            continue
        label = f"{table.name}.{index.name}"
        for version, present in ((old, in_old), (new, in_new)):
            if present:
                keys.extend((label, key) for key in filter_keys(version, config))  # type: ignore[arg-type]
    return keys


def _same_fields(a: dict[str, Value], b: dict[str, Value], fields: Sequence[str]) -> bool:
    for f in fields:
        x, y = field_value(a, f), field_value(b, f)
        if x is not y and not same_value(x, y):
            return False
    return True

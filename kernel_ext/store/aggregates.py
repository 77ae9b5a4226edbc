"""Aggregates: `query.group_by(*fields).agg(name=(field, func))` and `query.agg(...)`.

The semantics are API.md's ("Live views and aggregates"):

- Grouped: one dict per distinct tuple of group-field values among the matching documents,
  ordered by that tuple in Convex's total order. A group field missing from a document is
  its own group (ordered first) and is absent from the group's dict. A group whose last
  document goes away disappears.
- `count`: documents where the field is present (`"_id"`: all), int64. `sum`: of the int64
  and float64 values present (other types ignored); int64 when all are int64 (0 for none),
  float64 otherwise. `mean`: float64 over the same values, None when there are none.
  `min`/`max`: in Convex's total order over the present values, None when there are none.

Field paths may be dotted (`"a.b"`, as in filters; arrays are not traversed); a group's dict
holds a dotted group field under the dotted path.

Every accumulator has `add(value)` and `remove(value)` of a present value, each O(1) (O(log n)
for min/max), so a maintained aggregate costs O(changed documents) per commit:
`GroupedAggregate.apply(old_doc, new_doc)` takes one document change. Sums are exact: ints as a
Python int, finite floats as an exact integer multiple of 2**-1074 (every finite float64 is
one), so removing a value undoes adding it exactly and a maintained sum never drifts from a
fresh one; the float result is the exact sum correctly rounded (better than compensated
summation, at the cost of a ~2,100-bit integer addition per update). Min/max keep an ordered
multiset keyed by `encode_value` (bytes whose order is the total order), so deleting the
extreme never rescans the group.

`Aggregate` (what `.agg(...)` returns) is a `LazyResult`: returned from a query function it
is the function's value; `.collect()` computes it by scanning the query in its transaction
(its read set is the scanned range, as for `Query.collect()`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from sortedcontainers import SortedList

from kernel_ext.errors import QueryError
from kernel_ext.store.expressions import field_value
from kernel_ext.store.keys import encode_key, encode_value
from kernel_ext.store.query import LazyResult
from kernel_ext.store.values import INT64_MAX, INT64_MIN, UNDEFINED, Value

if TYPE_CHECKING:
    from kernel_ext.store.query import Query
    from kernel_ext.store.views import MaintainedView

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "Accumulator",
    "Aggregate",
    "AggregateSpec",
    "Count",
    "GroupBy",
    "GroupedAggregate",
    "Max",
    "Mean",
    "Min",
    "Sum",
    "check_group_fields",
]

AggregateFunction: TypeAlias = Literal["count", "sum", "mean", "min", "max"]
AGGREGATE_FUNCTIONS: Final = ("count", "sum", "mean", "min", "max")

# Every finite float64 is an integer multiple of 2**-1074 (the smallest subnormal).
_SCALE_BITS: Final = 1074


def _scaled(x: float) -> int:
    """The finite float `x` as the exact integer `x * 2**1074`."""
    numerator, denominator = x.as_integer_ratio()
    # denominator is a power of two <= 2**1074
    return numerator << (_SCALE_BITS - denominator.bit_length() + 1)


class Accumulator:
    """One output of one group: `add`/`remove` present values, `value()` the result."""

    __slots__ = ()

    def add(self, value: Value) -> None:
        """Account for one present value (never `UNDEFINED`)."""
        raise NotImplementedError

    def remove(self, value: Value) -> None:
        """Undo one earlier `add(value)`; removing a value never added is a caller bug."""
        raise NotImplementedError

    def add_many(self, values: list[Value]) -> None:
        """`add` each of `values` (present values); subclasses do it in bulk."""
        for value in values:
            self.add(value)

    def value(self) -> Value:
        """The output's value now."""
        raise NotImplementedError


class Count(Accumulator):
    """`count`: how many present values (int64)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def add(self, value: Value) -> None:
        """Count one present value."""
        self.n += 1

    def remove(self, value: Value) -> None:
        """Uncount one present value."""
        self.n -= 1

    def add_many(self, values: list[Value]) -> None:
        """Count present values."""
        self.n += len(values)

    def value(self) -> int:
        """The count."""
        return self.n


class Sum(Accumulator):
    """`sum` of the int64 and float64 values (others ignored), exact under add/remove.

    Ints are summed exactly as a Python int, finite floats exactly as integer multiples of
    2**-1074, and the non-finite floats (inf, -inf, NaN) are counted apart, so any sequence
    of adds and removes leaves the same state as adding the remaining values afresh.
    """

    __slots__ = ("field", "float_count", "int_count", "int_total", "nonfinite", "scaled_total")

    def __init__(self, field: str = "") -> None:
        self.field = field
        self.int_count = 0
        self.int_total = 0
        self.float_count = 0
        self.scaled_total = 0
        self.nonfinite = [0, 0, 0]  # counts of +inf, -inf, NaN

    def add(self, value: Value) -> None:
        """Add an int64 or float64 value; other types are ignored."""
        self._update(value, 1)

    def remove(self, value: Value) -> None:
        """Remove an int64 or float64 value added before; other types are ignored."""
        self._update(value, -1)

    def add_many(self, values: list[Value]) -> None:
        """Add values in bulk (the same state as adding them one by one)."""
        ints = [x for x in values if type(x) is int]
        floats = [x for x in values if type(x) is float]
        self.int_count += len(ints)
        self.int_total += sum(ints)
        self.float_count += len(floats)
        finite = [x for x in floats if math.isfinite(x)]
        self.scaled_total += sum(map(_scaled, finite))
        if len(finite) < len(floats):
            for x in floats:
                if not math.isfinite(x):
                    self.nonfinite[2 if math.isnan(x) else 0 if x > 0 else 1] += 1

    def _update(self, value: Value, sign: int) -> None:
        t = type(value)
        if t is int:
            self.int_count += sign
            self.int_total += sign * value
        elif t is float:
            self.float_count += sign
            if math.isfinite(value):
                self.scaled_total += sign * _scaled(value)
            else:
                self.nonfinite[2 if math.isnan(value) else 0 if value > 0 else 1] += sign

    @property
    def numbers(self) -> int:
        """How many numeric values are present."""
        return self.int_count + self.float_count

    def _nonfinite(self) -> float | None:
        pos, neg, nan = self.nonfinite
        if nan or (pos and neg):
            return math.nan
        if pos:
            return math.inf
        if neg:
            return -math.inf
        return None

    def _divided(self, count: int) -> float:
        """The exact float total divided by `count`, correctly rounded (inf on overflow)."""
        special = self._nonfinite()
        if special is not None:
            return special
        exact = (self.int_total << _SCALE_BITS) + self.scaled_total
        try:
            return exact / (count << _SCALE_BITS)  # int / int rounds correctly
        except OverflowError:
            return math.inf if exact > 0 else -math.inf

    def value(self) -> int | float:
        """int64 when every value was an int64 (0 for none), float64 otherwise; raises
        `QueryError` when an int64 sum does not fit in int64."""
        if self.float_count:
            return self._divided(1)
        if not INT64_MIN <= self.int_total <= INT64_MAX:
            raise QueryError(
                f"int64 overflow in sum of field {self.field!r}: the total {self.int_total} "
                "does not fit in int64; store the values as float64 to sum them"
            )
        return self.int_total


class Mean(Accumulator):
    """`mean` (float64) over the int64 and float64 values, None when there are none."""

    __slots__ = ("sum",)

    def __init__(self, field: str = "") -> None:
        self.sum = Sum(field)

    def add(self, value: Value) -> None:
        """Add a value (non-numbers are ignored)."""
        self.sum.add(value)

    def remove(self, value: Value) -> None:
        """Remove a value added before (non-numbers are ignored)."""
        self.sum.remove(value)

    def add_many(self, values: list[Value]) -> None:
        """Add values in bulk."""
        self.sum.add_many(values)

    def value(self) -> float | None:
        """The exact mean correctly rounded, or None when no number is present."""
        n = self.sum.numbers
        return None if n == 0 else self.sum._divided(n)


class _Extreme(Accumulator):
    """An ordered multiset of values keyed by `encode_value` (the total order)."""

    __slots__ = ("entries", "keys")

    def __init__(self) -> None:
        self.keys = SortedList()  # distinct encoded values
        self.entries: dict[bytes, list[Any]] = {}  # encoded -> [value, multiplicity]

    def add(self, value: Value) -> None:
        """Add one occurrence of a value."""
        key = encode_value(value)
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = [value, 1]
            self.keys.add(key)
        else:
            entry[1] += 1

    def add_many(self, values: list[Value]) -> None:
        """Add values in bulk: one sort of the new distinct keys, not one insert each."""
        new_keys = []
        for value in values:
            key = encode_value(value)
            entry = self.entries.get(key)
            if entry is None:
                self.entries[key] = [value, 1]
                new_keys.append(key)
            else:
                entry[1] += 1
        self.keys.update(new_keys)

    def remove(self, value: Value) -> None:
        """Remove one occurrence of a value added before."""
        key = encode_value(value)
        entry = self.entries[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self.entries[key]
            self.keys.remove(key)

    def _at(self, position: int) -> Value:
        if not self.keys:
            return None
        return self.entries[self.keys[position]][0]


class Min(_Extreme):
    """`min` in Convex's total order, None when no value is present."""

    __slots__ = ()

    def value(self) -> Value:
        """The smallest present value, or None."""
        return self._at(0)


class Max(_Extreme):
    """`max` in Convex's total order, None when no value is present."""

    __slots__ = ()

    def value(self) -> Value:
        """The largest present value, or None."""
        return self._at(-1)


def _new_accumulator(func: str, field: str) -> Accumulator:
    if func == "count":
        return Count()
    if func == "sum":
        return Sum(field)
    if func == "mean":
        return Mean(field)
    return Min() if func == "min" else Max()


@dataclass(frozen=True)
class AggregateSpec:
    """What to compute: group fields (empty: one result dict) and `(name, field, func)`s."""

    group_fields: tuple[str, ...]
    outputs: tuple[tuple[str, str, str], ...]

    @staticmethod
    def build(group_fields: tuple[Any, ...], outputs: Mapping[str, Any]) -> AggregateSpec:
        """Validate `group_by(*group_fields).agg(**outputs)`; raises `QueryError` naming the
        bad field or output."""
        if group_fields:
            check_group_fields(group_fields)
        if not outputs:
            raise QueryError('agg() needs at least one output, e.g. agg(n=("_id", "count"))')
        checked: list[tuple[str, str, str]] = []
        for name, output in outputs.items():
            if name in group_fields:
                raise QueryError(
                    f"agg(): output {name!r} has the name of a group field; rename the output"
                )
            if (
                not isinstance(output, tuple | list)
                or len(output) != 2
                or type(output[0]) is not str
                or not output[0]
                or output[1] not in AGGREGATE_FUNCTIONS
            ):
                raise QueryError(
                    f"agg(): output {name}={output!r} must be (field, func) with func one of "
                    f"{', '.join(AGGREGATE_FUNCTIONS)}, e.g. {name}=('body_mass_g', 'mean')"
                )
            checked.append((name, output[0], output[1]))
        return AggregateSpec(tuple(group_fields), tuple(checked))


def check_group_fields(fields: tuple[Any, ...]) -> None:
    """Raise `QueryError` unless `fields` are one or more distinct non-empty strings."""
    if not fields:
        raise QueryError("group_by() needs at least one field; use query.agg(...) for one group")
    for f in fields:
        if type(f) is not str or not f:
            raise QueryError(f"group_by(): each field must be a non-empty string, got {f!r}")
    if len(set(fields)) != len(fields):
        raise QueryError(f"group_by(): a field is repeated in {list(fields)!r}")


class _Group:
    __slots__ = ("accumulators", "documents", "values")

    def __init__(self, values: tuple[Value, ...], spec: AggregateSpec) -> None:
        self.values = values
        self.accumulators = [_new_accumulator(func, field) for _, field, func in spec.outputs]
        self.documents = 0


class GroupedAggregate:
    """The state of one aggregate over a changing set of documents.

    `apply(old, new)` takes one document change (insert: old None; delete: new None); the
    state is then the same as if the current documents had been added afresh. `value()` is
    API.md's value: a list of group dicts when grouped, one dict when not.
    """

    __slots__ = ("_fields", "groups", "spec")

    def __init__(self, spec: AggregateSpec) -> None:
        self.spec = spec
        self.groups: dict[bytes, _Group] = {}  # encoded group tuple -> group
        self._fields = [field for _, field, _ in spec.outputs]

    def apply(self, old: dict[str, Value] | None, new: dict[str, Value] | None) -> None:
        """Replace document `old` by `new` in the aggregated set (either may be None)."""
        if old is not None:
            self._update(old, remove=True)
        if new is not None:
            self._update(new, remove=False)

    def extend(self, docs: Iterable[dict[str, Value]]) -> None:
        """Add many documents (the same state as `apply(None, doc)` for each, faster: the
        documents are bucketed by group, then each accumulator takes its values at once)."""
        buckets: dict[bytes, list[dict[str, Value]]] = {}
        group_fields = self.spec.group_fields
        for doc in docs:
            key = encode_key([field_value(doc, f) for f in group_fields]) if group_fields else b""
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = [doc]
            else:
                bucket.append(doc)
        for key, members in buckets.items():
            group = self.groups.get(key)
            if group is None:
                values = tuple(field_value(members[0], f) for f in group_fields)
                group = self.groups[key] = _Group(values, self.spec)
            for accumulator, field in zip(group.accumulators, self._fields, strict=True):
                present = [field_value(d, field) for d in members]
                accumulator.add_many([x for x in present if x is not UNDEFINED])
            group.documents += len(members)

    def group_key(self, doc: dict[str, Value]) -> bytes:
        """The key of the document's group: its encoded group values (a missing field is
        UNDEFINED, which encodes below every value: it sorts first, as its own group)."""
        return encode_key([field_value(doc, f) for f in self.spec.group_fields])

    def row_of(self, key: bytes) -> dict[str, Value] | None:
        """The result dict of the group with `key`, None if the group has no documents."""
        group = self.groups.get(key)
        return None if group is None else self._row(group)

    def empty_row(self) -> dict[str, Value]:
        """The result of an ungrouped aggregate of no documents."""
        return self._row(None)

    def _update(self, doc: dict[str, Value], remove: bool) -> None:
        values = tuple(field_value(doc, f) for f in self.spec.group_fields)
        key = encode_key(values)
        group = self.groups.get(key)
        if group is None:
            if remove:
                raise KeyError(f"removing a document that was never added: {doc!r}")
            group = self.groups[key] = _Group(values, self.spec)
        for accumulator, field in zip(group.accumulators, self._fields, strict=True):
            value = field_value(doc, field)
            if value is not UNDEFINED:
                if remove:
                    accumulator.remove(value)
                else:
                    accumulator.add(value)
        group.documents += -1 if remove else 1
        if group.documents == 0:
            del self.groups[key]

    def _row(self, group: _Group | None) -> dict[str, Value]:
        row: dict[str, Value] = {}
        if group is None:  # no documents at all, ungrouped: the outputs of nothing
            group = _Group((), self.spec)
        for f, v in zip(self.spec.group_fields, group.values, strict=True):
            if v is not UNDEFINED:
                row[f] = v
        for (name, _, _), accumulator in zip(self.spec.outputs, group.accumulators, strict=True):
            row[name] = accumulator.value()
        return row

    def value(self) -> list[dict[str, Value]] | dict[str, Value]:
        """Grouped: the group dicts ordered by group values; ungrouped: the one dict."""
        if not self.spec.group_fields:
            return self._row(self.groups.get(b""))
        return [self._row(self.groups[key]) for key in sorted(self.groups)]


class Aggregate(LazyResult):
    """What `.agg(...)` returns: an aggregate of a query, computed when consumed.

    Returned from a query function it is the function's value; `.collect()` computes it in
    the current transaction (the list of group dicts when grouped, the one dict when not).
    """

    __slots__ = ("query", "spec")

    def __init__(self, query: Query, spec: AggregateSpec) -> None:
        self.query = query
        self.spec = spec

    def collect(self) -> list[dict[str, Value]] | dict[str, Value]:
        """Scan the query's documents (its read set is the scanned range) and aggregate."""
        state = GroupedAggregate(self.spec)
        state.extend(self.query)
        return state.value()

    def open_view(self) -> MaintainedView | None:
        """An `AggregateView` (see `LazyResult.open_view`); None for an aggregate of a
        limited query (maintained by re-running) or of a table that does not exist."""
        from kernel_ext.store.views import AggregateView

        plan = self.query.view_plan()
        if plan is None or self.query._limit is not None:
            return None
        return AggregateView(plan, self.spec, self.query)

    def __repr__(self) -> str:
        return f"Aggregate({self.query.table!r}, {self.spec!r})"


class GroupBy:
    """`query.group_by(*fields)`: call `.agg(name=(field, func), ...)` on it."""

    __slots__ = ("fields", "query")

    def __init__(self, query: Query, fields: tuple[str, ...]) -> None:
        check_group_fields(fields)
        self.query = query
        self.fields = fields

    def agg(self, **outputs: Any) -> Aggregate:
        """The aggregate of each group: `name=(field, func)` with func one of count, sum,
        mean, min, max."""
        return Aggregate(self.query, AggregateSpec.build(self.fields, outputs))

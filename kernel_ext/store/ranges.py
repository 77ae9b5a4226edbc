"""Index ranges: the `with_index(name, lambda q: q.eq(...).gt(...).lt(...))` grammar.

A range is zero or more `eq` on a prefix of the index's fields (in index order), then at most
one lower bound (`gt`/`gte`) and at most one upper bound (`lt`/`lte`), both on the field right
after that prefix. It compiles to a half-open byte interval `[lo, hi)` over encoded index keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from kernel_ext.errors import QueryError
from kernel_ext.store.keys import encode_key, encode_value, prefix_end
from kernel_ext.store.values import UNDEFINED, Value, normalize

__all__ = ["IndexRangeBuilder", "KeyRange", "RangeOp", "compile_range"]

Op = Literal["eq", "gt", "gte", "lt", "lte"]
_LOWER: Final = ("gt", "gte")
_UPPER: Final = ("lt", "lte")


@dataclass(frozen=True)
class RangeOp:
    """One comparison of an index range."""

    op: Op
    field: str
    value: Value


@dataclass(frozen=True)
class KeyRange:
    """A half-open interval `[lo, hi)` of encoded index keys."""

    lo: bytes
    hi: bytes

    def contains(self, key: bytes) -> bool:
        """True if `key` lies in the interval."""
        return self.lo <= key < self.hi


class IndexRangeBuilder:
    """The `q` passed to a `with_index` callback. Each method returns the builder."""

    def __init__(self) -> None:
        self.ops: list[RangeOp] = []

    def _add(self, op: Op, field: str, value: Value) -> IndexRangeBuilder:
        if not isinstance(field, str):
            raise QueryError(f"Index range fields are names (str), got {field!r}")
        self.ops.append(RangeOp(op, field, value if value is UNDEFINED else normalize(value)))
        return self

    def eq(self, field: str, value: Value) -> IndexRangeBuilder:
        """Documents whose `field` equals `value` (`UNDEFINED` matches a missing field)."""
        return self._add("eq", field, value)

    def gt(self, field: str, value: Value) -> IndexRangeBuilder:
        """Lower bound, exclusive."""
        return self._add("gt", field, value)

    def gte(self, field: str, value: Value) -> IndexRangeBuilder:
        """Lower bound, inclusive."""
        return self._add("gte", field, value)

    def lt(self, field: str, value: Value) -> IndexRangeBuilder:
        """Upper bound, exclusive."""
        return self._add("lt", field, value)

    def lte(self, field: str, value: Value) -> IndexRangeBuilder:
        """Upper bound, inclusive."""
        return self._add("lte", field, value)


def compile_range(index_name: str, key_fields: tuple[str, ...], ops: Sequence[RangeOp]) -> KeyRange:
    """Check `ops` against the grammar for an index keyed by `key_fields` and compile them.

    Raises:
        QueryError: naming the rule that the range breaks.
    """
    position = 0
    prefix: list[Value] = []
    lower: RangeOp | None = None
    upper: RangeOp | None = None
    for op in ops:
        if op.field not in key_fields:
            raise QueryError(
                f"The index range included a comparison with {op.field!r}, but index "
                f"{index_name} is on {list(key_fields)}"
            )
        if op.op == "eq":
            if lower or upper:
                raise QueryError(
                    f"Index range on {index_name}: .eq({op.field!r}) must come before .gt/.gte/"
                    ".lt/.lte"
                )
            expected = key_fields[position] if position < len(key_fields) else None
            if op.field != expected:
                raise QueryError(
                    f"Index range on {index_name}: .eq() must follow the index's field order "
                    f"{list(key_fields)}; expected {expected!r}, got {op.field!r}"
                )
            prefix.append(op.value)
            position += 1
            continue
        bound_field = key_fields[position] if position < len(key_fields) else None
        if op.field != bound_field:
            raise QueryError(
                f"Index range on {index_name}: a bound must be on the field after the .eq() "
                f"prefix ({bound_field!r}), got {op.field!r}"
            )
        if op.op in _LOWER:
            if lower:
                raise QueryError(f"Index range on {index_name}: two lower bounds on {op.field!r}")
            lower = op
        else:
            if upper:
                raise QueryError(f"Index range on {index_name}: two upper bounds on {op.field!r}")
            upper = op
    return _to_bytes(encode_key(prefix), lower, upper)


def _to_bytes(prefix: bytes, lower: RangeOp | None, upper: RangeOp | None) -> KeyRange:
    lo, hi = prefix, prefix_end(prefix)
    if lower is not None:
        bound = prefix + encode_value(lower.value)
        lo = prefix_end(bound) if lower.op == "gt" else bound
    if upper is not None:
        bound = prefix + encode_value(upper.value)
        hi = bound if upper.op == "lt" else prefix_end(bound)
    return KeyRange(lo, hi)

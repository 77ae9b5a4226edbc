"""Filter expressions: `.filter(lambda q: q.and_(q.eq(q.field("a"), 1), q.gt(q.field("b"), 2)))`.

Semantics follow the backend (SEMANTICS.md §2.3): comparisons use the total order across types
(a missing field is `UNDEFINED`, lowest of all), arithmetic needs two int64 or two float64
operands, and `and_`/`or_`/`not_` and the filter's result must be booleans.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernel_ext.errors import QueryError
from kernel_ext.store.values import (
    INT64_MAX,
    INT64_MIN,
    UNDEFINED,
    Value,
    compare,
    normalize,
    type_name,
    value_repr,
)

__all__ = ["Expression", "FilterBuilder", "field_value", "map_field_literals"]

_COMPARISONS = frozenset(("eq", "neq", "lt", "lte", "gt", "gte"))


def field_value(doc: dict[str, Value], path: str) -> Value:
    """Look up a dotted path in a document; a missing field or non-object on the way gives
    `UNDEFINED` (arrays are not traversed)."""
    if "." not in path:  # the common case: a top-level field
        return doc.get(path, UNDEFINED)
    current: Any = doc
    for part in path.split("."):
        if type(current) is not dict:
            return UNDEFINED
        current = current.get(part, UNDEFINED)
    return current


class Expression:
    """A node of a filter expression; `evaluate(doc)` computes its value for one document."""

    def evaluate(self, doc: dict[str, Value]) -> Value:
        """The expression's value for `doc`; raises `QueryError` on a type error."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Field(Expression):
    path: str

    def evaluate(self, doc: dict[str, Value]) -> Value:
        return field_value(doc, self.path)


@dataclass(frozen=True)
class _Literal(Expression):
    value: Value

    def evaluate(self, doc: dict[str, Value]) -> Value:
        return self.value


@dataclass(frozen=True)
class _Call(Expression):
    name: str
    function: Callable[..., Value]
    args: tuple[Expression, ...]

    def evaluate(self, doc: dict[str, Value]) -> Value:
        return self.function(*(a.evaluate(doc) for a in self.args))


@dataclass(frozen=True)
class _Logic(Expression):
    is_and: bool
    args: tuple[Expression, ...]

    def evaluate(self, doc: dict[str, Value]) -> Value:
        for arg in self.args:
            if as_boolean(arg.evaluate(doc)) is not self.is_and:
                return not self.is_and
        return self.is_and


def as_boolean(value: Value) -> bool:
    """`value` if it is a bool; raises `QueryError` otherwise."""
    if type(value) is not bool:
        raise QueryError(f"Cannot use value {value_repr(value)} ({type_name(value)}) as a Boolean")
    return bool(value)


def _arith(name: str, a: Value, b: Value) -> Value:
    if type(a) is int and type(b) is int:
        return _int_arith(name, a, b)
    if type(a) is float and type(b) is float:
        return _float_arith(name, a, b)
    raise QueryError(
        f"Cannot {name} {value_repr(a)} (type {type_name(a)}) and {value_repr(b)} "
        f"(type {type_name(b)}): both must be int64 or both float64"
    )


def _int_arith(name: str, a: int, b: int) -> int:
    if name in ("div", "mod") and b == 0:
        raise QueryError(f"Cannot {name} int64 {a} by zero")
    if name == "add":
        result = a + b
    elif name == "sub":
        result = a - b
    elif name == "mul":
        result = a * b
    else:  # Rust semantics: truncate toward zero, remainder has the dividend's sign
        quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
        result = quotient if name == "div" else a - quotient * b
    if not INT64_MIN <= result <= INT64_MAX:
        raise QueryError(f"int64 overflow in {name}({a}, {b})")
    return result


def _float_arith(name: str, a: float, b: float) -> float:
    if name == "add":
        return a + b
    if name == "sub":
        return a - b
    if name == "mul":
        return a * b
    if name == "mod" and math.isinf(a):
        return math.nan  # Rust's % on floats; math.fmod would raise
    if b == 0:
        if name == "mod" or a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b if name == "div" else math.fmod(a, b)


def _neg(a: Value) -> Value:
    if type(a) is int:
        if a == INT64_MIN:
            raise QueryError("int64 overflow in neg")
        return -a
    if type(a) is float:
        return -a
    raise QueryError(f"Cannot negate {value_repr(a)} (type {type_name(a)})")


def _as_expression(x: Any) -> Expression:
    if isinstance(x, Expression):
        return x
    if x is UNDEFINED:
        return _Literal(UNDEFINED)
    return _Literal(normalize(x))


def map_field_literals(expression: Expression, adapt: Callable[[str, Value], Value]) -> Expression:
    """`expression` with the literal of every comparison between a field and a literal
    (`q.gt(q.field("w"), 4000)`, either order, at any depth) replaced by
    `adapt(field path, literal)`; unchanged nodes are kept (and returned) as they are."""
    if not isinstance(expression, _Logic | _Call):
        return expression
    args = expression.args
    comparison = isinstance(expression, _Call) and expression.name in _COMPARISONS
    match args:
        case (_Field() as field, _Literal() as literal) if comparison:
            args = (field, _adapted(literal, field.path, adapt))
        case (_Literal() as literal, _Field() as field) if comparison:
            args = (_adapted(literal, field.path, adapt), field)
        case _:
            args = tuple(map_field_literals(x, adapt) for x in args)
    if all(x is y for x, y in zip(args, expression.args, strict=True)):
        return expression
    return dataclasses.replace(expression, args=args)


def _adapted(literal: _Literal, path: str, adapt: Callable[[str, Value], Value]) -> _Literal:
    new = adapt(path, literal.value)
    return literal if new is literal.value else _Literal(new)


class FilterBuilder:
    """The `q` passed to a `filter` callback."""

    def field(self, path: str) -> Expression:
        """The value of a (dotted) field of the document, `UNDEFINED` if missing."""
        if not isinstance(path, str) or not path:
            raise QueryError(f"q.field() takes a field name such as 'a' or 'a.b', got {path!r}")
        return _Field(path)

    def _compare(self, name: str, test: Callable[[int], bool], a: Any, b: Any) -> Expression:
        return _Call(name, lambda x, y: test(compare(x, y)), (_as_expression(a), _as_expression(b)))

    def eq(self, a: Any, b: Any) -> Expression:
        """a == b in the total order."""
        return self._compare("eq", lambda c: c == 0, a, b)

    def neq(self, a: Any, b: Any) -> Expression:
        """a != b."""
        return self._compare("neq", lambda c: c != 0, a, b)

    def lt(self, a: Any, b: Any) -> Expression:
        """a < b."""
        return self._compare("lt", lambda c: c < 0, a, b)

    def lte(self, a: Any, b: Any) -> Expression:
        """a <= b."""
        return self._compare("lte", lambda c: c <= 0, a, b)

    def gt(self, a: Any, b: Any) -> Expression:
        """a > b."""
        return self._compare("gt", lambda c: c > 0, a, b)

    def gte(self, a: Any, b: Any) -> Expression:
        """a >= b."""
        return self._compare("gte", lambda c: c >= 0, a, b)

    def _arith(self, name: str, a: Any, b: Any) -> Expression:
        return _Call(name, lambda x, y: _arith(name, x, y), (_as_expression(a), _as_expression(b)))

    def add(self, a: Any, b: Any) -> Expression:
        """a + b (both int64 or both float64)."""
        return self._arith("add", a, b)

    def sub(self, a: Any, b: Any) -> Expression:
        """a - b."""
        return self._arith("sub", a, b)

    def mul(self, a: Any, b: Any) -> Expression:
        """a * b."""
        return self._arith("mul", a, b)

    def div(self, a: Any, b: Any) -> Expression:
        """a / b (int64 division truncates toward zero)."""
        return self._arith("div", a, b)

    def mod(self, a: Any, b: Any) -> Expression:
        """a % b (the result has the sign of a)."""
        return self._arith("mod", a, b)

    def neg(self, a: Any) -> Expression:
        """-a."""
        return _Call("neg", _neg, (_as_expression(a),))

    def and_(self, *args: Any) -> Expression:
        """True if every argument is true (short-circuits); `and_()` is true."""
        return _Logic(True, tuple(_as_expression(a) for a in args))

    def or_(self, *args: Any) -> Expression:
        """True if any argument is true (short-circuits); `or_()` is false."""
        return _Logic(False, tuple(_as_expression(a) for a in args))

    def not_(self, a: Any) -> Expression:
        """Boolean negation."""
        return _Call("not", lambda x: not as_boolean(x), (_as_expression(a),))

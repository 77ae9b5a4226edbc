"""Filter expressions (SEMANTICS.md §2.3): total-order comparisons, strict arithmetic, logic."""

from __future__ import annotations

import math
import struct

import pytest

from kernel_ext.errors import QueryError, ValidationError
from kernel_ext.store.expressions import Expression, FilterBuilder, as_boolean, field_value
from kernel_ext.store.values import INT64_MAX, INT64_MIN, UNDEFINED

q = FilterBuilder()
DOC = {
    "n": 5,
    "f": 2.5,
    "s": "x",
    "b": True,
    "none": None,
    "nested": {"a": {"b": 7}, "list": [{"c": 1}]},
}


def ev(expression: Expression, doc: dict | None = None):
    return expression.evaluate(DOC if doc is None else doc)


def _bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


# -- fields --------------------------------------------------------------------------------


def test_field_values_and_nested_paths():
    assert ev(q.field("n")) == 5
    assert ev(q.field("nested.a.b")) == 7
    assert ev(q.field("nested.a")) == {"b": 7}


def test_missing_fields_are_undefined():
    assert ev(q.field("missing")) is UNDEFINED
    assert ev(q.field("nested.zz.b")) is UNDEFINED
    assert ev(q.field("n.x")) is UNDEFINED  # a non-object on the way


def test_arrays_are_not_traversed():
    assert field_value(DOC, "nested.list.0.c") is UNDEFINED
    assert field_value(DOC, "nested.list") == [{"c": 1}]


@pytest.mark.parametrize("bad", ["", None, 1])
def test_field_needs_a_name(bad):
    with pytest.raises(QueryError, match=r"q\.field"):
        q.field(bad)


# -- comparisons -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "lt"),
    [
        (1, 2, True),
        (2, 1, False),
        (100, 1.5, True),  # every int64 < every float64
        (1.5, "a", True),
        ("Z", "a", True),
        ("z", "é", True),
        (None, 0, True),
        (True, "", True),
        (b"\xff", [], True),
        ([], {}, True),
        (-0.0, 0.0, True),
        (math.inf, math.nan, True),
        ("a", 5, False),
    ],
)
def test_comparisons_use_the_total_order(a, b, lt):
    assert ev(q.lt(a, b)) is lt
    assert ev(q.gte(a, b)) is not lt
    assert ev(q.gt(b, a)) is lt
    assert ev(q.lte(b, a)) is not lt


def test_eq_and_neq_use_total_order_equality():
    assert ev(q.eq(1, 1)) is True
    assert ev(q.eq(1, 1.0)) is False
    assert ev(q.neq(1, 1.0)) is True
    assert ev(q.eq(math.nan, math.nan)) is True
    assert ev(q.eq(-0.0, 0.0)) is False
    assert ev(q.eq(True, 1)) is False
    assert ev(q.eq([1, {"a": 2}], [1, {"a": 2}])) is True
    assert ev(q.lte(3, 3)) is True
    assert ev(q.gte(3, 3)) is True


def test_missing_field_is_lowest():
    assert ev(q.lt(q.field("missing"), 5)) is True
    assert ev(q.lt(q.field("missing"), None)) is True
    assert ev(q.eq(q.field("missing"), UNDEFINED)) is True
    assert ev(q.eq(q.field("missing"), None)) is False
    assert ev(q.eq(q.field("none"), None)) is True
    assert ev(q.lt(q.field("s"), 5)) is False  # a string is above every number


def test_literals_are_normalized():
    assert ev(q.eq(q.field("nested.list"), ({"c": 1},))) is True


def test_literals_must_be_convex_values():
    with pytest.raises(ValidationError):
        q.eq(q.field("a"), {1, 2})


# -- arithmetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        (q.add(2, 3), 5),
        (q.sub(2, 3), -1),
        (q.mul(-4, 3), -12),
        (q.add(q.field("n"), 1), 6),
        (q.add(1.5, 2.0), 3.5),
        (q.sub(1.5, 2.0), -0.5),
        (q.mul(1.5, 2.0), 3.0),
        (q.div(7.0, 2.0), 3.5),
        (q.mod(7.5, 2.0), 1.5),
        (q.mod(-7.5, 2.0), -1.5),
        (q.neg(5), -5),
        (q.neg(q.field("f")), -2.5),
    ],
)
def test_arithmetic(expression, result):
    value = ev(expression)
    assert value == result
    assert type(value) is type(result)


@pytest.mark.parametrize(
    ("a", "b", "quotient", "remainder"),
    [
        (7, 2, 3, 1),
        (-7, 2, -3, -1),
        (7, -2, -3, 1),
        (-7, -2, 3, -1),
        (6, 3, 2, 0),
        (-6, 3, -2, 0),
        (1, 5, 0, 1),
        (-1, 5, 0, -1),
        (INT64_MIN, 1, INT64_MIN, 0),
        (INT64_MAX, -1, -INT64_MAX, 0),
        (INT64_MIN, 2, INT64_MIN // 2, 0),
        (INT64_MIN + 1, 2, -(2**62) + 1, -1),
    ],
)
def test_int_division_truncates_toward_zero_and_remainder_follows_dividend(
    a, b, quotient, remainder
):
    assert ev(q.div(a, b)) == quotient
    assert ev(q.mod(a, b)) == remainder
    assert quotient * b + remainder == a


@pytest.mark.parametrize("name", ["div", "mod"])
def test_int_division_by_zero_is_an_error(name):
    with pytest.raises(QueryError, match="by zero"):
        ev(getattr(q, name)(5, 0))


@pytest.mark.parametrize(
    "expression",
    [
        q.add(INT64_MAX, 1),
        q.sub(INT64_MIN, 1),
        q.mul(INT64_MAX, 2),
        q.mul(2**32, 2**32),
        q.div(INT64_MIN, -1),
        q.neg(INT64_MIN),
    ],
)
def test_int64_overflow_is_an_error(expression):
    with pytest.raises(QueryError, match="overflow"):
        ev(expression)


def test_int64_arithmetic_at_the_bounds_is_fine():
    assert ev(q.add(INT64_MAX - 1, 1)) == INT64_MAX
    assert ev(q.sub(INT64_MIN + 1, 1)) == INT64_MIN
    assert ev(q.neg(INT64_MAX)) == -INT64_MAX


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (1.0, 0.0, math.inf),
        (-1.0, 0.0, -math.inf),
        (1.0, -0.0, -math.inf),
        (-1.0, -0.0, math.inf),
        (math.inf, 0.0, math.inf),
    ],
)
def test_float_division_by_zero_gives_infinity(a, b, expected):
    assert ev(q.div(a, b)) == expected


@pytest.mark.parametrize(("a", "b"), [(0.0, 0.0), (-0.0, 0.0), (math.nan, 0.0), (1.0, math.nan)])
def test_float_division_giving_nan(a, b):
    assert math.isnan(ev(q.div(a, b)))


@pytest.mark.parametrize("a", [1.0, -1.0, 0.0, math.inf, math.nan])
def test_float_mod_by_zero_is_nan(a):
    assert math.isnan(ev(q.mod(a, 0.0)))


@pytest.mark.parametrize("a", [math.inf, -math.inf])
def test_float_mod_of_infinity_is_nan(a):
    # IEEE / Rust `%`: inf % x is NaN.
    assert math.isnan(ev(q.mod(a, 1.0)))


def test_float_mod_by_infinity_returns_the_dividend():
    assert ev(q.mod(1.5, math.inf)) == 1.5
    assert _bits(ev(q.mod(-0.0, 3.0))) == _bits(-0.0)


def test_float_overflow_gives_infinity():
    assert ev(q.mul(1e308, 10.0)) == math.inf
    assert ev(q.add(1e308, 1e308)) == math.inf
    assert ev(q.div(1e308, 1e-10)) == math.inf


def test_neg_of_zero_flips_the_sign():
    assert _bits(ev(q.neg(0.0))) == _bits(-0.0)


@pytest.mark.parametrize(
    "expression",
    [
        q.add(1, 1.0),
        q.sub(1.0, 1),
        q.mul("a", "b"),
        q.div(True, 1),
        q.mod(None, 1),
        q.add(q.field("missing"), 1),
        q.add([1], [2]),
    ],
)
def test_arithmetic_needs_two_int64_or_two_float64(expression):
    with pytest.raises(QueryError, match="both must be int64 or both float64"):
        ev(expression)


def test_arithmetic_error_names_the_types():
    with pytest.raises(QueryError, match=r"Cannot add 1 \(type int64\) and 1\.0 \(type float64\)"):
        ev(q.add(1, 1.0))


@pytest.mark.parametrize("value", ["a", None, True, UNDEFINED, [1]])
def test_neg_needs_a_number(value):
    with pytest.raises(QueryError, match="Cannot negate"):
        ev(q.neg(value))


# -- logic ------------------------------------------------------------------------------------


def test_and_or_not():
    assert ev(q.and_(True, True)) is True
    assert ev(q.and_(True, False)) is False
    assert ev(q.or_(False, True)) is True
    assert ev(q.or_(False, False)) is False
    assert ev(q.not_(True)) is False
    assert ev(q.not_(q.eq(q.field("n"), 4))) is True


def test_empty_and_is_true_and_empty_or_is_false():
    assert ev(q.and_()) is True
    assert ev(q.or_()) is False


def test_logic_combines_comparisons():
    expression = q.and_(q.gt(q.field("n"), 1), q.or_(q.eq(q.field("s"), "y"), q.field("b")))
    assert ev(expression) is True


@pytest.mark.parametrize(
    "expression",
    [
        q.and_(1),
        q.and_(True, "x"),
        q.or_(None),
        q.or_(False, 0),
        q.not_(0),
        q.not_(q.field("missing")),
        q.and_(q.field("n")),
    ],
)
def test_logic_needs_booleans(expression):
    with pytest.raises(QueryError, match="as a Boolean"):
        ev(expression)


def test_and_or_short_circuit():
    # The second operand is not a boolean but is never evaluated.
    assert ev(q.and_(False, 1)) is False
    assert ev(q.or_(True, 1)) is True
    assert ev(q.and_(False, q.div(1, 0))) is False


def test_as_boolean():
    assert as_boolean(True) is True
    assert as_boolean(False) is False
    with pytest.raises(QueryError, match=r"Cannot use value 1 \(int64\) as a Boolean"):
        as_boolean(1)


def test_expressions_are_reusable_across_documents():
    expression = q.gt(q.field("x"), 1)
    assert expression.evaluate({"x": 2}) is True
    assert expression.evaluate({"x": 0}) is False
    assert expression.evaluate({}) is False


def test_base_expression_is_abstract():
    with pytest.raises(NotImplementedError):
        Expression().evaluate({})

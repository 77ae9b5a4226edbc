"""Index ranges: the grammar of SEMANTICS.md §2.2 and the key intervals it compiles to."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest

from kernel_ext.errors import QueryError, ValidationError
from kernel_ext.store.catalog import IndexInfo
from kernel_ext.store.ids import new_id
from kernel_ext.store.keys import encode_key, prefix_end
from kernel_ext.store.ranges import IndexRangeBuilder, KeyRange, RangeOp, compile_range
from kernel_ext.store.values import UNDEFINED, compare

INDEX = IndexInfo("by_ab", 1, ("a", "b"))
KEY_FIELDS = INDEX.key_fields  # ("a", "b", "_creationTime", "_id")
ID = new_id(1)


def _ops(build: Callable[[IndexRangeBuilder], IndexRangeBuilder]) -> list[RangeOp]:
    builder = IndexRangeBuilder()
    assert build(builder) is builder
    return builder.ops


def _compile(build: Callable[[IndexRangeBuilder], IndexRangeBuilder]) -> KeyRange:
    return compile_range("t.by_ab", KEY_FIELDS, _ops(build))


# -- grammar -------------------------------------------------------------------------------

VALID = {
    "whole index": lambda q: q,
    "eq(a)": lambda q: q.eq("a", 1),
    "eq(a).eq(b)": lambda q: q.eq("a", 1).eq("b", 2),
    "eq(a).gt(b)": lambda q: q.eq("a", 1).gt("b", 2),
    "eq(a).gte(b).lt(b)": lambda q: q.eq("a", 1).gte("b", 2).lt("b", 5),
    "gt(a)": lambda q: q.gt("a", 1),
    "lte(a)": lambda q: q.lte("a", 1),
    "gt(a).lt(a)": lambda q: q.gt("a", 1).lt("a", 9),
    "lt(a).gt(a)": lambda q: q.lt("a", 9).gt("a", 1),
    "eq(a).eq(b).eq(_creationTime)": lambda q: q.eq("a", 1).eq("b", 2).eq("_creationTime", 3.0),
    "full key": lambda q: q.eq("a", 1).eq("b", 2).eq("_creationTime", 3.0).eq("_id", ID),
    "eq(a).eq(b).gt(_creationTime)": lambda q: q.eq("a", 1).eq("b", 2).gt("_creationTime", 0.0),
    "eq prefix then bound on _id": (
        lambda q: q.eq("a", 1).eq("b", 2).eq("_creationTime", 3.0).gte("_id", "")
    ),
}

INVALID = {
    "eq on a non-index field": (lambda q: q.eq("c", 1), "comparison with 'c'"),
    "bound on a non-index field": (lambda q: q.gt("c", 1), "comparison with 'c'"),
    "skipping a field": (lambda q: q.eq("b", 1), "field order"),
    "eq out of order": (lambda q: q.eq("b", 1).eq("a", 1), "field order"),
    "eq after a bound": (lambda q: q.gt("a", 1).eq("b", 1), "must come before"),
    "eq after an upper bound": (lambda q: q.lt("a", 1).eq("b", 1), "must come before"),
    "two lower bounds": (lambda q: q.gt("a", 1).gte("a", 2), "two lower bounds"),
    "two upper bounds": (lambda q: q.lt("a", 1).lte("a", 2), "two upper bounds"),
    "bounds on two fields": (lambda q: q.gt("a", 1).lt("b", 2), "field after the .eq"),
    "bound skipping a field": (lambda q: q.gt("b", 1), "field after the .eq"),
    "eq and bound on the same field": (lambda q: q.eq("a", 1).gt("a", 0), "field after the .eq"),
    "eq twice on the same field": (lambda q: q.eq("a", 1).eq("a", 1), "field order"),
    "anything after both bounds": (
        lambda q: q.gt("a", 1).lt("a", 5).gt("a", 2),
        "two lower bounds",
    ),
    "eq after both bounds": (lambda q: q.gt("a", 1).lt("a", 5).eq("b", 2), "must come before"),
    "eq past the full key": (
        lambda q: q.eq("a", 1).eq("b", 2).eq("_creationTime", 3.0).eq("_id", ID).eq("a", 1),
        "expected None",
    ),
    "bound past the full key": (
        lambda q: q.eq("a", 1).eq("b", 2).eq("_creationTime", 3.0).eq("_id", ID).gt("a", 1),
        "field after the .eq",
    ),
}


@pytest.mark.parametrize("build", VALID.values(), ids=VALID.keys())
def test_valid_ranges_compile(build):
    key_range = _compile(build)
    assert isinstance(key_range, KeyRange)


@pytest.mark.parametrize(("build", "message"), INVALID.values(), ids=INVALID.keys())
def test_invalid_ranges_are_rejected(build, message):
    with pytest.raises(QueryError, match=message):
        _compile(build)


def test_error_names_the_index():
    with pytest.raises(QueryError, match=r"t\.by_ab"):
        _compile(lambda q: q.eq("b", 1))


def test_builder_rejects_non_string_fields():
    with pytest.raises(QueryError, match="names"):
        IndexRangeBuilder().eq(1, 1)


def test_builder_normalizes_values():
    ops = _ops(lambda q: q.eq("a", (1, 2)).gt("b", UNDEFINED))
    assert ops == [RangeOp("eq", "a", [1, 2]), RangeOp("gt", "b", UNDEFINED)]


def test_builder_rejects_values_that_are_not_convex_values():
    with pytest.raises(ValidationError):
        IndexRangeBuilder().eq("a", {1, 2})


def test_whole_index_is_everything():
    key_range = _compile(lambda q: q)
    assert key_range.lo == b""
    assert key_range == KeyRange(b"", prefix_end(b""))


def test_key_range_contains_is_half_open():
    key_range = KeyRange(b"b", b"d")
    assert not key_range.contains(b"a")
    assert key_range.contains(b"b")
    assert key_range.contains(b"c\xff")
    assert not key_range.contains(b"d")


def test_ranges_on_the_by_id_and_creation_time_indexes():
    by_id = IndexInfo("by_id", None, ())
    assert by_id.key_fields == ("_id",)
    key_range = compile_range("t.by_id", by_id.key_fields, _ops(lambda q: q.eq("_id", ID)))
    assert key_range.contains(encode_key((ID,)))
    by_time = IndexInfo("by_creation_time", 2, ())
    key_range = compile_range(
        "t.by_creation_time", by_time.key_fields, _ops(lambda q: q.gt("_creationTime", 5.0))
    )
    assert key_range.contains(by_time.key_of({"_id": ID, "_creationTime": 6.0}))
    assert not key_range.contains(by_time.key_of({"_id": ID, "_creationTime": 5.0}))


# -- selection: the intervals pick exactly the right keys ------------------------------------

SAMPLE = [
    UNDEFINED,
    None,
    -5,
    0,
    1,
    2,
    -math.inf,
    -0.0,
    0.0,
    1.0,
    math.nan,
    False,
    True,
    "",
    "a",
    "a\x00",
    "ab",
    "b",
    b"",
    b"\x00",
    b"\xff",
    [],
    [1],
    [1, 2],
    {},
    {"k": 1},
]
B_VALUES = [UNDEFINED, None, 1, "a", [0]]


def _docs() -> list[dict]:
    docs = []
    time = 1.0
    for a, b in itertools.product(SAMPLE, B_VALUES):
        doc = {"_id": new_id(1), "_creationTime": time}
        time += 1.0
        if a is not UNDEFINED:
            doc["a"] = a
        if b is not UNDEFINED:
            doc["b"] = b
        docs.append(doc)
    return docs


DOCS = _docs()
KEYS = [INDEX.key_of(doc) for doc in DOCS]


def _field(doc: dict, name: str):
    return doc.get(name, UNDEFINED)


def _selected(key_range: KeyRange) -> set[int]:
    return {i for i, key in enumerate(KEYS) if key_range.contains(key)}


def _expected(predicate: Callable[[dict], bool]) -> set[int]:
    return {i for i, doc in enumerate(DOCS) if predicate(doc)}


TESTS: dict[str, Callable[[int], bool]] = {
    "eq": lambda c: c == 0,
    "gt": lambda c: c > 0,
    "gte": lambda c: c >= 0,
    "lt": lambda c: c < 0,
    "lte": lambda c: c <= 0,
}


@pytest.mark.parametrize("op", list(TESTS))
def test_single_comparison_on_first_field_selects_exactly(op):
    for x in SAMPLE:
        key_range = _compile(lambda q, x=x: getattr(q, op)("a", x))
        expected = _expected(lambda d, x=x: TESTS[op](compare(_field(d, "a"), x)))
        assert _selected(key_range) == expected, (op, x)


def test_eq_undefined_matches_missing_fields_only():
    selected = _selected(_compile(lambda q: q.eq("a", UNDEFINED)))
    assert selected
    assert all("a" not in DOCS[i] for i in selected)
    assert selected == {i for i, d in enumerate(DOCS) if "a" not in d}


def test_eq_null_matches_explicit_nulls_only():
    selected = _selected(_compile(lambda q: q.eq("a", None)))
    assert selected == {i for i, d in enumerate(DOCS) if "a" in d and d["a"] is None}


def test_gt_undefined_and_gte_null_select_documents_with_the_field():
    with_field = {i for i, d in enumerate(DOCS) if "a" in d}
    assert _selected(_compile(lambda q: q.gt("a", UNDEFINED))) == with_field
    assert _selected(_compile(lambda q: q.gte("a", None))) == with_field


def test_number_range_never_matches_other_types():
    selected = _selected(_compile(lambda q: q.gte("a", 0).lte("a", 2)))
    assert {type(DOCS[i]["a"]) for i in selected} == {int}
    assert {DOCS[i]["a"] for i in selected} == {0, 1, 2}


@pytest.mark.parametrize(("lower", "upper"), [("gt", "lt"), ("gte", "lte"), ("gt", "lte")])
def test_two_sided_ranges_select_exactly(lower, upper):
    for x, y in itertools.product(SAMPLE[::2], SAMPLE[1::2]):
        key_range = _compile(lambda q, x=x, y=y: getattr(getattr(q, lower)("a", x), upper)("a", y))
        expected = _expected(
            lambda d, x=x, y=y: (
                TESTS[lower](compare(_field(d, "a"), x))
                and TESTS[upper](compare(_field(d, "a"), y))
            )
        )
        assert _selected(key_range) == expected, (lower, x, upper, y)


@pytest.mark.parametrize("op", list(TESTS))
def test_bound_after_eq_prefix_selects_exactly(op):
    for x, y in itertools.product(SAMPLE[::3], B_VALUES):
        key_range = _compile(lambda q, x=x, y=y: getattr(q.eq("a", x), op)("b", y))
        expected = _expected(
            lambda d, x=x, y=y: (
                compare(_field(d, "a"), x) == 0 and TESTS[op](compare(_field(d, "b"), y))
            )
        )
        assert _selected(key_range) == expected, (x, op, y)


def test_eq_on_both_fields_selects_exactly():
    for x, y in itertools.product(SAMPLE, B_VALUES):
        key_range = _compile(lambda q, x=x, y=y: q.eq("a", x).eq("b", y))
        expected = _expected(
            lambda d, x=x, y=y: compare(_field(d, "a"), x) == 0 and compare(_field(d, "b"), y) == 0
        )
        assert len(expected) == 1
        assert _selected(key_range) == expected


def test_full_key_selects_one_document():
    doc = DOCS[7]
    key_range = _compile(
        lambda q: (
            q.eq("a", _field(doc, "a"))
            .eq("b", _field(doc, "b"))
            .eq("_creationTime", doc["_creationTime"])
            .eq("_id", doc["_id"])
        )
    )
    assert _selected(key_range) == {7}


def test_creation_time_bound_after_full_user_prefix():
    a, b = "a", 1
    key_range = _compile(lambda q: q.eq("a", a).eq("b", b).lte("_creationTime", 1000.0))
    expected = _expected(
        lambda d: d.get("a") == "a" and type(d.get("a")) is str and d.get("b") == 1
    )
    assert _selected(key_range) == expected


def test_empty_range_when_bounds_cross():
    assert _selected(_compile(lambda q: q.gt("a", 5).lt("a", 1))) == set()
    assert _selected(_compile(lambda q: q.gt("a", 1).lt("a", 1))) == set()
    assert _selected(_compile(lambda q: q.gte("a", 1).lte("a", 1))) == _expected(
        lambda d: compare(_field(d, "a"), 1) == 0
    )

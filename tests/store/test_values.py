"""Convex values: normalizing, limits, size, the total order and Convex JSON (SEMANTICS.md §3)."""

from __future__ import annotations

import base64
import functools
import itertools
import math
import struct
from collections import OrderedDict

import orjson
import pytest

from kernel_ext.errors import ValidationError
from kernel_ext.store.values import (
    INT64_MAX,
    INT64_MIN,
    MAX_ARRAY_LENGTH,
    MAX_NESTING,
    MAX_OBJECT_FIELDS,
    UNDEFINED,
    Undefined,
    compare,
    convex_size,
    dumps_json,
    float_total_order_bits,
    from_json,
    normalize,
    to_json,
    type_name,
    type_rank,
    value_repr,
)


def _float_from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


NEG_NAN = _float_from_bits(0xFFF8_0000_0000_0000)
POS_NAN = _float_from_bits(0x7FF8_0000_0000_0000)
POS_NAN_PAYLOAD = _float_from_bits(0x7FF8_0000_0000_0001)


def _nested_lists(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


# ---------------------------------------------------------------------------------------------
# UNDEFINED


def test_undefined_is_a_falsy_singleton():
    assert Undefined() is UNDEFINED
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"


def test_undefined_survives_pickle_as_the_same_object():
    import pickle

    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED


# ---------------------------------------------------------------------------------------------
# normalize


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -1, INT64_MIN, INT64_MAX, 1.5, -0.0, math.inf, "", "é", b"", b"\x00"],
)
def test_normalize_keeps_scalars(value):
    out = normalize(value)
    assert out is value or out == value
    assert type(out) is type(value)


def test_normalize_keeps_nan():
    assert math.isnan(normalize(math.nan))


def test_normalize_tuples_become_lists_recursively():
    assert normalize((1, (2, 3), [4, (5,)])) == [1, [2, 3], [4, [5]]]
    assert type(normalize((1,))) is list


def test_normalize_buffers_become_bytes():
    assert normalize(bytearray(b"ab")) == b"ab"
    assert type(normalize(bytearray(b"ab"))) is bytes
    assert normalize(memoryview(b"cd")) == b"cd"
    assert type(normalize(memoryview(b"cd"))) is bytes


def test_normalize_returns_a_private_copy():
    inner = [1, 2]
    original = {"a": inner, "b": {"c": 1}}
    out = normalize(original)
    assert out == original
    assert out["a"] is not inner
    out["b"]["c"] = 2
    assert original["b"]["c"] == 1


def test_normalize_accepts_any_mapping_and_returns_dict():
    out = normalize(OrderedDict([("a", 1)]))
    assert out == {"a": 1}
    assert type(out) is dict


def test_normalize_drops_undefined_fields_at_every_depth():
    assert normalize({"a": UNDEFINED, "b": 1, "c": {"d": UNDEFINED}}) == {"b": 1, "c": {}}


def test_normalize_drops_undefined_fields_without_checking_their_names():
    assert normalize({"$not a name": UNDEFINED, "b": 1}) == {"b": 1}


def test_normalize_rejects_undefined_in_arrays():
    with pytest.raises(ValidationError, match=r"undefined is not a valid Convex value.*\.a\[1\]"):
        normalize({"a": [1, UNDEFINED]})


def test_normalize_rejects_top_level_undefined():
    with pytest.raises(ValidationError, match="undefined is not a valid Convex value"):
        normalize(UNDEFINED)


def test_normalize_int64_range_is_inclusive():
    assert normalize(INT64_MAX) == INT64_MAX
    assert normalize(INT64_MIN) == INT64_MIN
    with pytest.raises(ValidationError, match="outside int64"):
        normalize(INT64_MAX + 1)
    with pytest.raises(ValidationError, match=r"at \.x is outside int64"):
        normalize({"x": INT64_MIN - 1})


def test_normalize_keeps_bool_distinct_from_int():
    out = normalize([True, 1, False, 0])
    assert [type(x) for x in out] == [bool, int, bool, int]


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\udc00\ud800"])
def test_normalize_rejects_lone_surrogates(text):
    with pytest.raises(ValidationError, match="not valid Unicode"):
        normalize({"s": text})


def test_normalize_accepts_astral_characters_and_nul():
    assert normalize("\U0001f600\x00") == "\U0001f600\x00"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Empty field name"),
        ("$a", "starts with '\\$'"),
        ("é", "printable ASCII"),
        ("a\x00", "printable ASCII"),
        ("tab\there", "printable ASCII"),
        ("del\x7f", "printable ASCII"),
        ("x" * 1025, "longer than 1024"),
    ],
)
def test_normalize_rejects_bad_field_names(name, message):
    with pytest.raises(ValidationError, match=message):
        normalize({name: 1})
    with pytest.raises(ValidationError, match=message):
        normalize({"outer": [{name: 1}]})


def test_normalize_rejects_non_string_keys():
    with pytest.raises(ValidationError, match="Object keys must be strings"):
        normalize({1: "a"})


@pytest.mark.parametrize("name", ["a", "A_b-c d", "x" * 1024, "_id", "a$", "~!@#"])
def test_normalize_accepts_good_field_names(name):
    assert normalize({name: 1}) == {name: 1}


def test_field_name_error_names_the_path():
    with pytest.raises(ValidationError, match=r"at \.a\.b"):
        normalize({"a": {"b": {"$bad": 1}}})
    with pytest.raises(ValidationError, match="at top level"):
        normalize({"": 1})


def test_nesting_limit_counts_containers():
    assert MAX_NESTING == 16
    assert normalize(_nested_lists(16)) == _nested_lists(16)
    with pytest.raises(ValidationError, match="too nested"):
        normalize(_nested_lists(17))


def test_nesting_limit_counts_the_document_itself():
    # Convex: a document holding 15 nested arrays has 16 levels (ok); 16 arrays make 17.
    assert normalize({"x": _nested_lists(15)})
    with pytest.raises(ValidationError, match="too nested"):
        normalize({"x": _nested_lists(16)})
    mixed: object = 1
    for i in range(17):
        mixed = {"k": mixed} if i % 2 else [mixed]
    with pytest.raises(ValidationError, match="too nested"):
        normalize(mixed)


def test_array_length_limit():
    assert MAX_ARRAY_LENGTH == 8192
    assert len(normalize([0] * 8192)) == 8192
    with pytest.raises(ValidationError, match="8193 elements"):
        normalize({"a": [0] * 8193})
    with pytest.raises(ValidationError, match="top level"):
        normalize(tuple([0] * 8193))


def test_object_field_limit():
    assert MAX_OBJECT_FIELDS == 1024
    wide = {f"f{i}": 0 for i in range(1024)}
    assert normalize(wide) == wide
    with pytest.raises(ValidationError, match="more than 1024 fields"):
        normalize({**wide, "one_more": 0})


@pytest.mark.parametrize("value", [{1, 2}, frozenset(), object(), 1j, range(3), type])
def test_normalize_rejects_unsupported_types(value):
    with pytest.raises(ValidationError, match="not a supported Convex value"):
        normalize({"a": value})


def test_normalize_rejects_subclasses_of_supported_types():
    class MyInt(int):
        pass

    with pytest.raises(ValidationError, match="not a supported Convex value"):
        normalize(MyInt(1))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, {"b": INT64_MAX + 1}]}, r"at \.a\[1\]\.b is outside int64"),
        ({"a": ["\ud800"]}, r"String at \.a\[0\] is not valid Unicode"),
        ({"a": {"$b": 1}}, r"at \.a starts with"),
        ({"a": [UNDEFINED]}, r"array element \.a\[0\]"),
        ({"a": {1, 2}}, r"at \.a is not a supported"),
        (_nested_lists(17), "too nested"),
    ],
)
def test_normalize_errors_name_the_path(value, message):
    with pytest.raises(ValidationError, match=message):
        normalize(value)


# ---------------------------------------------------------------------------------------------
# size


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (None, 1),
        (True, 1),
        (False, 1),
        (0, 9),
        (INT64_MIN, 9),
        (1.5, 9),
        (math.nan, 9),
        ("", 2),
        ("abc", 5),
        ("é", 4),  # 2 UTF-8 bytes
        ("\U0001f600", 6),
        (b"", 2),
        (b"\x00\xff", 4),
        ([], 2),
        ([1, "a"], 2 + 9 + 3),
        ({}, 2),
        ({"ab": 1}, 2 + 2 + 1 + 9),
        ({"a": {"b": [None]}}, 2 + (1 + 1 + (2 + (1 + 1 + (2 + 1))))),
    ],
)
def test_convex_size(value, size):
    assert convex_size(value) == size


# ---------------------------------------------------------------------------------------------
# type rank and names


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (UNDEFINED, "undefined"),
        (None, "null"),
        (1, "int64"),
        (1.0, "float64"),
        (True, "boolean"),
        ("s", "string"),
        (b"b", "bytes"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_type_names(value, name):
    assert type_name(value) == name


def test_type_rank_rejects_unsupported_values():
    with pytest.raises(ValidationError, match="not a supported Convex value"):
        type_rank({1})
    with pytest.raises(ValidationError):
        type_name(object())


def test_value_repr_truncates():
    assert value_repr("x") == "'x'"
    text = value_repr("y" * 500, limit=50)
    assert len(text) == 50
    assert text.endswith("...")


# ---------------------------------------------------------------------------------------------
# compare: the total order

# One representative list in ascending order, spanning every type.
ASCENDING = [
    UNDEFINED,
    None,
    INT64_MIN,
    -1,
    0,
    1,
    INT64_MAX,
    NEG_NAN,
    -math.inf,
    -1e308,
    -1.0,
    -5e-324,
    -0.0,
    0.0,
    5e-324,
    1.0,
    1.5,
    1e308,
    math.inf,
    POS_NAN,
    POS_NAN_PAYLOAD,
    False,
    True,
    "",
    "\x00",
    "A",
    "Z",
    "a",
    "a\x00",
    "ab",
    "b",
    "z",
    "\x7f",
    "é",
    "\uffff",
    "\U0001f600",
    b"",
    b"\x00",
    b"\x00\x00",
    b"\x01",
    b"\xff",
    [],
    [None],
    [0],
    [0, 0],
    [0, 1],
    [1],
    [1.0],
    ["a"],
    [[]],
    [{}],
    {},
    {"a": None},
    {"a": 1},
    {"a": 1, "b": 0},
    {"a": 2},
    {"a": "x"},
    {"aa": 0},
    {"b": 0},
]


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def test_total_order_of_representatives():
    for i, a in enumerate(ASCENDING):
        for j, b in enumerate(ASCENDING):
            assert compare(a, b) == _sign(i - j), (a, b)


def test_sorting_with_compare_is_the_total_order():
    shuffled = ASCENDING[::3] + ASCENDING[1::3] + ASCENDING[2::3]
    ordered = sorted(shuffled, key=functools.cmp_to_key(compare))
    assert [compare(a, b) for a, b in zip(ordered, ASCENDING, strict=True)] == [0] * len(ASCENDING)


def test_type_order_undefined_null_int_float_bool_string_bytes_array_object():
    chain = [UNDEFINED, None, INT64_MAX, -math.inf, False, "", b"", [], {}]
    for lower, higher in itertools.pairwise(chain):
        assert compare(lower, higher) == -1
        assert compare(higher, lower) == 1


def test_any_int_is_below_any_float():
    assert compare(100, 1.5) == -1
    assert compare(INT64_MAX, NEG_NAN) == -1


def test_int_and_float_equal_numbers_are_different_values():
    assert compare(1, 1.0) != 0
    assert compare(0, 0.0) != 0


def test_bool_is_not_int():
    assert compare(True, 1) == 1
    assert compare(False, 0) == 1
    assert compare(False, True) == -1


def test_negative_zero_is_below_positive_zero():
    assert compare(-0.0, 0.0) == -1
    assert compare(0.0, -0.0) == 1
    assert compare(-0.0, -0.0) == 0


def test_nan_ordering_and_equality():
    assert compare(POS_NAN, POS_NAN) == 0
    assert compare(math.nan, float("nan")) == 0
    assert compare(POS_NAN, math.inf) == 1
    assert compare(NEG_NAN, -math.inf) == -1
    assert compare(NEG_NAN, POS_NAN) == -1
    assert compare(POS_NAN, POS_NAN_PAYLOAD) == -1


def test_strings_compare_by_utf8_bytes_not_code_points():
    assert compare("Z", "a") == -1
    assert compare("z", "é") == -1
    # U+FFFF (EF BF BF) sorts below U+1F600 (F0 ...) in UTF-8, unlike UTF-16 code units.
    assert compare("\uffff", "\U0001f600") == -1
    assert compare("a", "a") == 0


def test_bytes_compare_bytewise():
    assert compare(b"\x00", b"\x00\x00") == -1
    assert compare(b"\xff", b"\x00\xff") == 1


def test_arrays_are_lexicographic_with_prefix_first():
    assert compare([1, 2], [1, 2, 0]) == -1
    assert compare([1, 3], [1, 2, 0]) == 1
    assert compare([[1]], [[1], 0]) == -1
    assert compare([1, "a"], [1, "a"]) == 0


def test_objects_compare_by_sorted_key_value_pairs():
    # Insertion order does not matter.
    assert compare({"b": 1, "a": 2}, {"a": 2, "b": 1}) == 0
    # First key name decides before values.
    assert compare({"a": 100}, {"b": 0}) == -1
    # Same key: the value decides.
    assert compare({"a": 1}, {"a": 2}) == -1
    # Fewer pairs sort first.
    assert compare({"a": 1}, {"a": 1, "b": None}) == -1
    # Keys are compared bytewise (UTF-8): "Z" < "a".
    assert compare({"Z": 5}, {"a": 0}) == -1
    # The second pair decides when the first is equal.
    assert compare({"a": 1, "c": 0}, {"a": 1, "b": 9}) == 1


def test_compare_rejects_unsupported_values():
    with pytest.raises(ValidationError):
        compare({1}, 1)


def test_float_total_order_bits_is_monotonic():
    values = [NEG_NAN, -math.inf, -1.0, -0.0, 0.0, 1.0, math.inf, POS_NAN]
    bits = [float_total_order_bits(x) for x in values]
    assert bits == sorted(bits)
    assert len(set(bits)) == len(bits)


# ---------------------------------------------------------------------------------------------
# Convex JSON


def _b64_le(fmt: str, x: float | int) -> str:
    return base64.b64encode(struct.pack(fmt, x)).decode()


def test_to_json_encodes_ints_as_integer_objects():
    assert to_json(1) == {"$integer": "AQAAAAAAAAA="}
    assert to_json(-1) == {"$integer": _b64_le("<q", -1)}
    assert to_json(INT64_MIN) == {"$integer": _b64_le("<q", INT64_MIN)}


def test_to_json_keeps_plain_values():
    assert to_json(None) is None
    assert to_json(True) is True
    assert to_json("s") == "s"
    assert to_json(1.5) == 1.5
    assert to_json(0.0) == 0.0
    assert type(to_json(0.0)) is float


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf, -0.0])
def test_to_json_encodes_special_floats(x):
    assert to_json(x) == {"$float": _b64_le("<d", x)}


def test_to_json_encodes_bytes_and_recurses():
    assert to_json(b"\x00\xff") == {"$bytes": "AP8="}
    assert to_json({"a": [1, b"", 2.0]}) == {
        "a": [{"$integer": "AQAAAAAAAAA="}, {"$bytes": ""}, 2.0]
    }


ROUND_TRIP = [
    None,
    True,
    False,
    0,
    1,
    -1,
    INT64_MAX,
    INT64_MIN,
    0.0,
    -0.0,
    1.5,
    -2.25,
    5e-324,
    1e308,
    math.inf,
    -math.inf,
    POS_NAN,
    NEG_NAN,
    POS_NAN_PAYLOAD,
    "",
    "é\x00",
    b"",
    b"\x00\xff",
    [],
    [1, 1.0, [b"x", {"k": -0.0}]],
    {},
    {"a": {"b": [None, True, 3]}, "c": "d"},
]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_json_round_trip_is_exact(value):
    back = from_json(orjson.loads(orjson.dumps(to_json(value))))
    assert compare(back, value) == 0
    assert type(back) is type(value)
    if type(value) is float:
        assert _bits(back) == _bits(value)


def test_dumps_json_is_the_serialized_to_json():
    assert orjson.loads(dumps_json({"a": 1, "b": math.nan})) == to_json({"a": 1, "b": math.nan})


def test_from_json_plain_numbers_are_floats():
    assert from_json(3) == 3.0
    assert type(from_json(3)) is float
    assert from_json([1, {"a": 2}]) == [1.0, {"a": 2.0}]
    assert type(from_json({"a": 2})["a"]) is float


def test_from_json_finite_float_object_is_accepted():
    assert from_json({"$float": _b64_le("<d", 2.5)}) == 2.5


def test_from_json_single_non_special_key_is_an_object():
    assert from_json({"a": "x"}) == {"a": "x"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"$integer": "AQAA"}, "expected 8 bytes"),
        ({"$integer": base64.b64encode(b"\x00" * 9).decode()}, "expected 8 bytes"),
        ({"$float": "AAAA"}, "expected 8 bytes"),
        ({"$integer": "not base64!"}, "not base64"),
        ({"$bytes": "@@@@"}, "not base64"),
        ({"$bytes": 5}, "not base64"),
        ({"$float": None}, "not base64"),
        ({"$unknown": "AAAA"}, "Unknown special"),
        ([{"$integer": "A"}], "not base64"),
    ],
)
def test_from_json_rejects_malformed_specials(data, message):
    with pytest.raises(ValidationError, match=message):
        from_json(data)


# -- values that are not stored: nesting and key types -----------------------------------


def test_unstored_values_nest_at_most_max_value_nesting_levels():
    from kernel_ext.store.values import MAX_VALUE_NESTING

    assert MAX_VALUE_NESTING == 64
    assert normalize(_nested_lists(64), limits=False) == _nested_lists(64)
    with pytest.raises(ValidationError, match=r"Value is too nested \(more than 64 levels\)"):
        normalize(_nested_lists(65), limits=False)
    # 900 levels: a message, not a RecursionError, and a short path in it.
    with pytest.raises(ValidationError, match="nest at most 64 levels") as info:
        normalize(_nested_lists(900), limits=False)
    assert len(str(info.value)) < 300
    with pytest.raises(ValidationError, match="Document is too nested"):
        normalize(_nested_lists(900))


def test_convex_json_nests_at_most_max_value_nesting_levels():
    deep: object = 1
    for _ in range(64):
        deep = [deep]
    assert from_json(deep) is not None
    for _ in range(2000):
        deep = {"k": deep}
    with pytest.raises(ValidationError, match="too nested"):
        from_json(deep)


class _Key(str):
    """A str subclass, as enums and config libraries make them."""


def test_str_subclass_keys_become_plain_strings():
    value = normalize({_Key("a"): {_Key("b"): 1.0}}, limits=False)
    assert value == {"a": {"b": 1.0}}
    assert all(type(k) is str for k in (*value, *value["a"]))
    assert orjson.loads(dumps_json(value)) == {"a": {"b": 1.0}}
    stored = normalize({_Key("name"): "x"})
    assert [type(k) for k in stored] == [str]
    with pytest.raises(ValidationError, match="must be printable ASCII"):
        normalize({_Key("é"): 1.0})


def test_the_codec_refuses_an_unnormalized_document_with_a_message():
    from kernel_ext.store.codec import encode_document

    with pytest.raises(ValidationError, match="not a Convex value"):
        encode_document({"x": b"bytes", "y": object()})

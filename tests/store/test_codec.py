"""The storage encoding of documents: exact round trips, int vs float, bytes, special floats."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_ext.store.codec import decode_document, encode_document
from kernel_ext.store.values import INT64_MAX, INT64_MIN, compare, normalize


def _float_from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


NANS = [
    _float_from_bits(b)
    for b in (0x7FF8_0000_0000_0000, 0xFFF8_0000_0000_0000, 0x7FF0_0000_0000_0001)
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MAX, 0, -1, 2**53 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, 5e-324, 1e308, 0.1, 1e16, *NANS]),
    st.text(max_size=10),
    st.binary(max_size=10),
)
# Valid Convex field names: printable ASCII, not starting with '$'.
field_names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=6
).filter(lambda s: not s.startswith("$"))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(field_names, children, max_size=4)
    ),
    max_leaves=15,
)
documents = st.dictionaries(field_names, values, max_size=6)


def _identical(a, b) -> bool:
    """Same Convex value, including types, float bits (NaN payloads, -0.0) and key order."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return _bits(a) == _bits(b)
    if type(a) is list:
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(_identical(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(documents)
def test_round_trip_is_exact(doc):
    doc = normalize(doc)
    back = decode_document(encode_document(doc))
    assert _identical(back, doc)
    assert compare(back, doc) == 0


@pytest.mark.parametrize(
    "doc",
    [
        {"i": 1, "f": 1.0, "big": INT64_MAX, "small": INT64_MIN, "z": -0.0},
        {"nan": math.nan, "inf": math.inf, "ninf": -math.inf},
        {"b": b"\x00\xff", "nested": [{"b": b""}, [math.nan]]},
        {"s": "é\x00\U0001f600", "n": None, "t": True},
        {},
    ],
)
def test_examples_round_trip(doc):
    assert _identical(decode_document(encode_document(doc)), doc)


def test_int_and_float_stay_distinct():
    back = decode_document(encode_document({"i": 1, "f": 1.0, "l": [2, 2.0]}))
    assert type(back["i"]) is int
    assert type(back["f"]) is float
    assert [type(x) for x in back["l"]] == [int, float]


def test_plain_documents_use_the_plain_marker():
    assert encode_document({"a": 1, "z": -0.0}).startswith(b"\x00")


@pytest.mark.parametrize(
    "doc", [{"a": b"x"}, {"a": math.nan}, {"a": [math.inf]}, {"a": {"b": -math.inf}}]
)
def test_documents_with_bytes_or_special_floats_are_tagged(doc):
    body = encode_document(doc)
    assert body.startswith(b"\x01")
    assert _identical(decode_document(body), doc)


def test_nan_payload_and_sign_survive():
    for nan in NANS:
        back = decode_document(encode_document({"x": nan}))["x"]
        assert _bits(back) == _bits(nan)

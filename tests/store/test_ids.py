"""Document ids: opaque strings that encode their table; strict decoding."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_ext.store import ids
from kernel_ext.store.ids import decode_id, new_id, table_number_of

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
TABLE_NUMBERS = [0, 1, 2, 127, 128, 255, 16383, 16384, 2**20, 2**21 - 1, 2**21, 2**28, 2**32 - 1]


def _fixed_id(table_number: int, internal: bytes = bytes(range(16))) -> str:
    """A deterministic, well-formed id (same layout as new_id, without randomness)."""
    body = ids._vint(table_number) + internal
    return ids._encode(body + ids._fletcher16(body))


@pytest.mark.parametrize("number", TABLE_NUMBERS)
def test_new_id_round_trips(number):
    for _ in range(20):
        text = new_id(number)
        decoded = decode_id(text)
        assert decoded is not None
        assert decoded[0] == number
        assert len(decoded[1]) == 16
        assert table_number_of(text) == number


@pytest.mark.parametrize("number", TABLE_NUMBERS)
def test_ids_use_the_lowercase_crockford_alphabet_and_length(number):
    text = new_id(number)
    assert set(text) <= set(ALPHABET)
    assert 31 <= len(text) <= 37


def test_small_table_ids_are_32_or_fewer_chars():
    assert len(new_id(1)) == 31
    assert len(new_id(128)) == 32


def test_new_ids_are_unique():
    assert len({new_id(1) for _ in range(1000)}) == 1000


def test_fixed_id_matches_new_id_layout():
    text = _fixed_id(5)
    assert decode_id(text) == (5, bytes(range(16)))


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        5,
        b"0" * 31,
        ["x"],
        "",
        "abc",
        "0" * 30,
        "0" * 38,
        "I" * 31,  # not in the alphabet
        "é" * 31,
        "not an id but 31 chars long!!!!",
        "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
    ],
)
def test_garbage_is_rejected(garbage):
    assert decode_id(garbage) is None
    assert table_number_of(garbage) is None


def test_truncated_and_extended_ids_are_rejected():
    text = _fixed_id(1)
    for n in range(1, len(text)):
        assert decode_id(text[:-n]) is None
    assert decode_id(text + "0") is None
    assert decode_id("0" + text) is None


def test_every_single_character_change_is_rejected():
    for number in (1, 300, 2**20):
        text = _fixed_id(number)
        for i, original in enumerate(text):
            for replacement in "0z7":
                if replacement == original:
                    continue
                altered = text[:i] + replacement + text[i + 1 :]
                assert decode_id(altered) is None, (number, i, replacement)


def test_uppercase_is_rejected():
    text = _fixed_id(1)
    assert decode_id(text.upper()) is None


def test_bad_checksum_is_rejected():
    body = ids._vint(1) + bytes(16)
    footer = ids._fletcher16(body)
    bad = bytes(((footer[0] + 1) % 256, footer[1]))
    assert decode_id(ids._encode(body + bad)) is None


def test_non_canonical_vint_is_rejected():
    # 1 encoded with a redundant continuation byte: 0x81 0x00.
    body = b"\x81\x00" + bytes(16)
    assert decode_id(ids._encode(body + ids._fletcher16(body))) is None


def test_vint_running_past_the_table_number_is_rejected():
    # Every byte has the continuation bit: the VInt never ends before the internal id.
    body = b"\x80" * 3 + bytes(16)
    assert decode_id(ids._encode(body + ids._fletcher16(body))) is None


def test_all_zero_payload_is_table_zero():
    # The format reserves no values: 17 zero bytes (VInt 0 + 16 zero bytes) with a zero
    # checksum is a well-formed id of table 0, written as 31 zeros.
    assert decode_id("0" * 31) == (0, bytes(16))


@given(st.binary(min_size=0, max_size=40))
def test_encoding_is_base32_in_the_id_alphabet(raw):
    expected = (
        base64.b32encode(raw)
        .decode()
        .rstrip("=")
        .translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET))
    )
    assert ids._encode(raw) == expected


@given(st.binary(min_size=0, max_size=40))
def test_checksum_is_fletcher16(raw):
    a = b = 0
    for byte in raw:
        a = (a + byte) % 255
        b = (b + a) % 255
    assert ids._fletcher16(raw) == bytes((a, b))

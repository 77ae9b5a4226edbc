"""Document ids: opaque strings that encode their table.

Layout (like Convex's v6 ids): VInt(table number) ++ 16 random bytes ++ 2-byte footer (a
Fletcher-16 checksum of the preceding bytes), written in base32 with Crockford's lowercase
alphabet. Decoding is strict: a string decodes only if it re-encodes to itself, so garbage,
truncated or altered ids are rejected.
"""

from __future__ import annotations

import base64
import functools
import operator
import secrets
from typing import Final

__all__ = ["decode_id", "new_id", "table_number_of"]

_RFC_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ID_ALPHABET: Final = b"0123456789abcdefghjkmnpqrstvwxyz"
_FROM_ID: Final = bytes.maketrans(_ID_ALPHABET, _RFC_ALPHABET)
_INTERNAL_LEN: Final = 16
_MIN_LEN: Final = 31
_MAX_LEN: Final = 37


def _vint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fletcher16(data: bytes) -> bytes:
    # Fletcher-16 in closed form: a = sum of the bytes, b = sum of the running sums of a, which
    # counts byte i (0-based) n - i times (both mod 255).
    n = len(data)
    return bytes((sum(data) % 255, sum(map(operator.mul, data, range(n, 0, -1))) % 255))


#: Every 10-bit group as its two id characters: encoding takes one lookup per two characters.
_PAIRS: Final = [a + b for a in _ID_ALPHABET.decode() for b in _ID_ALPHABET.decode()]


def _encode(raw: bytes) -> str:
    """Unpadded base32 of `raw` in the id alphabet (what `b32encode` + `translate` gives)."""
    bits = len(raw) * 8
    pad = -bits % 10  # whole pairs of 5-bit characters; the extra one is cut off below
    value = int.from_bytes(raw, "big") << pad
    pairs = _PAIRS
    out = []
    for shift in range(bits + pad - 10, -1, -10):
        out.append(pairs[(value >> shift) & 0x3FF])
    return "".join(out)[: (bits + 4) // 5]


def new_id(table_number: int) -> str:
    """A fresh random id for a document of the table with that number (0 <= n < 2**32)."""
    if not 0 <= table_number < 2**32:
        raise ValueError(f"table number {table_number} is outside 0..2**32-1")
    body = _vint(table_number) + secrets.token_bytes(_INTERNAL_LEN)
    return _encode(body + _fletcher16(body))


def decode_id(text: object) -> tuple[int, bytes] | None:
    """Return `(table number, internal bytes)` if `text` is a well-formed id, else None."""
    if not isinstance(text, str):
        return None
    return _decode(text)


@functools.lru_cache(maxsize=1 << 16)
def _decode(text: str) -> tuple[int, bytes] | None:
    if not isinstance(text, str) or not _MIN_LEN <= len(text) <= _MAX_LEN or not text.isascii():
        return None
    encoded = text.encode("ascii")
    padded = encoded.translate(_FROM_ID) + b"=" * (-len(encoded) % 8)
    try:
        raw = base64.b32decode(padded)
    except ValueError:
        return None
    if _encode(raw) != text or len(raw) < _INTERNAL_LEN + 3:
        return None
    body, footer = raw[:-2], raw[-2:]
    if _fletcher16(body) != footer:
        return None
    number, shift, pos = 0, 0, 0
    while pos < len(body) - _INTERNAL_LEN:
        byte = body[pos]
        number |= (byte & 0x7F) << shift
        shift += 7
        pos += 1
        if not byte & 0x80:
            break
    if pos != len(body) - _INTERNAL_LEN or _vint(number) != body[:pos]:
        return None
    return number, body[pos:]


def table_number_of(text: object) -> int | None:
    """The table number encoded in an id, or None if `text` is not an id."""
    decoded = decode_id(text)
    return None if decoded is None else decoded[0]

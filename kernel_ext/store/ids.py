"""Document ids: opaque strings that encode their table.

Layout (like Convex's v6 ids): VInt(table number) ++ 16 random bytes ++ 2-byte footer (a
Fletcher-16 checksum of the preceding bytes), written in base32 with Crockford's lowercase
alphabet. Decoding is strict: a string decodes only if it re-encodes to itself, so garbage,
truncated or altered ids are rejected.
"""

from __future__ import annotations

import base64
import functools
import secrets
from typing import Final

__all__ = ["decode_id", "new_id", "table_number_of"]

_RFC_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ID_ALPHABET: Final = b"0123456789abcdefghjkmnpqrstvwxyz"
_TO_ID: Final = bytes.maketrans(_RFC_ALPHABET, _ID_ALPHABET)
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
    a = b = 0
    for byte in data:
        a = (a + byte) % 255
        b = (b + a) % 255
    return bytes((a, b))


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw).translate(_TO_ID).rstrip(b"=").decode("ascii")


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

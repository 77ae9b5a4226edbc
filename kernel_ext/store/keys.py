"""Order-preserving byte encoding of values and index keys.

`encode_value(a) < encode_value(b)` (bytewise) exactly when `compare(a, b) < 0`, so SQLite's
B-tree orders index entries in Convex's total order, index ranges are byte ranges, and read-set
checks are byte comparisons. Tuple-layer style: a type tag per value, numbers as fixed-width
big-endian with sign tricks, strings/bytes with 0x00 escaped as 0x00 0xFF and a 0x00
terminator, arrays and objects as their elements followed by 0x00. No encoding starts with
0xFF, so `prefix + b"\\xff"` is above every key that extends `prefix` with another value.
"""

from __future__ import annotations

import struct
from typing import Final

from kernel_ext.store.values import UNDEFINED, Value, float_total_order_bits, type_name

__all__ = ["KEY_MAX", "encode_key", "encode_value", "key_successor", "prefix_end"]

TAG_UNDEFINED: Final = b"\x01"
TAG_NULL: Final = b"\x03"
TAG_INT: Final = b"\x04"
TAG_FLOAT: Final = b"\x0d"
TAG_FALSE: Final = b"\x0e"
TAG_TRUE: Final = b"\x0f"
TAG_STRING: Final = b"\x10"
TAG_BYTES: Final = b"\x11"
TAG_ARRAY: Final = b"\x12"
TAG_OBJECT: Final = b"\x15"
END: Final = b"\x00"
KEY_MAX: Final = b"\xff"

_pack_q = struct.Struct(">Q").pack


def _escaped(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + END


def encode_value(value: Value) -> bytes:
    """Encode one value (or `UNDEFINED`) so that byte order equals the total order."""
    parts: list[bytes] = []
    _encode_into(value, parts)
    return b"".join(parts)


def _encode_into(value: Value, out: list[bytes]) -> None:
    t = type(value)
    if t is str:
        out.append(TAG_STRING + _escaped(value.encode("utf-8")))
    elif t is int:
        out.append(TAG_INT + _pack_q(value + (1 << 63)))
    elif t is float:
        out.append(TAG_FLOAT + _pack_q(float_total_order_bits(value)))
    elif t is bool:
        out.append(TAG_TRUE if value else TAG_FALSE)
    elif value is None:
        out.append(TAG_NULL)
    elif t is bytes:
        out.append(TAG_BYTES + _escaped(value))
    elif t is list:
        out.append(TAG_ARRAY)
        for item in value:
            _encode_into(item, out)
        out.append(END)
    elif t is dict:
        out.append(TAG_OBJECT)
        for key in sorted(value, key=lambda k: k.encode("utf-8")):
            out.append(TAG_STRING + _escaped(key.encode("utf-8")))
            _encode_into(value[key], out)
        out.append(END)
    elif value is UNDEFINED:
        out.append(TAG_UNDEFINED)
    else:
        raise TypeError(f"cannot encode {type_name(value)} {value!r} as an index key")


def encode_key(values: list[Value] | tuple[Value, ...]) -> bytes:
    """Encode a sequence of field values (an index key) by concatenating their encodings."""
    parts: list[bytes] = []
    for value in values:
        _encode_into(value, parts)
    return b"".join(parts)


def key_successor(key: bytes) -> bytes:
    """The smallest byte string greater than `key` (for inclusive upper bounds)."""
    return key + b"\x00"


def prefix_end(prefix: bytes) -> bytes:
    """An exclusive upper bound above every key that extends `prefix` with more values."""
    return prefix + KEY_MAX

"""Compact storage encoding of documents (what SQLite holds in its `body` column).

orjson keeps int and float apart (`1` vs `1.0`) but cannot store bytes and would turn NaN and
infinities into null. Documents without those are stored as plain orjson after a 0x00 marker;
the rest are stored after a 0x01 marker with those values tagged as `{"$bytes": b64}` /
`{"$float": b64}`. Field names never start with `$`, so the tags cannot collide with data.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import orjson

from kernel_ext.errors import ValidationError
from kernel_ext.store.values import Value

__all__ = ["decode_document", "encode_document"]

_PLAIN = b"\x00"
_TAGGED = b"\x01"


def _is_special(value: Value) -> bool:
    t = type(value)
    if t is float:
        return not math.isfinite(value)
    if t is bytes:
        return True
    if t is list:
        return any(_is_special(x) for x in value)
    if t is dict:
        return any(_is_special(x) for x in value.values())
    return False


def _tag(value: Value) -> Any:
    t = type(value)
    if t is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if t is float and not math.isfinite(value):
        return {"$float": base64.b64encode(struct.pack("<d", value)).decode("ascii")}
    if t is list:
        return [_tag(x) for x in value]
    if t is dict:
        return {k: _tag(x) for k, x in value.items()}
    return value


def _untag(data: Any) -> Value:
    t = type(data)
    if t is list:
        return [_untag(x) for x in data]
    if t is dict:
        if len(data) == 1:
            if "$bytes" in data:
                return base64.b64decode(data["$bytes"])
            if "$float" in data:
                return struct.unpack("<d", base64.b64decode(data["$float"]))[0]
        return {k: _untag(x) for k, x in data.items()}
    return data


def encode_document(doc: dict[str, Value]) -> bytes:
    """Serialize a normalized document for storage."""
    # Try the plain form first (most documents are plain): orjson refuses bytes, and it writes
    # NaN and infinities as `null`, so only a refusal or a `null` needs the slower check.
    try:
        data = orjson.dumps(doc)
    except TypeError:
        return _TAGGED + _dumps_tagged(doc)
    if b"null" in data and _is_special(doc):
        return _TAGGED + _dumps_tagged(doc)
    return _PLAIN + data


def _dumps_tagged(doc: dict[str, Value]) -> bytes:
    try:
        return orjson.dumps(_tag(doc))
    except TypeError as exc:  # only a value that skipped `normalize` gets here
        raise ValidationError(
            f"Cannot store this document ({exc}): it holds something that is not a Convex "
            "value; pass it through kernel_ext.store.values.normalize first"
        ) from exc


def decode_document(body: bytes) -> dict[str, Value]:
    """Inverse of `encode_document`."""
    data: dict[str, Value] = orjson.loads(memoryview(body)[1:])
    return _untag(data) if body[:1] == _TAGGED else data

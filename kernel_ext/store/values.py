"""Convex values in Python: checking, limits, size, the total order and the JSON encodings.

A Convex value is one of `None`, `bool`, `int` (int64), `float` (float64), `str`, `bytes`,
`list` and `dict` with `str` keys. `UNDEFINED` stands for "missing": a dict field holding it is
dropped, and it sorts below every value.

The total order (SEMANTICS.md §3), ascending by type then within type::

    undefined < null < int64 < float64 < boolean < string < bytes < array < object
"""

from __future__ import annotations

import base64
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import orjson

from kernel_ext.errors import ValidationError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ARRAY_LENGTH",
    "MAX_DOCUMENT_SIZE",
    "MAX_NESTING",
    "MAX_OBJECT_FIELDS",
    "MAX_VALUE_NESTING",
    "UNDEFINED",
    "Undefined",
    "Value",
    "compare",
    "convex_size",
    "float_total_order_bits",
    "from_json",
    "normalize",
    "same_value",
    "to_json",
    "type_name",
    "type_rank",
    "value_repr",
]

Value: TypeAlias = Any  # None | bool | int | float | str | bytes | list[Value] | dict[str, Value]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
#: How deeply a stored document nests (Convex: "Document is too nested").
MAX_NESTING: Final = 16
#: How deeply any other value nests: function arguments and results, values on the wire
#: (Convex: "Value is too nested"). Deeper values would also exhaust Python's recursion.
MAX_VALUE_NESTING: Final = 64
MAX_ARRAY_LENGTH: Final = 8192
MAX_OBJECT_FIELDS: Final = 1024
MAX_FIELD_NAME_LENGTH: Final = 1024
MAX_DOCUMENT_SIZE: Final = 1 << 20


class Undefined:
    """The type of `UNDEFINED`, Convex's `undefined`: a missing field, not a value."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()

# Type ranks follow the total order; gaps leave room for the key encoding's tags.
_RANK_UNDEFINED, _RANK_NULL, _RANK_INT, _RANK_FLOAT, _RANK_BOOL = 0, 1, 2, 3, 4
_RANK_STRING, _RANK_BYTES, _RANK_ARRAY, _RANK_OBJECT = 5, 6, 7, 8


def type_rank(value: Value) -> int:
    """Position of the value's type in the total order (undefined lowest, object highest)."""
    if value is None:
        return _RANK_NULL
    t = type(value)
    if t is bool:
        return _RANK_BOOL
    if t is int:
        return _RANK_INT
    if t is float:
        return _RANK_FLOAT
    if t is str:
        return _RANK_STRING
    if t is bytes:
        return _RANK_BYTES
    if t is list:
        return _RANK_ARRAY
    if t is dict:
        return _RANK_OBJECT
    if value is UNDEFINED:
        return _RANK_UNDEFINED
    raise ValidationError(f"{value!r} is not a supported Convex value")


def type_name(value: Value) -> str:
    """The Convex name of a value's type, for error messages."""
    names = ("undefined", "null", "int64", "float64", "boolean", "string", "bytes", "array")
    rank = type_rank(value)
    return names[rank] if rank < len(names) else "object"


def float_total_order_bits(x: float) -> int:
    """An unsigned 64-bit integer whose order is IEEE-754 totalOrder (-NaN < -inf < ... < NaN)."""
    bits: int = struct.unpack(">Q", struct.pack(">d", x))[0]
    return (~bits & 0xFFFF_FFFF_FFFF_FFFF) if bits >> 63 else bits | (1 << 63)


def _cmp(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def compare(a: Value, b: Value) -> int:
    """Compare two values in Convex's total order; returns -1, 0 or 1.

    Equality is by this order: `1 != 1.0`, `-0.0 != 0.0`, and NaN equals a NaN with the same bits.
    """
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return _cmp(ra, rb)
    if ra == _RANK_FLOAT:
        return _cmp(float_total_order_bits(a), float_total_order_bits(b))
    if ra == _RANK_STRING:
        return _cmp(a.encode("utf-8"), b.encode("utf-8"))
    if ra == _RANK_ARRAY:
        return _compare_sequences(a, b)
    if ra == _RANK_OBJECT:
        return _compare_objects(a, b)
    if ra in (_RANK_UNDEFINED, _RANK_NULL):
        return 0
    return _cmp(a, b)


def same_value(a: Value, b: Value) -> bool:
    """`compare(a, b) == 0`, fast for the common case. Python's `==` is almost the Convex
    equality, except that it equates 1, 1.0 and True and -0.0 with 0.0, and NaN with nothing;
    so an `==` match counts only if the types match all the way down."""
    if a == b:
        return _same_types(a, b)
    t = type(a)
    if t is int or t is str or t is bool or a is None:
        return False  # holds no NaN: Python's inequality is Convex's
    # Unequal for Python but equal for Convex only with NaN (which Python never equates).
    return _contains_nan(a) and compare(a, b) == 0


def _contains_nan(value: Value) -> bool:
    t = type(value)
    if t is float:
        return math.isnan(value)
    if t is dict:
        return any(_contains_nan(x) for x in value.values())
    if t is list:
        return any(_contains_nan(x) for x in value)
    return False


def _same_types(a: Value, b: Value) -> bool:
    t = type(a)
    if t is not type(b):
        return False
    if t is float:
        return math.copysign(1.0, a) == math.copysign(1.0, b)
    if t is dict:
        return all(_same_types(x, b[k]) for k, x in a.items())
    if t is list:
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return True


def _compare_sequences(a: list[Value], b: list[Value]) -> int:
    for x, y in zip(a, b, strict=False):
        c = compare(x, y)
        if c:
            return c
    return _cmp(len(a), len(b))


def _compare_objects(a: dict[str, Value], b: dict[str, Value]) -> int:
    ka = sorted(a, key=lambda k: k.encode("utf-8"))
    kb = sorted(b, key=lambda k: k.encode("utf-8"))
    for x, y in zip(ka, kb, strict=False):
        c = _cmp(x.encode("utf-8"), y.encode("utf-8")) or compare(a[x], b[y])
        if c:
            return c
    return _cmp(len(ka), len(kb))


# ---------------------------------------------------------------------------------------------
# Checking and normalizing


def check_field_name(name: object, path: str) -> str:
    """Return `name` if it is a valid object key, else raise `ValidationError` naming the path."""
    if not isinstance(name, str):
        raise ValidationError(f"Object keys must be strings, got {name!r} at {path or 'top level'}")
    if not name:
        raise ValidationError(f"Empty field name at {path or 'top level'}")
    if len(name) > MAX_FIELD_NAME_LENGTH:
        raise ValidationError(f"Field name {name[:40]!r}... is longer than 1024 characters")
    if name[0] == "$":
        raise ValidationError(f"Field name {name!r} at {path or 'top level'} starts with '$'")
    if not name.isascii() or not name.isprintable():
        raise ValidationError(
            f"Field name {name!r} at {path or 'top level'} must be printable ASCII characters"
        )
    return name


_VALID_NAMES: set[str] = set()  # field names already checked (documents repeat their names)
_MAX_REMEMBERED: Final = 100_000


def _remember_name(name: object, path: str) -> str:
    """The checked name as a plain `str` (a `str` subclass, as enums make them, becomes its
    text: orjson and the key encoding take only `str` itself)."""
    checked = str.__str__(check_field_name(name, path))
    if len(_VALID_NAMES) >= _MAX_REMEMBERED:
        _VALID_NAMES.clear()
    _VALID_NAMES.add(checked)
    return checked


def normalize(value: Any, *, path: str = "", limits: bool = True) -> Value:
    """Check a Python value against Convex's rules and return a private, normalized copy.

    Tuples become lists, dict fields holding `UNDEFINED` are dropped. Raises `ValidationError`
    naming the path for an unsupported type, an int outside int64, a string with lone
    surrogates, a bad field name, or (when `limits`) the nesting / array / object limits.
    Function results are checked without the size limits: they are not stored, and an analyst's
    query may return more than 8192 rows; they may nest `MAX_VALUE_NESTING` levels (documents
    `MAX_NESTING`). Keys of a `str` subclass become plain `str`.
    """
    return _normalize(value, path, None, 0 if limits else -_UNLIMITED)


#: The depth offset of a value checked without the document limits (its depth is negative).
_UNLIMITED: Final = 10**9


def _at(path: str, key: str | int | None) -> str:
    """The path of element `key` of the container at `path` (built only for messages)."""
    if key is None:
        return path
    return f"{path}[{key}]" if type(key) is int else f"{path}.{key}"


def _normalize(value: Any, path: str, key: str | int | None, depth: int) -> Value:
    """`value` is element `key` of the container at `path` (`key` None: `value` is at `path`);
    containers inside it are at `depth + 1`."""
    t = type(value)
    if t is str:
        if not value.isascii():  # O(1); only non-ASCII strings can hold lone surrogates
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                where = _at(path, key) or "top level"
                raise ValidationError(f"String at {where} is not valid Unicode") from exc
        return value
    if t is float or t is bool or value is None:
        return value
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:
            where = _at(path, key) or "top level"
            raise ValidationError(f"Integer {value} at {where} is outside int64")
        return value
    if t is dict:
        return _normalize_object(value, _at(path, key), depth)
    if t is list or t is tuple:
        return _normalize_array(value, _at(path, key), depth)
    if t is bytes or t is bytearray or t is memoryview:
        return bytes(value)
    if isinstance(value, Mapping):
        return _normalize_object(value, _at(path, key), depth)
    where = _at(path, key) or "top level"
    if value is UNDEFINED:
        raise ValidationError(f"undefined is not a valid Convex value at {where}")
    raise ValidationError(
        f"{value!r} (type {t.__name__}) at {where} is not a supported Convex "
        "value; use None, bool, int, float, str, bytes, list or dict"
    )


def _check_nesting(path: str, depth: int) -> None:
    if depth >= MAX_NESTING:
        raise ValidationError(
            f"Document is too nested (more than {MAX_NESTING} levels) at {_short(path)}: "
            f"stored values nest at most {MAX_NESTING} levels; flatten it (or store the deep "
            "part as a JSON string)"
        )
    if depth < 0 and depth + _UNLIMITED >= MAX_VALUE_NESTING:
        raise ValidationError(
            f"Value is too nested (more than {MAX_VALUE_NESTING} levels) at {_short(path)}: "
            f"Convex values nest at most {MAX_VALUE_NESTING} levels (documents "
            f"{MAX_NESTING}); return or pass a flatter value"
        )


def _short(path: str) -> str:
    """A path for a message: deep ones are cut (a 64-level path is long and says little)."""
    if not path:
        return "top level"
    return path if len(path) <= 60 else path[:57] + "..."


def _normalize_array(value: Any, path: str, depth: int) -> list[Value]:
    _check_nesting(path, depth)
    if depth >= 0 and len(value) > MAX_ARRAY_LENGTH:
        raise ValidationError(
            f"Array at {path or 'top level'} has {len(value)} elements (max 8192)"
        )
    out = []
    for i, item in enumerate(value):
        if item is UNDEFINED:
            raise ValidationError(
                f"undefined is not a valid Convex value (array element {path}[{i}])"
            )
        out.append(_normalize(item, path, i, depth + 1))
    return out


def _normalize_object(value: Any, path: str, depth: int) -> dict[str, Value]:
    _check_nesting(path, depth)
    if depth >= 0 and len(value) > MAX_OBJECT_FIELDS:
        raise ValidationError(f"Object at {path or 'top level'} has more than 1024 fields")
    out = {}
    for name, item in value.items():
        if item is UNDEFINED:
            continue  # a missing field: dropped, its name unchecked
        k = name if type(name) is str and name in _VALID_NAMES else _remember_name(name, path)
        t = type(item)
        # The common immutable leaves inline (documents are mostly these); the rest recurse.
        if (t is str and item.isascii()) or t is float or t is bool or item is None:
            out[k] = item
        else:
            out[k] = _normalize(item, path, k, depth + 1)
    return out


def convex_size(value: Value) -> int:
    """Size in bytes by Convex's formula (used for the 1 MiB document limit)."""
    t = type(value)
    if t is dict:
        size = 2
        for k, x in value.items():
            tx = type(x)
            if tx is str:  # the common cases inline: this runs on every write
                size += len(k) + 3 + (len(x) if x.isascii() else len(x.encode("utf-8")))
            elif tx is int or tx is float:
                size += len(k) + 10
            else:
                size += len(k) + 1 + convex_size(x)
        return size
    if t is str:
        return 2 + (len(value) if value.isascii() else len(value.encode("utf-8")))
    if t is int or t is float:
        return 9
    if value is None or t is bool:
        return 1
    if t is bytes:
        return 2 + len(value)
    if t is list:
        return 2 + sum(convex_size(x) for x in value)
    return 2 + sum(len(k) + 1 + convex_size(x) for k, x in value.items())


def value_repr(value: Value, limit: int = 200) -> str:
    """A short printable form of a value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Convex JSON (the wire format of the HTTP API and sync protocol)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_FLOAT_MAX: Final = sys.float_info.max


def to_json(value: Value) -> Any:
    """Encode a value as Convex JSON: int64 as `{"$integer"}`, bytes as `{"$bytes"}`, special
    floats as `{"$float"}`; everything else as plain JSON."""
    t = type(value)
    if t is int:
        return {"$integer": _b64(struct.pack("<q", value))}
    if t is float:
        if math.isfinite(value) and not (value == 0 and math.copysign(1, value) < 0):
            return value
        return {"$float": _b64(struct.pack("<d", value))}
    if t is bytes:
        return {"$bytes": _b64(value)}
    if t is list:
        return [to_json(x) for x in value]
    if t is dict:
        # Strings, booleans, null and ordinary floats are their own JSON: no call for them
        # (a whole result of a million documents is encoded value by value).
        return {
            k: x
            if (tx := type(x)) is str
            or tx is bool
            or x is None
            or (tx is float and _plain_float(x))
            else to_json(x)
            for k, x in value.items()
        }
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [to_json(x) for x in value]  # a view's immutable rows (`store.rows`)
    return value


def _plain_float(x: float) -> bool:
    """A float JSON writes as itself: finite and not -0.0."""
    return (x != 0.0 and -_FLOAT_MAX <= x <= _FLOAT_MAX) or (x == 0.0 and math.copysign(1, x) > 0)


def from_json(data: Any) -> Value:
    """Decode Convex JSON into a value. Plain JSON numbers become floats (as in Convex);
    raises `ValidationError` for malformed `$`-objects and for arrays and objects nested more
    than `MAX_VALUE_NESTING` levels."""
    return _from_json(data, 0)


def _from_json(data: Any, depth: int) -> Value:
    t = type(data)
    if t is int:
        return float(data)
    if t is list:
        if depth >= MAX_VALUE_NESTING:
            raise ValidationError(_too_nested_json())
        return [_from_json(x, depth + 1) for x in data]
    if t is dict:
        if len(data) == 1:
            ((key, inner),) = data.items()
            if key.startswith("$"):
                return _decode_special(key, inner)
        if depth >= MAX_VALUE_NESTING:
            raise ValidationError(_too_nested_json())
        # Strings, floats, booleans and null decode as themselves: no call for them.
        return {
            k: x
            if (tx := type(x)) is str or tx is float or tx is bool or x is None
            else _from_json(x, depth + 1)
            for k, x in data.items()
        }
    return data


def _too_nested_json() -> str:
    return (
        f"Value is too nested (more than {MAX_VALUE_NESTING} levels): Convex values nest at "
        f"most {MAX_VALUE_NESTING} levels; send a flatter value"
    )


def _decode_special(key: str, inner: Any) -> Value:
    try:
        raw = base64.b64decode(inner, validate=True)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"Malformed {key}: {inner!r} is not base64") from exc
    if key == "$bytes":
        return raw
    if key in ("$integer", "$float") and len(raw) != 8:
        raise ValidationError(f"Malformed {key}: expected 8 bytes, got {len(raw)}")
    if key == "$integer":
        return struct.unpack("<q", raw)[0]
    if key == "$float":
        return struct.unpack("<d", raw)[0]
    raise ValidationError(f"Unknown special JSON object {key!r}")


def dumps_json(value: Value) -> bytes:
    """Serialize a value as Convex JSON bytes."""
    return orjson.dumps(to_json(value))

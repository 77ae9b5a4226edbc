"""Validators (`v.*`): check values against declared types, with messages that name the path.

Each validator's `check(value, path, ids)` returns the accepted value (an int becomes a float
for `v.number()` / `v.float64()` within +-2**53, the only coercion) or raises
`ValidationError`. `ids` resolves the table of an id for `v.id(table)`.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any, Final

from kernel_ext.errors import ValidationError
from kernel_ext.store.ids import table_number_of
from kernel_ext.store.values import (
    INT64_MAX,
    INT64_MIN,
    UNDEFINED,
    Value,
    compare,
    type_name,
    value_repr,
)

__all__ = ["TableResolver", "Validator", "v"]

#: Maps a table number to its name (None if no such table); used by `v.id`.
TableResolver = Callable[[int], str | None]

_FLOAT_SAFE_INT: Final = 2**53


def _no_tables(_number: int) -> str | None:
    return None


class Validator:
    """Base class of every validator. `optional` is True only for `v.optional(x)`."""

    optional: bool = False

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        """Return the accepted (possibly coerced) value or raise `ValidationError`."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The validator's JSON export, as Convex's `validator.json`."""
        raise NotImplementedError

    def _mismatch(self, value: Value, path: str) -> ValidationError:
        return ValidationError(
            f"Value does not match validator.\nPath: {path or '(root)'}\n"
            f"Value: {value_repr(value)} ({type_name(value)})\nValidator: {self!r}"
        )


class _Simple(Validator):
    """A validator that accepts values of exactly one Convex type."""

    def __init__(self, name: str, json_type: str, accepts: Callable[[Value], bool]) -> None:
        self._name, self._json_type, self._accepts = name, json_type, accepts

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        if not self._accepts(value):
            raise self._mismatch(value, path)
        return value

    def to_json(self) -> dict[str, Any]:
        return {"type": self._json_type}

    def __repr__(self) -> str:
        return f"v.{self._name}()"


class _Number(Validator):
    def __init__(self, name: str) -> None:
        self._name = name

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        if type(value) is float:
            return value
        if type(value) is int and -_FLOAT_SAFE_INT <= value <= _FLOAT_SAFE_INT:
            return float(value)
        raise self._mismatch(value, path)

    def to_json(self) -> dict[str, Any]:
        return {"type": "number"}

    def __repr__(self) -> str:
        return f"v.{self._name}()"


class _Any(Validator):
    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        return value

    def to_json(self) -> dict[str, Any]:
        return {"type": "any"}

    def __repr__(self) -> str:
        return "v.any()"


class IdValidator(Validator):
    """`v.id(table)`: a string that decodes as an id of that table."""

    def __init__(self, table: str) -> None:
        if not isinstance(table, str) or not table:
            raise TypeError("v.id() needs the table name, e.g. v.id('users')")
        self.table = table

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        if type(value) is not str:
            raise self._mismatch(value, path)
        number = table_number_of(value)
        if number is None:
            raise ValidationError(
                f"Value does not match validator.\nPath: {path or '(root)'}\n"
                f"Value: {value!r} is not a valid document id\nValidator: {self!r}"
            )
        actual = ids(number)
        if actual != self.table:
            raise ValidationError(
                f"Found ID {value!r} from table `{actual or 'unknown'}`, which does not match "
                f"the table name in validator `{self!r}`.\nPath: {path or '(root)'}"
            )
        return value

    def to_json(self) -> dict[str, Any]:
        return {"type": "id", "tableName": self.table}

    def __repr__(self) -> str:
        return f"v.id({self.table!r})"


class LiteralValidator(Validator):
    """`v.literal(x)`: exactly `x`, of the same type (`v.literal(1)` rejects `1.0`)."""

    def __init__(self, literal: Value) -> None:
        if type(literal) not in (str, int, float, bool):
            raise TypeError("v.literal() takes a string, int, float or bool")
        if type(literal) is int and not INT64_MIN <= literal <= INT64_MAX:
            raise TypeError(f"v.literal({literal}) is outside int64")
        self.literal = literal

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        if type(value) is type(self.literal) and compare(value, self.literal) == 0:
            return value
        raise ValidationError(
            f"{value_repr(value)} does not match literal validator `{self!r}`.\n"
            f"Path: {path or '(root)'}"
        )

    def to_json(self) -> dict[str, Any]:
        from kernel_ext.store.values import to_json

        return {"type": "literal", "value": to_json(self.literal)}

    def __repr__(self) -> str:
        return f"v.literal({self.literal!r})"


class ArrayValidator(Validator):
    """`v.array(element)`."""

    def __init__(self, element: Validator) -> None:
        self.element = _require_validator(element, "v.array()")

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        if type(value) is not list:
            raise self._mismatch(value, path)
        return [self.element.check(x, f"{path}[{i}]", ids) for i, x in enumerate(value)]

    def to_json(self) -> dict[str, Any]:
        return {"type": "array", "value": self.element.to_json()}

    def __repr__(self) -> str:
        return f"v.array({self.element!r})"


class ObjectValidator(Validator):
    """`v.object({...})`: required fields present, optional ones may be absent, no extras."""

    def __init__(self, fields: Mapping[str, Validator]) -> None:
        if not isinstance(fields, Mapping):
            raise TypeError("v.object() takes a dict of field name -> validator")
        self.fields = {k: _require_validator(x, f"field {k!r}") for k, x in fields.items()}

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        if type(value) is not dict:
            raise self._mismatch(value, path)
        for key in value:
            if key not in self.fields:
                raise ValidationError(
                    f"Object contains extra field `{key}` that is not in the validator.\n"
                    f"Path: {path or '(root)'}\nObject: {value_repr(value)}\nValidator: {self!r}"
                )
        out = {}
        for key, validator in self.fields.items():
            item = value.get(key, UNDEFINED)
            if item is UNDEFINED:
                if not validator.optional:
                    raise ValidationError(
                        f"Object is missing the required field `{key}`. Consider wrapping the "
                        "field validator in `v.optional(...)` if this is expected.\n"
                        f"Path: {path or '(root)'}\nObject: {value_repr(value)}\n"
                        f"Validator: {self!r}"
                    )
                continue
            out[key] = validator.check(item, f"{path}.{key}", ids)
        return out

    def check_fields(
        self, value: dict[str, Value], ignore: Container[str], ids: TableResolver
    ) -> None:
        """Raise what `check` would raise for `value` without its `ignore`d fields (a stored
        document without its system fields), without building copies: this runs on every
        write."""
        fields = self.fields
        for key in value:
            if key not in fields and key not in ignore:
                break
        else:
            for key, validator in fields.items():
                item = value.get(key, UNDEFINED)
                if item is UNDEFINED:
                    if validator.optional:
                        continue
                    break
                try:
                    validator.check(item, "", ids)
                except ValidationError:
                    break
            else:
                return
        # Something does not match: `check` finds it again and words the error with its path.
        self.check({k: x for k, x in value.items() if k not in ignore}, "", ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "object",
            "value": {
                k: {"fieldType": x.to_json(), "optional": x.optional}
                for k, x in self.fields.items()
            },
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {x!r}" for k, x in self.fields.items())
        return f"v.object({{{inner}}})"


class RecordValidator(Validator):
    """`v.record(keys, values)`: an object with dynamic keys."""

    def __init__(self, keys: Validator, values: Validator) -> None:
        self.keys = _require_validator(keys, "v.record() keys")
        self.values = _require_validator(values, "v.record() values")
        if self.values.optional:
            raise TypeError("v.record() values cannot be v.optional(...)")
        if self.keys.optional:
            raise TypeError("v.record() keys cannot be v.optional(...)")

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        if type(value) is not dict:
            raise self._mismatch(value, path)
        return {
            self.keys.check(k, f"{path}.keys()", ids): self.values.check(x, f"{path}.{k}", ids)
            for k, x in value.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "record",
            "keys": self.keys.to_json(),
            "values": {"fieldType": self.values.to_json(), "optional": False},
        }

    def __repr__(self) -> str:
        return f"v.record({self.keys!r}, {self.values!r})"


class UnionValidator(Validator):
    """`v.union(a, b, ...)`: the first member that accepts the value wins."""

    def __init__(self, members: Iterable[Validator]) -> None:
        self.members = [_require_validator(x, "v.union() member") for x in members]

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        for member in self.members:
            try:
                return member.check(value, path, ids)
            except ValidationError:
                continue
        raise self._mismatch(value, path)

    def to_json(self) -> dict[str, Any]:
        return {"type": "union", "value": [x.to_json() for x in self.members]}

    def __repr__(self) -> str:
        return f"v.union({', '.join(repr(x) for x in self.members)})"


class OptionalValidator(Validator):
    """`v.optional(x)`: as an object field, the key may be absent."""

    optional = True

    def __init__(self, inner: Validator) -> None:
        self.inner = _require_validator(inner, "v.optional()")

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        return self.inner.check(value, path, ids)

    def to_json(self) -> dict[str, Any]:
        return self.inner.to_json()

    def __repr__(self) -> str:
        return f"v.optional({self.inner!r})"


def _require_validator(x: object, where: str) -> Validator:
    if not isinstance(x, Validator):
        raise TypeError(f"{where} must be a validator such as v.string(), got {x!r}")
    return x


def _is_str(x: Value) -> bool:
    return type(x) is str


class _V:
    """The `v` namespace of validator builders."""

    @staticmethod
    def string() -> Validator:
        return _Simple("string", "string", _is_str)

    @staticmethod
    def number() -> Validator:
        return _Number("number")

    @staticmethod
    def float64() -> Validator:
        return _Number("float64")

    @staticmethod
    def int64() -> Validator:
        return _Simple("int64", "bigint", lambda x: type(x) is int)

    @staticmethod
    def boolean() -> Validator:
        return _Simple("boolean", "boolean", lambda x: type(x) is bool)

    @staticmethod
    def null() -> Validator:
        return _Simple("null", "null", lambda x: x is None)

    @staticmethod
    def bytes() -> Validator:
        return _Simple("bytes", "bytes", lambda x: type(x) is bytes)

    @staticmethod
    def any() -> Validator:
        return _Any()

    @staticmethod
    def id(table: str) -> Validator:
        return IdValidator(table)

    @staticmethod
    def literal(value: Value) -> Validator:
        return LiteralValidator(value)

    @staticmethod
    def array(element: Validator) -> Validator:
        return ArrayValidator(element)

    @staticmethod
    def object(fields: Mapping[str, Validator]) -> Validator:
        return ObjectValidator(fields)

    @staticmethod
    def record(keys: Validator, values: Validator) -> Validator:
        return RecordValidator(keys, values)

    @staticmethod
    def union(*members: Validator) -> Validator:
        return UnionValidator(members)

    @staticmethod
    def optional(inner: Validator) -> Validator:
        return OptionalValidator(inner)

    @staticmethod
    def nullable(inner: Validator) -> Validator:
        return UnionValidator([inner, _V.null()])


v: Final = _V()

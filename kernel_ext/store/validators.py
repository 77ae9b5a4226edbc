"""Validators (`v.*`): check values against declared types, with messages that name the path.

Each validator's `check(value, path, ids)` returns the accepted value (an int becomes a float
for `v.number()` / `v.float64()` within +-2**53 inclusive, the only coercion, at any depth) or
raises `ValidationError`. `ids` resolves the table of an id for `v.id(table)`. The value to
store is what `check` returns: writes keep it, so an int never lands in a float field (an int64
sorts below every float64, and a float-bounded query would miss it).

`v.strin()` (a builder that does not exist) raises `UnknownValidator`, a `SchemaError` that is
also an `AttributeError`, listing the builders.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any, Final, Literal

from kernel_ext.errors import UnknownValidator, ValidationError
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

__all__ = ["NumberKind", "TableResolver", "Validator", "number_kind", "v"]

#: Maps a table number to its name (None if no such table); used by `v.id`.
TableResolver = Callable[[int], str | None]

_FLOAT_SAFE_INT: Final = 2**53


def _no_tables(_number: int) -> str | None:
    return None


#: The numeric type a validator admits: "float64" (`v.number()`), "int64" (`v.int64()`).
NumberKind = Literal["float64", "int64"]


class Validator:
    """Base class of every validator. `optional` is True only for `v.optional(x)`; `coerces`
    is True if `check` may return a value other than the one given (it holds a number
    validator somewhere), so a caller may skip looking for changes otherwise."""

    optional: bool = False
    coerces: bool = False

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
    coerces = True

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
        self.coerces = self.element.coerces

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
        self.coerces = any(x.coerces for x in self.fields.values())

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
    ) -> dict[str, Value]:
        """Check `value` as `check` would without its `ignore`d fields that the validator does
        not declare (a stored document's system fields), and return the document to store:
        `value` itself, or a copy if an int became a float somewhere. Copies only then: this
        runs on every write.

        Raises:
            ValidationError: what `check` would raise.
        """
        fields = self.fields
        out = value
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
                    checked = validator.check(item, "", ids)
                except ValidationError:
                    break
                if validator.coerces and not _same_shape(checked, item):
                    if out is value:
                        out = dict(value)
                    out[key] = checked
            else:
                return out
        # Something does not match: `check` finds it again and words the error with its path.
        self.check({k: x for k, x in value.items() if k not in ignore or k in fields}, "", ids)
        raise AssertionError("check_fields and check disagree")  # pragma: no cover

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
        self.coerces = self.values.coerces
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
        self.coerces = any(x.coerces for x in self.members)

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
        self.coerces = self.inner.coerces

    def check(self, value: Value, path: str = "", ids: TableResolver = _no_tables) -> Value:
        return self.inner.check(value, path, ids)

    def to_json(self) -> dict[str, Any]:
        return self.inner.to_json()

    def __repr__(self) -> str:
        return f"v.optional({self.inner!r})"


def _same_shape(checked: Value, given: Value) -> bool:
    """True if `check` returned `given` unchanged: same object, or the same containers holding
    the same scalars (an int that became a float is a new object)."""
    if checked is given:
        return True
    t = type(checked)
    if t is not type(given):
        return False
    if t is list:
        return len(checked) == len(given) and all(
            _same_shape(a, b) for a, b in zip(checked, given, strict=True)
        )
    if t is dict:
        return checked.keys() == given.keys() and all(
            _same_shape(x, given[k]) for k, x in checked.items()
        )
    return False


def number_kind(validator: Validator) -> NumberKind | None:
    """The numeric type a (non-union, non-optional) leaf validator admits, None if none:
    `v.number()` and float literals admit float64, `v.int64()` and int literals int64."""
    if isinstance(validator, _Number):
        return "float64"
    if isinstance(validator, _Simple) and validator._json_type == "bigint":
        return "int64"
    if isinstance(validator, LiteralValidator):
        t = type(validator.literal)
        return "float64" if t is float else "int64" if t is int else None
    return None


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

    def __getattr__(self, name: str) -> Any:
        """`v.strin` and other names that are not builders: a `SchemaError` (also an
        `AttributeError`, so `hasattr(v, name)` stays False) listing the builders."""
        if name.startswith("__"):  # protocol probes (copy, pickle): plain AttributeError
            raise AttributeError(name)
        builders = _builder_names()
        close = difflib.get_close_matches(name, builders, n=1)
        hint = f" Did you mean v.{close[0]}()?" if close else ""
        listed = " ".join(f"v.{b}()" for b in builders)
        raise UnknownValidator(f"v.{name} is not a validator.{hint} The validators are: {listed}")


def _builder_names() -> list[str]:
    return [n for n, x in vars(_V).items() if isinstance(x, staticmethod)]


v: Final = _V()

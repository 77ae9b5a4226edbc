"""Schemas: tables, their document validators and their indexes (SEMANTICS.md §4).

    schema = define_schema({
        "users": define_table({"email": v.string()}).index("by_email", ["email"]),
    })

Every rule is checked when the schema is built, so a bad schema fails at definition time with a
`SchemaError` that names the table and index: an index on a field the table's validator cannot
have is refused (a typo would otherwise index nothing). A table validator may list the system
fields (`_id: v.id(table)`, `_creationTime: v.number()`, as `schema.doc(table)` does in Convex);
writes check them against the stored document's own.

`SchemaDefinition.validate_write` returns the document to store, with ints in `v.number()`
fields made floats; `number_kind` tells queries what numeric type a field holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kernel_ext.errors import SchemaError, SchemaViolation, ValidationError
from kernel_ext.store.index_kinds import (
    DB,
    MAX_FILTER_FIELDS,
    MAX_VECTOR_DIMENSIONS,
    MIN_VECTOR_DIMENSIONS,
    SEARCH,
    VECTOR,
    IndexConfig,
    IndexKind,
    SearchIndexConfig,
    VectorIndexConfig,
)
from kernel_ext.store.validators import (
    IdValidator,
    NumberKind,
    ObjectValidator,
    OptionalValidator,
    RecordValidator,
    TableResolver,
    UnionValidator,
    Validator,
    _Any,
    _Number,
    number_kind,
    v,
)
from kernel_ext.store.values import Value

__all__ = [
    "IMPLICIT_INDEXES",
    "SYSTEM_FIELDS",
    "IndexDefinition",
    "SchemaDefinition",
    "TableDefinition",
    "check_table_name",
    "define_schema",
    "define_table",
]

_IDENTIFIER: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
SYSTEM_FIELDS: Final = ("_id", "_creationTime")
#: Implicit indexes of every table and their fields (before the `_creationTime, _id` suffix).
IMPLICIT_INDEXES: Final[dict[str, tuple[str, ...]]] = {"by_id": (), "by_creation_time": ()}
_MAX_INDEX_FIELDS: Final = 16
_MAX_INDEXES: Final = 32
#: Convex's limit of search indexes and of vector indexes per table (each).
_MAX_SEARCH_INDEXES: Final = 4
_MAX_NAME: Final = 64


def check_table_name(name: object, *, system: bool = False) -> str:
    """Return `name` if it is a valid user table name (system tables may start with `_`)."""
    if not isinstance(name, str):
        raise SchemaError(f"Table names must be strings, got {name!r}")
    candidate = name[1:] if system and name.startswith("_") else name
    if name.startswith("_") and not system:
        raise SchemaError(
            f"Table name {name!r} is reserved: names starting with '_' are system tables, "
            "which are read-only"
        )
    if not _IDENTIFIER.match(candidate) or len(name) > _MAX_NAME:
        raise SchemaError(
            f"Invalid table name {name!r}: use letters, digits and underscores, starting with a "
            "letter, at most 64 characters"
        )
    return name


@dataclass(frozen=True)
class IndexDefinition:
    """A user index: its name, kind and fields.

    A `db` index's entries are keyed by `fields + (_creationTime, _id)`; a `search` or
    `vector` index is described by its `config`, and `fields` lists what it reads (the
    searched or vector field first, then the filter fields).
    """

    name: str
    fields: tuple[str, ...]
    staged: bool = False
    kind: IndexKind = DB
    config: IndexConfig | None = None


@dataclass(frozen=True)
class TableDefinition:
    """A table's document validator and indexes. Build with `define_table(...)`."""

    validator: Validator
    indexes: tuple[IndexDefinition, ...] = ()
    #: `number_kind` answers by field path (a query asks for each of its comparisons).
    _kinds: dict[str, NumberKind | None] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    def index(self, name: str, fields: Sequence[str] | Mapping[str, Any]) -> TableDefinition:
        """Return a copy with one more index; `fields` is a list or `{"fields": [...]}`."""
        staged = False
        if isinstance(fields, Mapping):
            staged = bool(fields.get("staged", False))
            fields = fields.get("fields", ())
        if isinstance(fields, str) or not isinstance(fields, Sequence):
            raise SchemaError(f"Index {name!r}: fields must be a list of field names")
        return self._with_index(IndexDefinition(name, tuple(fields), staged))

    def search_index(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        *,
        search_field: str | None = None,
        filter_fields: Sequence[str] = (),
    ) -> TableDefinition:
        """Return a copy with a full-text index of the string field `search_field`, with
        equality filters on `filter_fields` (at most 16). `config` may give them Convex's way:
        `{"searchField": ..., "filterFields": [...]}`."""
        if config is not None:
            search_field = config.get("searchField", search_field)
            filter_fields = config.get("filterFields", filter_fields)
        if not isinstance(search_field, str) or not search_field:
            raise SchemaError(
                f"Search index {name!r}: give the field to search, as "
                f'search_index({name!r}, search_field="body")'
            )
        filters = _filter_fields(name, filter_fields)
        search = SearchIndexConfig(search_field, filters)
        return self._with_index(IndexDefinition(name, search.fields, False, SEARCH, search))

    def vector_index(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        *,
        vector_field: str | None = None,
        dimensions: int | None = None,
        filter_fields: Sequence[str] = (),
    ) -> TableDefinition:
        """Return a copy with a vector index of the array-of-numbers field `vector_field`
        holding `dimensions` numbers (2..4096), with equality filters on `filter_fields` (at
        most 16). `config` may give them Convex's way: `{"vectorField": ..., "dimensions": ...,
        "filterFields": [...]}`."""
        if config is not None:
            vector_field = config.get("vectorField", vector_field)
            dimensions = config.get("dimensions", dimensions)
            filter_fields = config.get("filterFields", filter_fields)
        if not isinstance(vector_field, str) or not vector_field:
            raise SchemaError(
                f"Vector index {name!r}: give the field holding the vectors, as "
                f'vector_index({name!r}, vector_field="embedding", dimensions=384)'
            )
        if (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not MIN_VECTOR_DIMENSIONS <= dimensions <= MAX_VECTOR_DIMENSIONS
        ):
            raise SchemaError(
                f"Vector index {name!r}: dimensions must be an integer from "
                f"{MIN_VECTOR_DIMENSIONS} to {MAX_VECTOR_DIMENSIONS} (the length of every "
                f"vector it holds), got {dimensions!r}"
            )
        filters = _filter_fields(name, filter_fields)
        vector = VectorIndexConfig(vector_field, dimensions, filters)
        return self._with_index(IndexDefinition(name, vector.fields, False, VECTOR, vector))

    def _with_index(self, new: IndexDefinition) -> TableDefinition:
        _check_index(new, self.indexes)
        for path in new.fields:
            if _leaves(self.validator, tuple(path.split("."))) == []:
                raise SchemaError(
                    f"Index {new.name!r}: field {path!r} is not in the table's validator "
                    f"{self.validator!r}, so the index would hold no value of it. Fix the name, "
                    "or declare the field (v.optional(...) if not every document has it)"
                )
        return TableDefinition(self.validator, (*self.indexes, new))

    def validate_document(self, doc: dict[str, Value], ids: TableResolver) -> dict[str, Value]:
        """The document to store (`doc`, or a copy with ints in float fields made floats).

        System fields are checked only if the validator lists them.

        Raises:
            ValidationError: the document does not match the validator.
        """
        validator = self.validator
        if type(validator) is ObjectValidator:  # the common case, checked without copies
            return validator.check_fields(doc, SYSTEM_FIELDS, ids)
        if isinstance(validator, _Any):
            return doc
        members = _object_members(validator)  # define_table allows objects or their union
        for member in members:
            try:
                return member.check_fields(doc, SYSTEM_FIELDS, ids)
            except ValidationError:
                continue
        # No member matches: `check` words the error, with the system fields some member lists.
        declared = {name for member in members for name in member.fields}
        validator.check(
            {k: x for k, x in doc.items() if k not in SYSTEM_FIELDS or k in declared}, "", ids
        )
        raise AssertionError("check_fields and check disagree")  # pragma: no cover

    def number_kind(self, path: str) -> NumberKind | None:
        """The numeric type that field `path` ("a" or "a.b") holds when it holds a number:
        "float64" if the validator admits only float64 numbers there, "int64" if only int64,
        None if both, neither, or anything (`v.any()`)."""
        try:
            return self._kinds[path]
        except KeyError:
            pass
        leaves = _leaves(self.validator, tuple(path.split(".")))
        kinds = None if leaves is None else {number_kind(x) for x in leaves} - {None}
        kind = next(iter(kinds)) if kinds is not None and len(kinds) == 1 else None
        self._kinds[path] = kind
        return kind


def _leaves(validator: Validator, path: tuple[str, ...]) -> list[Validator] | None:
    """The validators a value at `path` inside a `validator`-checked value may match: [] if
    no value there can exist, None if any value can (`v.any()` on the way). Optional and
    union wrappers are unwrapped; an empty path is the validator itself."""
    if isinstance(validator, OptionalValidator):
        return _leaves(validator.inner, path)
    if isinstance(validator, _Any):
        return None
    if isinstance(validator, UnionValidator):
        out: list[Validator] = []
        for member in validator.members:
            found = _leaves(member, path)
            if found is None:
                return None
            out += found
        return out
    if not path:
        return [validator]
    if isinstance(validator, ObjectValidator):
        inner = validator.fields.get(path[0])
        return [] if inner is None else _leaves(inner, path[1:])
    if isinstance(validator, RecordValidator):  # any key (ids are strings too)
        return _leaves(validator.values, path[1:])
    return []  # a scalar or an array has no fields (index paths do not enter arrays)


def _filter_fields(index: str, fields: object) -> tuple[str, ...]:
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise SchemaError(f"Index {index!r}: filter_fields must be a list of field names")
    if len(fields) > MAX_FILTER_FIELDS:
        raise SchemaError(
            f"Index {index!r} has {len(fields)} filter fields; at most {MAX_FILTER_FIELDS}"
        )
    return tuple(fields)


def _check_index(new: IndexDefinition, existing: tuple[IndexDefinition, ...]) -> None:
    name, fields = new.name, new.fields
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or len(name) > _MAX_NAME:
        raise SchemaError(f"Invalid index name {name!r}: use an identifier of at most 64 chars")
    if name in IMPLICIT_INDEXES:
        raise SchemaError(f"Index name {name!r} is reserved (by_id and by_creation_time exist)")
    if not fields:
        raise SchemaError(f"Index {name!r} must have at least one field")
    if new.kind == DB and len(fields) + 1 > _MAX_INDEX_FIELDS:
        raise SchemaError(f"Index {name!r} has too many fields (at most 15 plus _creationTime)")
    if len(set(fields)) != len(fields):
        raise SchemaError(f"Index {name!r} lists a field twice: {list(fields)}")
    for f in fields:
        if not isinstance(f, str) or not f:
            raise SchemaError(f"Index {name!r}: field names must be non-empty strings")
        if f == "_creationTime":
            raise SchemaError(
                f"Index {name!r}: _creationTime is added to every index automatically; remove it"
            )
        if f.startswith("_"):
            raise SchemaError(f"Index {name!r}: field {f!r} starts with '_' (system field)")
    if any(x.name == name for x in existing):
        raise SchemaError(f"Duplicate index name {name!r}")
    same_kind = [x for x in existing if x.kind == new.kind]
    if new.kind == DB:
        if any(x.fields == fields for x in same_kind):
            raise SchemaError(
                f"Index {name!r} has the same fields as another index: {list(fields)}"
            )
        if len(same_kind) + 1 > _MAX_INDEXES:
            raise SchemaError(f"A table can have at most {_MAX_INDEXES} indexes")
    elif len(same_kind) + 1 > _MAX_SEARCH_INDEXES:
        raise SchemaError(f"A table can have at most {_MAX_SEARCH_INDEXES} {new.kind} indexes")


def define_table(fields: Mapping[str, Validator] | Validator) -> TableDefinition:
    """Define a table from a dict of field validators, a `v.object`, a `v.union` of objects or
    `v.any()`."""
    if isinstance(fields, Mapping):
        validator: Validator = v.object(fields)
    elif isinstance(fields, ObjectValidator | _Any) or (
        isinstance(fields, UnionValidator)
        and all(isinstance(m, ObjectValidator) for m in fields.members)
    ):
        validator = fields
    else:
        raise SchemaError(
            "define_table() takes a dict of field validators, v.object(...), a v.union of "
            f"objects or v.any(); got {fields!r}"
        )
    for obj in _object_members(validator):
        for name, field_validator in obj.fields.items():
            if name == "_creationTime" and not isinstance(field_validator, _Number):
                raise SchemaError(
                    f"Field '_creationTime' is the system creation time: declare it as "
                    f"v.number(), not {field_validator!r}"
                )
            if name.startswith("_") and name not in SYSTEM_FIELDS:
                raise SchemaError(
                    f"Field {name!r}: top-level fields cannot start with '_' (only the system "
                    "fields _id and _creationTime may be listed)"
                )
    return TableDefinition(validator)


def _check_system_fields(table: str, definition: TableDefinition) -> None:
    for obj in _object_members(definition.validator):
        declared = obj.fields.get("_id")
        if declared is not None and not (
            isinstance(declared, IdValidator) and declared.table == table
        ):
            raise SchemaError(
                f"Table {table!r}: field '_id' is the system id: declare it as "
                f"v.id({table!r}), not {declared!r}"
            )


def _object_members(validator: Validator) -> list[ObjectValidator]:
    if isinstance(validator, ObjectValidator):
        return [validator]
    if isinstance(validator, UnionValidator):
        return [m for m in validator.members if isinstance(m, ObjectValidator)]
    return []


@dataclass(frozen=True)
class SchemaDefinition:
    """A set of tables. Tables absent from the schema are allowed and never validated."""

    tables: Mapping[str, TableDefinition] = field(default_factory=dict)
    schema_validation: bool = True

    def validate_write(
        self, table: str, doc: dict[str, Value], ids: TableResolver
    ) -> dict[str, Value]:
        """The document to store in `table`: `doc`, or a copy with ints in `v.number()` fields
        made floats (a table outside the schema, or validation off: `doc` as it is).

        Raises:
            SchemaViolation: `doc` may not be stored in `table`.
        """
        definition = self.tables.get(table)
        if definition is None or not self.schema_validation:
            return doc
        try:
            return definition.validate_document(doc, ids)
        except ValidationError as exc:
            raise SchemaViolation(
                f'Failed to insert or update a document in table "{table}" because it does not '
                f"match the schema: {exc}"
            ) from exc

    def number_kind(self, table: str, path: str) -> NumberKind | None:
        """`TableDefinition.number_kind` of a declared table (None for other tables)."""
        definition = self.tables.get(table)
        return None if definition is None else definition.number_kind(path)


def define_schema(
    tables: Mapping[str, TableDefinition],
    *,
    schema_validation: bool = True,
    strict_table_name_types: bool = True,
) -> SchemaDefinition:
    """Build a schema from table definitions. `strict_table_name_types` is accepted for
    compatibility and has no effect at run time (it is a TypeScript-only option)."""
    del strict_table_name_types
    if not isinstance(tables, Mapping):
        raise SchemaError("define_schema() takes a dict of table name -> define_table(...)")
    for name, definition in tables.items():
        check_table_name(name)
        if not isinstance(definition, TableDefinition):
            raise SchemaError(f"Table {name!r} must be define_table(...), got {definition!r}")
        _check_system_fields(name, definition)
    return SchemaDefinition(dict(tables), schema_validation)

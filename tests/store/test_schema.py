"""Schemas: define_table / define_schema / index rules (SEMANTICS.md §4) and write validation."""

from __future__ import annotations

import pytest

from kernel_ext.errors import SchemaError, SchemaViolation, ValidationError
from kernel_ext.store.ids import new_id
from kernel_ext.store.schema import (
    IMPLICIT_INDEXES,
    SYSTEM_FIELDS,
    IndexDefinition,
    SchemaDefinition,
    TableDefinition,
    check_table_name,
    define_schema,
    define_table,
)
from kernel_ext.store.validators import ObjectValidator, v


def _resolve(number: int) -> str | None:
    return {1: "users", 2: "posts"}.get(number)


def _table() -> TableDefinition:
    return define_table({"a": v.string(), "b": v.number(), "c": v.optional(v.any())})


# -- define_table --------------------------------------------------------------------------


def test_define_table_from_field_map_builds_an_object_validator():
    table = define_table({"a": v.string()})
    assert isinstance(table.validator, ObjectValidator)
    assert table.indexes == ()


def test_define_table_accepts_object_union_of_objects_and_any():
    obj = v.object({"a": v.string()})
    assert define_table(obj).validator is obj
    union = v.union(v.object({"k": v.literal("x")}), v.object({"k": v.literal("y")}))
    assert define_table(union).validator is union
    anything = v.any()
    assert define_table(anything).validator is anything


@pytest.mark.parametrize(
    "bad", [v.string(), v.union(v.object({}), v.string()), v.array(v.any()), "x", None]
)
def test_define_table_rejects_other_validators(bad):
    with pytest.raises(SchemaError, match="define_table"):
        define_table(bad)


@pytest.mark.parametrize("field", ["_private", "_ID", "_creation_time"])
def test_define_table_rejects_underscore_fields(field):
    with pytest.raises(SchemaError, match=field):
        define_table({field: v.string()})
    with pytest.raises(SchemaError, match=field):
        define_table(v.union(v.object({"a": v.string()}), v.object({field: v.string()})))


def test_nested_underscore_fields_are_allowed():
    define_table({"a": v.object({"_inner": v.string()})})


# -- indexes ---------------------------------------------------------------------------------


def test_index_returns_a_new_table_definition():
    base = _table()
    indexed = base.index("by_a", ["a"])
    assert base.indexes == ()
    assert indexed.indexes == (IndexDefinition("by_a", ("a",)),)
    assert indexed.validator is base.validator


def test_index_accepts_the_object_form_and_staged():
    table = _table().index("by_a", {"fields": ["a", "b"], "staged": True})
    assert table.indexes == (IndexDefinition("by_a", ("a", "b"), staged=True),)


def test_index_accepts_nested_paths_and_tuples():
    table = _table().index("by_c_x", ("c.x",))
    assert table.indexes[0].fields == ("c.x",)


def test_several_indexes_are_kept_in_order():
    table = _table().index("by_a", ["a"]).index("by_b", ["b"]).index("by_ab", ["a", "b"])
    assert [i.name for i in table.indexes] == ["by_a", "by_b", "by_ab"]


@pytest.mark.parametrize("name", sorted(IMPLICIT_INDEXES))
def test_reserved_index_names(name):
    with pytest.raises(SchemaError, match="reserved"):
        _table().index(name, ["a"])


@pytest.mark.parametrize("name", ["_by_a", "1by", "by-a", "by a", "", "x" * 65, None, "bý"])
def test_invalid_index_names(name):
    with pytest.raises(SchemaError, match="Invalid index name"):
        _table().index(name, ["a"])


def test_index_name_of_64_chars_is_allowed():
    _table().index("x" * 64, ["a"])


def test_index_needs_at_least_one_field():
    with pytest.raises(SchemaError, match="at least one field"):
        _table().index("by_nothing", [])


def test_index_field_limit_counts_creation_time():
    fields = [f"f{i}" for i in range(15)]
    define_table(v.any()).index("wide", fields)
    with pytest.raises(SchemaError, match="too many fields"):
        define_table(v.any()).index("wider", [*fields, "f15"])


def test_index_rejects_duplicate_fields():
    with pytest.raises(SchemaError, match="twice"):
        _table().index("by_aa", ["a", "b", "a"])


def test_index_rejects_explicit_creation_time():
    with pytest.raises(SchemaError, match="_creationTime is added to every index"):
        _table().index("by_a_time", ["a", "_creationTime"])


@pytest.mark.parametrize("field", ["_id", "_other"])
def test_index_rejects_underscore_fields(field):
    with pytest.raises(SchemaError, match="starts with '_'"):
        _table().index("by_x", [field])


@pytest.mark.parametrize("fields", [[""], [1], ["a", None]])
def test_index_field_names_must_be_non_empty_strings(fields):
    with pytest.raises(SchemaError, match="non-empty strings"):
        _table().index("by_x", fields)


@pytest.mark.parametrize("fields", ["a", 5, None, {"fields": "a"}])
def test_index_fields_must_be_a_list(fields):
    with pytest.raises(SchemaError, match="must be a list"):
        _table().index("by_x", fields)


def test_duplicate_index_names_are_rejected():
    with pytest.raises(SchemaError, match="Duplicate index name 'by_a'"):
        _table().index("by_a", ["a"]).index("by_a", ["b"])


def test_identical_index_fields_are_rejected():
    with pytest.raises(SchemaError, match="same fields"):
        _table().index("by_a", ["a", "b"]).index("by_a_too", ["a", "b"])


def test_same_fields_in_another_order_are_a_different_index():
    _table().index("by_ab", ["a", "b"]).index("by_ba", ["b", "a"])


def test_at_most_32_indexes():
    table = define_table(v.any())
    for i in range(32):
        table = table.index(f"i{i}", [f"f{i}"])
    assert len(table.indexes) == 32
    with pytest.raises(SchemaError, match="at most 32 indexes"):
        table.index("i32", ["f32"])


# -- table names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "users", "Users_2", "x" * 64])
def test_valid_table_names(name):
    assert check_table_name(name) == name


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a b", "é", "x" * 65, "a.b"])
def test_invalid_table_names(name):
    with pytest.raises(SchemaError, match="Invalid table name"):
        check_table_name(name)


@pytest.mark.parametrize("name", ["_users", "_", "__", "_scheduled_functions"])
def test_underscore_table_names_are_reserved(name):
    with pytest.raises(SchemaError, match="reserved"):
        check_table_name(name)


def test_system_table_names_may_start_with_underscore():
    assert check_table_name("_scheduled_functions", system=True) == "_scheduled_functions"
    with pytest.raises(SchemaError):
        check_table_name("_", system=True)
    with pytest.raises(SchemaError):
        check_table_name("_1x", system=True)


def test_table_names_must_be_strings():
    with pytest.raises(SchemaError, match="must be strings"):
        check_table_name(5)


# -- define_schema ---------------------------------------------------------------------------


def test_define_schema_keeps_tables_and_validation_flag():
    table = _table()
    schema = define_schema({"items": table}, schema_validation=False, strict_table_name_types=False)
    assert schema.tables == {"items": table}
    assert schema.schema_validation is False
    assert define_schema({}).schema_validation is True


def test_define_schema_copies_the_table_mapping():
    tables = {"items": _table()}
    schema = define_schema(tables)
    tables["other"] = _table()
    assert list(schema.tables) == ["items"]


@pytest.mark.parametrize("name", ["_items", "1items", "", "bad name"])
def test_define_schema_checks_table_names(name):
    with pytest.raises(SchemaError):
        define_schema({name: _table()})


@pytest.mark.parametrize("definition", [v.object({}), {"a": v.string()}, None])
def test_define_schema_needs_table_definitions(definition):
    with pytest.raises(SchemaError, match="must be define_table"):
        define_schema({"items": definition})


def test_define_schema_needs_a_mapping():
    with pytest.raises(SchemaError, match="dict of table name"):
        define_schema([("items", _table())])


# -- validate_write --------------------------------------------------------------------------

DOC_SYSTEM = {"_id": new_id(1), "_creationTime": 1.0}


def test_validate_write_accepts_matching_documents_with_system_fields():
    schema = define_schema({"items": _table()})
    schema.validate_write("items", {**DOC_SYSTEM, "a": "x", "b": 1.0}, _resolve)


def test_validate_write_raises_schema_violation_naming_the_table():
    schema = define_schema({"items": _table()})
    with pytest.raises(SchemaViolation) as info:
        schema.validate_write("items", {**DOC_SYSTEM, "a": 1, "b": 1.0}, _resolve)
    message = str(info.value)
    assert message.startswith(
        'Failed to insert or update a document in table "items" because it does not match '
        "the schema:"
    )
    assert "Path: .a" in message
    assert isinstance(info.value, ValidationError)
    assert isinstance(info.value.__cause__, ValidationError)


def test_validate_write_rejects_missing_and_extra_fields():
    schema = define_schema({"items": _table()})
    with pytest.raises(SchemaViolation, match="missing the required field `b`"):
        schema.validate_write("items", {**DOC_SYSTEM, "a": "x"}, _resolve)
    with pytest.raises(SchemaViolation, match="extra field `z`"):
        schema.validate_write("items", {**DOC_SYSTEM, "a": "x", "b": 1.0, "z": 0}, _resolve)


def test_validate_write_ignores_tables_not_in_the_schema():
    schema = define_schema({"items": _table()})
    schema.validate_write("other", {**DOC_SYSTEM, "anything": [1, 2]}, _resolve)


def test_validate_write_does_nothing_when_validation_is_off():
    schema = define_schema({"items": _table()}, schema_validation=False)
    schema.validate_write("items", {**DOC_SYSTEM, "a": 1}, _resolve)


def test_validate_write_resolves_ids_through_the_resolver():
    schema = define_schema({"posts": define_table({"author": v.id("users")})})
    schema.validate_write("posts", {**DOC_SYSTEM, "author": new_id(1)}, _resolve)
    with pytest.raises(SchemaViolation, match="from table `posts`"):
        schema.validate_write("posts", {**DOC_SYSTEM, "author": new_id(2)}, _resolve)


def test_validate_document_strips_only_system_fields():
    table = define_table({"a": v.string()})
    table.validate_document({"_id": "x", "_creationTime": 1.0, "a": "y"}, _resolve)
    with pytest.raises(ValidationError):
        table.validate_document({"_id": "x", "a": "y", "_other": 1}, _resolve)


def test_system_fields_constant():
    assert SYSTEM_FIELDS == ("_id", "_creationTime")


def test_default_schema_definition_is_empty_and_validating():
    schema = SchemaDefinition()
    assert dict(schema.tables) == {}
    assert schema.schema_validation is True


# -- system fields in table validators ---------------------------------------------------------


def _users_with_system_fields() -> TableDefinition:
    return define_table(
        {"_id": v.id("users"), "_creationTime": v.number(), "name": v.string(), "w": v.number()}
    )


def test_a_table_validator_may_list_the_system_fields():
    schema = define_schema({"users": _users_with_system_fields().index("by_name", ["name"])})
    doc = {"_id": new_id(1), "_creationTime": 1.0, "name": "Ada", "w": 3}
    stored = schema.validate_write("users", doc, _resolve)
    assert stored == {**doc, "w": 3.0}
    with pytest.raises(SchemaViolation, match="extra field `z`"):
        schema.validate_write("users", {**doc, "z": 1}, _resolve)
    with pytest.raises(SchemaViolation, match="which does not match the table name"):
        schema.validate_write("users", {**doc, "_id": new_id(2)}, _resolve)


def test_system_fields_in_a_union_of_objects_and_in_v_object():
    union = v.union(
        v.object({"_id": v.id("users"), "kind": v.literal("a")}),
        v.object({"kind": v.literal("b")}),
    )
    schema = define_schema(
        {
            "users": define_table(union),
            "posts": define_table(v.object({"_creationTime": v.float64()})),
        }
    )
    for kind in ("a", "b"):
        schema.validate_write("users", {**DOC_SYSTEM, "kind": kind}, _resolve)
    schema.validate_write("posts", {"_id": new_id(2), "_creationTime": 2.0}, _resolve)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"_id": v.id("posts")}, r"_id.*v\.id\('users'\)"),
        ({"_id": v.string()}, r"_id.*v\.id\('users'\)"),
        ({"_creationTime": v.int64()}, r"_creationTime.*v\.number\(\)"),
        ({"_creationTime": v.string()}, r"_creationTime.*v\.number\(\)"),
    ],
)
def test_system_field_validators_must_describe_the_system_fields(fields, message):
    with pytest.raises(SchemaError, match=message):
        define_schema({"users": define_table({"name": v.string(), **fields})})


# -- validate_write coerces ints in float fields -----------------------------------------------


def test_validate_write_returns_the_document_to_store_with_ints_as_floats():
    schema = define_schema({"items": _table()})
    doc = {**DOC_SYSTEM, "a": "x", "b": 4000}
    stored = schema.validate_write("items", doc, _resolve)
    assert type(stored["b"]) is float and stored["b"] == 4000.0
    assert stored["_id"] == doc["_id"]
    union = define_schema(
        {"items": define_table(v.union(v.object({"b": v.number()}), v.object({"c": v.string()})))}
    )
    assert type(union.validate_write("items", {**DOC_SYSTEM, "b": 1}, _resolve)["b"]) is float
    untouched = {**DOC_SYSTEM, "b": 1}
    assert schema.validate_write("other", untouched, _resolve) is untouched


# -- index fields must exist in the table validator --------------------------------------------


@pytest.mark.parametrize(
    ("validator", "fields"),
    [
        (v.object({"a": v.string()}), ["a"]),
        (v.object({"a": v.optional(v.string())}), ["a"]),
        (v.object({"a": v.object({"b": v.number()})}), ["a.b"]),
        (v.object({"a": v.optional(v.object({"b": v.optional(v.number())}))}), ["a.b"]),
        (v.object({"a": v.any()}), ["a.b.c"]),
        (v.object({"a": v.union(v.string(), v.object({"b": v.string()}))}), ["a.b"]),
        (v.object({"a": v.union(v.string(), v.any())}), ["a.zzz"]),
        (v.object({"a": v.record(v.string(), v.object({"b": v.string()}))}), ["a.k.b"]),
        (v.union(v.object({"a": v.string()}), v.object({"b": v.string()})), ["b"]),
        (v.any(), ["anything"]),
    ],
)
def test_index_fields_the_validator_can_have(validator, fields):
    define_table(validator).index("by_x", fields)


@pytest.mark.parametrize(
    ("validator", "fields", "missing"),
    [
        (v.object({"a": v.string()}), ["b"], "'b'"),
        (v.object({"a": v.string()}), ["a", "typo"], "'typo'"),
        (v.object({"a": v.object({"b": v.number()})}), ["a.c"], "'a.c'"),
        (v.object({"a": v.string()}), ["a.b"], "'a.b'"),
        (v.union(v.object({"a": v.string()}), v.object({"b": v.string()})), ["c"], "'c'"),
    ],
)
def test_index_on_a_field_the_validator_cannot_have_is_a_schema_error(validator, fields, missing):
    with pytest.raises(SchemaError, match=f"Index 'by_x'.*field {missing}") as info:
        define_table(validator).index("by_x", fields)
    assert "v.optional" in str(info.value)  # says how to fix it

"""Validators (`v.*`): what each accepts and rejects, messages with paths, JSON export."""

from __future__ import annotations

import math

import pytest

from kernel_ext.errors import ValidationError
from kernel_ext.store.ids import new_id
from kernel_ext.store.validators import Validator, v
from kernel_ext.store.values import UNDEFINED

TABLES = {1: "users", 2: "posts"}
USER_ID = new_id(1)
POST_ID = new_id(2)
ORPHAN_ID = new_id(99)


def resolve(number: int) -> str | None:
    return TABLES.get(number)


SAMPLES = {
    "null": None,
    "true": True,
    "int": 1,
    "float": 1.5,
    "nan": math.nan,
    "str": "s",
    "bytes": b"b",
    "list": [1],
    "dict": {"a": 1},
}


def _accepted(validator: Validator) -> set[str]:
    out = set()
    for name, value in SAMPLES.items():
        try:
            validator.check(value, "", resolve)
        except ValidationError:
            continue
        out.add(name)
    return out


@pytest.mark.parametrize(
    ("validator", "accepts"),
    [
        (v.string(), {"str"}),
        (v.number(), {"int", "float", "nan"}),
        (v.float64(), {"int", "float", "nan"}),
        (v.int64(), {"int"}),
        (v.boolean(), {"true"}),
        (v.null(), {"null"}),
        (v.bytes(), {"bytes"}),
        (v.any(), set(SAMPLES)),
        (v.array(v.int64()), {"list"}),
        (v.object({"a": v.int64()}), {"dict"}),
        (v.record(v.string(), v.int64()), {"dict"}),
        (v.literal("s"), {"str"}),
        (v.literal(True), {"true"}),
        (v.union(v.string(), v.null()), {"str", "null"}),
        (v.nullable(v.bytes()), {"bytes", "null"}),
        (v.optional(v.string()), {"str"}),
    ],
)
def test_each_validator_accepts_exactly_its_type(validator, accepts):
    assert _accepted(validator) == accepts


def test_string_accepts_id_strings():
    assert v.string().check(USER_ID) == USER_ID


def test_boolean_and_int64_keep_bool_and_int_apart():
    with pytest.raises(ValidationError):
        v.int64().check(True)
    with pytest.raises(ValidationError):
        v.boolean().check(1)
    assert v.int64().check(-(2**63)) == -(2**63)


# -- v.number ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, -1, 2**53, -(2**53), 12345])
def test_number_accepts_safe_ints_and_converts_to_float(value):
    out = v.number().check(value)
    assert type(out) is float
    assert out == float(value)
    assert type(v.float64().check(value)) is float


@pytest.mark.parametrize("value", [2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)])
def test_number_rejects_ints_beyond_2_pow_53(value):
    with pytest.raises(ValidationError, match=r"v\.number\(\)"):
        v.number().check(value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, -0.0, math.nan, 1e308])
def test_number_accepts_every_float(value):
    out = v.number().check(value)
    assert out is value


def test_number_rejects_bool():
    with pytest.raises(ValidationError):
        v.number().check(True)


# -- v.literal -----------------------------------------------------------------------------


def test_literal_requires_same_type():
    assert v.literal(1).check(1) == 1
    with pytest.raises(
        ValidationError, match=r"does not match literal validator `v\.literal\(1\)`"
    ):
        v.literal(1).check(1.0)
    with pytest.raises(ValidationError):
        v.literal(1.0).check(1)
    with pytest.raises(ValidationError):
        v.literal(1).check(True)
    with pytest.raises(ValidationError):
        v.literal(True).check(1)
    with pytest.raises(ValidationError):
        v.literal("a").check("b")


def test_literal_float_uses_total_order_equality():
    assert v.literal(0.0).check(0.0) == 0.0
    with pytest.raises(ValidationError):
        v.literal(0.0).check(-0.0)
    assert math.isnan(v.literal(math.nan).check(math.nan))


@pytest.mark.parametrize("bad", [None, b"x", [1], {"a": 1}, UNDEFINED])
def test_literal_rejects_non_scalar_literals(bad):
    with pytest.raises(TypeError):
        v.literal(bad)


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, 2**64])
def test_literal_int_must_be_an_int64(bad):
    # An int literal is an int64 literal; outside int64 it is no Convex value at all (and its
    # JSON export, `{"$integer": ...}`, cannot be built).
    with pytest.raises((TypeError, ValueError)):
        v.literal(bad)


def test_literal_int64_bounds_export():
    assert v.literal(2**63 - 1).to_json() == {
        "type": "literal",
        "value": {"$integer": "/////////38="},
    }


def test_literal_error_names_the_path():
    with pytest.raises(ValidationError, match=r"Path: \.role"):
        v.object({"role": v.literal("admin")}).check({"role": "x"})


# -- v.id ----------------------------------------------------------------------------------


def test_id_accepts_ids_of_its_table():
    assert v.id("users").check(USER_ID, "", resolve) == USER_ID


def test_id_rejects_ids_of_another_table():
    with pytest.raises(ValidationError, match=r"from table `posts`.*v\.id\('users'\)"):
        v.id("users").check(POST_ID, "", resolve)


def test_id_rejects_ids_of_unknown_tables():
    with pytest.raises(ValidationError, match="unknown"):
        v.id("users").check(ORPHAN_ID, "", resolve)
    # Without a resolver no table is known.
    with pytest.raises(ValidationError):
        v.id("users").check(USER_ID)


@pytest.mark.parametrize("bad", ["users", "", USER_ID[:-1], USER_ID.upper()])
def test_id_rejects_strings_that_are_not_ids(bad):
    with pytest.raises(ValidationError, match="not a valid document id"):
        v.id("users").check(bad, ".x", resolve)


@pytest.mark.parametrize("bad", [1, None, b"x", [USER_ID]])
def test_id_rejects_non_strings(bad):
    with pytest.raises(ValidationError, match="Value does not match validator"):
        v.id("users").check(bad, "", resolve)


@pytest.mark.parametrize("bad", ["", None, 1])
def test_id_needs_a_table_name(bad):
    with pytest.raises(TypeError):
        v.id(bad)


def test_id_error_names_the_path():
    with pytest.raises(ValidationError, match=r"Path: \.author"):
        v.object({"author": v.id("users")}).check({"author": POST_ID}, "", resolve)


# -- v.array -------------------------------------------------------------------------------


def test_array_checks_every_element_and_names_the_index():
    assert v.array(v.number()).check([1, 2.5]) == [1.0, 2.5]
    assert v.array(v.string()).check([]) == []
    with pytest.raises(ValidationError, match=r"Path: \.tags\[2\]"):
        v.object({"tags": v.array(v.string())}).check({"tags": ["a", "b", 3]})


def test_array_rejects_non_lists():
    with pytest.raises(ValidationError, match="Path: \\(root\\)"):
        v.array(v.any()).check("abc")


# -- v.object ------------------------------------------------------------------------------


def test_object_accepts_matching_objects_and_returns_checked_copy():
    validator = v.object({"a": v.number(), "b": v.string()})
    out = validator.check({"a": 1, "b": "x"})
    assert out == {"a": 1.0, "b": "x"}
    assert type(out["a"]) is float


def test_object_missing_field_message_names_field_and_path():
    validator = v.object({"a": v.object({"b": v.string()})})
    with pytest.raises(ValidationError) as info:
        validator.check({"a": {}})
    message = str(info.value)
    assert "Object is missing the required field `b`" in message
    assert "v.optional" in message
    assert "Path: .a" in message


def test_object_extra_field_message_names_field_and_path():
    validator = v.object({"a": v.object({"b": v.string()})})
    with pytest.raises(ValidationError) as info:
        validator.check({"a": {"b": "x", "c": 1}})
    message = str(info.value)
    assert "Object contains extra field `c` that is not in the validator" in message
    assert "Path: .a" in message


def test_nested_value_mismatch_names_full_path():
    validator = v.object({"a": v.object({"b": v.string()})})
    with pytest.raises(ValidationError) as info:
        validator.check({"a": {"b": 5}})
    message = str(info.value)
    assert "Value does not match validator." in message
    assert "Path: .a.b" in message
    assert "v.string()" in message
    assert "int64" in message


def test_top_level_errors_say_root():
    with pytest.raises(ValidationError, match=r"Path: \(root\)"):
        v.object({"a": v.string()}).check({})
    with pytest.raises(ValidationError, match=r"Path: \(root\)"):
        v.object({}).check([])


def test_object_field_holding_undefined_counts_as_missing():
    validator = v.object({"a": v.optional(v.string()), "b": v.string()})
    assert validator.check({"a": UNDEFINED, "b": "x"}) == {"b": "x"}


@pytest.mark.parametrize("bad", [[("a", v.string())], "a", None])
def test_object_needs_a_dict_of_validators(bad):
    with pytest.raises(TypeError):
        v.object(bad)


def test_object_fields_must_be_validators():
    with pytest.raises(TypeError, match="field 'a' must be a validator"):
        v.object({"a": str})


# -- v.optional / v.nullable ---------------------------------------------------------------


def test_optional_field_may_be_absent_but_not_null():
    validator = v.object({"a": v.optional(v.string())})
    assert validator.check({}) == {}
    assert validator.check({"a": "x"}) == {"a": "x"}
    with pytest.raises(ValidationError, match=r"Path: \.a"):
        validator.check({"a": None})


def test_nullable_field_is_required_but_may_be_null():
    validator = v.object({"a": v.nullable(v.string())})
    assert validator.check({"a": None}) == {"a": None}
    assert validator.check({"a": "x"}) == {"a": "x"}
    with pytest.raises(ValidationError, match="missing the required field `a`"):
        validator.check({})


def test_optional_flag():
    assert v.optional(v.string()).optional is True
    assert v.string().optional is False
    assert v.nullable(v.string()).optional is False


def test_optional_needs_a_validator():
    with pytest.raises(TypeError):
        v.optional("string")


# -- v.union -------------------------------------------------------------------------------


def test_union_first_match_wins():
    # The first member decides the coercion: int stays int only if v.int64 comes first.
    assert type(v.union(v.number(), v.int64()).check(5)) is float
    assert type(v.union(v.int64(), v.number()).check(5)) is int


def test_union_of_objects_picks_the_matching_shape():
    validator = v.union(
        v.object({"kind": v.literal("a"), "x": v.number()}),
        v.object({"kind": v.literal("b"), "y": v.string()}),
    )
    assert validator.check({"kind": "b", "y": "z"}) == {"kind": "b", "y": "z"}
    with pytest.raises(ValidationError, match=r"(?s)Value does not match validator.*Path: \.u"):
        v.object({"u": validator}).check({"u": {"kind": "b", "x": 1.0}})


def test_empty_union_accepts_nothing():
    with pytest.raises(ValidationError):
        v.union().check(None)


def test_union_members_must_be_validators():
    with pytest.raises(TypeError):
        v.union(v.string(), int)


# -- v.record ------------------------------------------------------------------------------


def test_record_checks_keys_and_values():
    validator = v.record(v.string(), v.number())
    assert validator.check({"a": 1, "b": 2.5}) == {"a": 1.0, "b": 2.5}
    assert validator.check({}) == {}
    with pytest.raises(ValidationError, match=r"\.m\.b"):
        v.object({"m": validator}).check({"m": {"a": 1, "b": "x"}})


def test_record_with_id_keys_checks_the_table():
    validator = v.record(v.id("users"), v.boolean())
    assert validator.check({USER_ID: True}, "", resolve) == {USER_ID: True}
    with pytest.raises(ValidationError, match=r"\.keys\(\)"):
        validator.check({POST_ID: True}, "", resolve)


def test_record_rejects_non_objects():
    with pytest.raises(ValidationError):
        v.record(v.string(), v.any()).check([])


def test_record_values_cannot_be_optional():
    with pytest.raises(TypeError, match=r"cannot be v\.optional"):
        v.record(v.string(), v.optional(v.string()))


def test_record_keys_cannot_be_optional():
    # convex-js: "Record validator cannot have optional keys".
    with pytest.raises(TypeError):
        v.record(v.optional(v.string()), v.any())


def test_record_needs_validators():
    with pytest.raises(TypeError):
        v.record(str, v.any())


# -- to_json -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validator", "json"),
    [
        (v.string(), {"type": "string"}),
        (v.number(), {"type": "number"}),
        (v.float64(), {"type": "number"}),
        (v.int64(), {"type": "bigint"}),
        (v.boolean(), {"type": "boolean"}),
        (v.null(), {"type": "null"}),
        (v.bytes(), {"type": "bytes"}),
        (v.any(), {"type": "any"}),
        (v.id("users"), {"type": "id", "tableName": "users"}),
        (v.literal("a"), {"type": "literal", "value": "a"}),
        (v.literal(1), {"type": "literal", "value": {"$integer": "AQAAAAAAAAA="}}),
        (v.literal(1.5), {"type": "literal", "value": 1.5}),
        (v.literal(False), {"type": "literal", "value": False}),
        (v.array(v.string()), {"type": "array", "value": {"type": "string"}}),
        (
            v.union(v.string(), v.null()),
            {"type": "union", "value": [{"type": "string"}, {"type": "null"}]},
        ),
        (v.optional(v.int64()), {"type": "bigint"}),
        (
            v.nullable(v.string()),
            {"type": "union", "value": [{"type": "string"}, {"type": "null"}]},
        ),
        (
            v.object({"a": v.string(), "b": v.optional(v.number())}),
            {
                "type": "object",
                "value": {
                    "a": {"fieldType": {"type": "string"}, "optional": False},
                    "b": {"fieldType": {"type": "number"}, "optional": True},
                },
            },
        ),
    ],
)
def test_to_json_shapes(validator, json):
    assert validator.to_json() == json


def test_record_to_json_shape_matches_convex():
    # convex-js 1.45 `VRecord.json`: values are wrapped as an object field type.
    assert v.record(v.string(), v.number()).to_json() == {
        "type": "record",
        "keys": {"type": "string"},
        "values": {"fieldType": {"type": "number"}, "optional": False},
    }


# -- repr and base class ------------------------------------------------------------------


def test_reprs_read_like_the_builders():
    validator = v.object(
        {
            "a": v.optional(v.array(v.union(v.literal("x"), v.null()))),
            "b": v.record(v.string(), v.any()),
            "c": v.id("users"),
            "d": v.float64(),
            "e": v.int64(),
        }
    )
    assert repr(validator) == (
        "v.object({a: v.optional(v.array(v.union(v.literal('x'), v.null()))), "
        "b: v.record(v.string(), v.any()), c: v.id('users'), d: v.float64(), e: v.int64()})"
    )


def test_base_validator_is_abstract():
    with pytest.raises(NotImplementedError):
        Validator().check(1)
    with pytest.raises(NotImplementedError):
        Validator().to_json()


def test_mismatch_message_shows_value_and_type():
    with pytest.raises(ValidationError) as info:
        v.string().check([1, 2], ".x")
    message = str(info.value)
    assert "Value: [1, 2] (array)" in message
    assert "Validator: v.string()" in message


_DOC_VALIDATOR = v.object(
    {"a": v.string(), "b": v.optional(v.array(v.int64())), "c": v.object({"d": v.float64()})}
)


@pytest.mark.parametrize(
    "fields",
    [
        {"a": "x", "c": {"d": 1.0}},
        {"a": "x", "b": [1, 2], "c": {"d": 1.0}},
        {"a": 1, "c": {"d": 1.0}},  # wrong type
        {"c": {"d": 1.0}},  # missing
        {"a": "x", "c": {"d": 1.0}, "z": 1},  # extra
        {"a": "x", "b": [1, "2"], "c": {"d": 1.0}},  # nested
        {"a": "x", "c": {"d": 1}},  # int is not a float64
    ],
)
def test_check_fields_raises_what_check_raises_without_the_ignored_fields(fields):
    doc = {"_id": "id", "_creationTime": 1.0, **fields}
    try:
        _DOC_VALIDATOR.check(fields)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as info:
            _DOC_VALIDATOR.check_fields(doc, ("_id", "_creationTime"), lambda n: None)
        assert str(info.value) == str(exc)
    else:
        _DOC_VALIDATOR.check_fields(doc, ("_id", "_creationTime"), lambda n: None)


# -- ints in float fields, nested ------------------------------------------------------------


@pytest.mark.parametrize(
    ("validator", "value", "expected"),
    [
        (v.object({"w": v.number()}), {"w": 4000}, {"w": 4000.0}),
        (v.object({"w": v.optional(v.float64())}), {"w": 2**53}, {"w": float(2**53)}),
        (v.array(v.number()), [1, 2.5, -(2**53)], [1.0, 2.5, -float(2**53)]),
        (v.record(v.string(), v.number()), {"a": 1, "b": 2}, {"a": 1.0, "b": 2.0}),
        (v.union(v.string(), v.number()), 7, 7.0),
        (v.nullable(v.number()), 7, 7.0),
        (
            v.object({"o": v.object({"xs": v.array(v.union(v.null(), v.number()))})}),
            {"o": {"xs": [None, 3]}},
            {"o": {"xs": [None, 3.0]}},
        ),
    ],
)
def test_number_coerces_ints_wherever_it_is_nested(validator, value, expected):
    out = validator.check(value)
    assert out == expected
    assert repr(out) == repr(expected)  # 4000.0, not 4000: the type is float all the way down


def test_check_fields_returns_the_document_with_ints_in_float_fields_coerced():
    validator = v.object({"w": v.number(), "n": v.int64(), "o": v.object({"x": v.number()})})
    doc = {"_id": "id", "_creationTime": 1.0, "w": 4000, "n": 3, "o": {"x": 1}}
    out = validator.check_fields(doc, ("_id", "_creationTime"), resolve)
    assert out == {"_id": "id", "_creationTime": 1.0, "w": 4000.0, "n": 3, "o": {"x": 1.0}}
    assert type(out["w"]) is float
    assert type(out["o"]["x"]) is float
    assert type(out["n"]) is int
    assert type(doc["w"]) is int  # the caller's document is left alone
    plain = {"_id": "id", "_creationTime": 1.0, "w": 1.5, "n": 3, "o": {"x": 1.0}}
    assert validator.check_fields(plain, ("_id", "_creationTime"), resolve) == plain


# -- unknown builders --------------------------------------------------------------------------


def test_unknown_builder_is_a_schema_error_listing_the_validators():
    from kernel_ext.errors import SchemaError

    with pytest.raises(SchemaError) as info:
        v.strin()
    message = str(info.value)
    assert "v.strin" in message
    assert "v.string()" in message  # the suggestion
    for name in ("number", "float64", "int64", "object", "union", "optional", "nullable"):
        assert f"v.{name}(" in message
    assert isinstance(info.value, AttributeError)
    assert not hasattr(v, "strin")
    assert hasattr(v, "string")

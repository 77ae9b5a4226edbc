"""Functions: loading folders, references, nested calls, returns validation, auth."""

from __future__ import annotations

from pathlib import Path

import pytest

import kernel_ext
from kernel_ext import ConvexError, api, mutation, query, v
from kernel_ext.errors import ReturnsError, SchemaError, UnknownFunction, ValidationError

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture
def nested(store_url):
    c = kernel_ext.connect(store_url)
    c.load_functions(FIXTURES / "nested_app")
    yield c
    c.close()


def test_subfolder_modules_and_relative_imports(nested):
    assert "admin/users:greet" in nested.functions()
    assert nested.query("admin/users:greet", name="ada") == "HELLO ADA"
    assert nested.query(api.admin.users.greet, name="bob") == "HELLO BOB"


def test_nested_mutation_failure_undoes_only_its_writes(nested):
    assert nested.mutation("admin/users:add_all", names=["a", "!b", "c"]) == [
        "a",
        {"rejected": "!b"},
        "c",
    ]
    assert nested.query("admin/users:names") == ["a", "c"]


def test_child_writes_undone_when_parent_fails(nested):
    with pytest.raises(RuntimeError):
        nested.mutation("admin/users:add_then_fail_parent", name="x")
    assert nested.query("admin/users:names") == []


def test_run_query_inside_query(nested):
    nested.mutation("admin/users:add_all", names=["a", "b"])
    assert nested.query("admin/users:count_via_run_query") == 2


def test_path_forms_are_canonical(nested):
    assert nested.query("admin/users.py:greet", name="x") == "HELLO X"
    with pytest.raises(UnknownFunction):
        nested.query("admin/users:nope")
    with pytest.raises(UnknownFunction):
        nested.query("a:b:c")


def test_bad_schema_module(tmp_path):
    (tmp_path / "schema.py").write_text("schema = 42\n")
    with kernel_ext.connect("memory") as c, pytest.raises(SchemaError, match="define_schema"):
        c.load_functions(tmp_path)


def test_existing_documents_checked_against_new_schema(bare_client):
    @mutation
    def put(ctx):
        ctx.db.insert("things", {"n": "not a number"})

    bare_client.backend.register("t:put", put)
    bare_client.mutation("t:put")
    schema = kernel_ext.define_schema({"things": kernel_ext.define_table({"n": v.int64()})})
    with pytest.raises(SchemaError, match="does not match the new schema"):
        bare_client.backend.store.set_schema(schema)
    assert bare_client.backend.store.schema is None


def test_returns_validation_rolls_back_mutation(bare_client):
    @mutation(returns=v.string())
    def bad(ctx):
        ctx.db.insert("things", {"n": 1})
        return 5

    @query
    def count(ctx):
        return len(ctx.db.query("things").collect())

    bare_client.backend.register("t:bad", bad)
    bare_client.backend.register("t:count", count)
    with pytest.raises(ReturnsError, match=r"v\.string"):
        bare_client.mutation("t:bad")
    assert bare_client.query("t:count") == 0


def test_query_cannot_write(bare_client):
    @query
    def sneaky(ctx):
        return ctx.db.insert("things", {})

    bare_client.backend.register("t:sneaky", sneaky)
    with pytest.raises(AttributeError):
        bare_client.query("t:sneaky")


def test_optional_argument_left_out_uses_default(bare_client):
    @query(args={"a": v.optional(v.int64())})
    def opt(ctx, a=41):
        return a + 1

    bare_client.backend.register("t:opt", opt)
    assert bare_client.query("t:opt") == 42
    assert bare_client.query("t:opt", a=1) == 2


def test_number_validator_accepts_small_ints(bare_client):
    @query(args={"x": v.number()})
    def echo(ctx, x):
        return x

    bare_client.backend.register("t:echo", echo)
    assert bare_client.query("t:echo", x=3) == 3.0
    assert isinstance(bare_client.query("t:echo", x=3), float)
    with pytest.raises(ValidationError):
        bare_client.query("t:echo", x=2**53 + 1)


def test_set_auth_with_verification():
    config = {"issuer": "https://issuer.test", "secret": "a-development-secret-of-32-bytes!!"}
    with kernel_ext.connect("memory", auth=config) as c:

        @query
        def me(ctx):
            return ctx.auth.get_user_identity()

        c.backend.register("t:me", me)
        token = kernel_ext.make_dev_token(
            "u1",
            secret="a-development-secret-of-32-bytes!!",
            issuer="https://issuer.test",
            email="a@b.c",
        )
        c.set_auth(token)
        identity = c.query("t:me")
        assert identity["tokenIdentifier"] == "https://issuer.test|u1"
        assert identity["email"] == "a@b.c"
        forged = kernel_ext.make_dev_token(
            "u1", secret="another-secret-of-at-least-32-bytes", issuer="https://issuer.test"
        )
        with pytest.raises(ValidationError, match="Invalid auth token"):
            c.set_auth(forged)
        c.clear_auth()
        assert c.query("t:me") is None


def test_subscription_follows_identity_change(bare_client):
    @query
    def me(ctx):
        identity = ctx.auth.get_user_identity()
        return None if identity is None else identity["subject"]

    bare_client.backend.register("t:me", me)
    sub = bare_client.subscribe("t:me")
    assert sub.value is None
    bare_client.set_auth(
        kernel_ext.make_dev_token("u9", secret="a-development-secret-of-32-bytes!!", issuer="local")
    )
    assert sub.value == "u9"


def test_convex_error_from_nested_action_call(bare_client):
    @mutation
    def fails(ctx):
        raise ConvexError("plain message")

    @kernel_ext.action
    def calls(ctx):
        try:
            ctx.run_mutation("t:fails")
        except ConvexError as exc:
            return exc.data

    bare_client.backend.register("t:fails", fails)
    bare_client.backend.register("t:calls", calls)
    assert bare_client.action("t:calls") == "plain message"

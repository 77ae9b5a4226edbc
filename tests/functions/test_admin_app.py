"""The example admin app (notebooks/admin_app) on the embedded store."""

from __future__ import annotations

from pathlib import Path

import pytest

import kernel_ext
from kernel_ext import ConvexError

APP = Path(__file__).parents[2] / "notebooks" / "admin_app"


@pytest.fixture
def admin(store_url):
    client = kernel_ext.connect(store_url)
    client.load_functions(APP)
    assert client.backend.call("seed:run", {}, kind="mutation", identity=None) == 3
    yield client
    client.close()


def as_user(client, email):
    return client.with_identity({"sub": email, "iss": "https://auth.example", "email": email})


def test_lookup_and_login_action(admin):
    ada = admin.query("users:get_user_by_email", email="ada@example.com")
    assert ada["role"] == "admin"
    session = admin.action(
        "users:login", email="ada@example.com", ip="127.0.0.1", when="2026-11-23T10:00:00Z"
    )
    assert (
        admin.query("users:get_user_by_email", email="ada@example.com")["lastLogin"]
        == "2026-11-23T10:00:00Z"
    )
    sessions = admin.backend.store.read(lambda txn: txn.query("user_sessions").collect())[0]
    assert [s["_id"] for s in sessions] == [session]
    assert sessions[0]["ip"] == "127.0.0.1"


def test_update_last_login_checks_the_user_exists(admin):
    grace = admin.query("users:get_user_by_email", email="grace@example.com")
    as_user(admin, "ada@example.com").mutation("users:delete_user", userId=grace["_id"])
    with pytest.raises(ConvexError) as info:
        admin.mutation("users:update_last_login", userId=grace["_id"], when="now")
    assert info.value.data["code"] == "NOT_FOUND"


def test_roles_and_permissions(admin):
    alan = admin.query("users:get_user_by_email", email="alan@example.com")
    with pytest.raises(ConvexError) as anonymous:
        admin.mutation("users:set_role", userId=alan["_id"], role="staff")
    assert anonymous.value.data["code"] == "UNAUTHENTICATED"
    with pytest.raises(ConvexError) as viewer:
        as_user(admin, "alan@example.com").mutation(
            "users:set_role", userId=alan["_id"], role="admin"
        )
    assert viewer.value.data == {"code": "FORBIDDEN", "needs": "users:set_role", "role": "viewer"}
    # Grace is staff with the users:set_role permission.
    as_user(admin, "grace@example.com").mutation("users:set_role", userId=alan["_id"], role="staff")
    assert admin.query("users:get_user_by_email", email="alan@example.com")["role"] == "staff"
    with pytest.raises(ConvexError) as no_create:
        as_user(admin, "grace@example.com").mutation(
            "users:create_user", email="x@y", name="X", role="viewer"
        )
    assert no_create.value.data["needs"] == "users:create"
    new_id = as_user(admin, "ada@example.com").mutation(
        "users:create_user", email="x@y", name="X", role="viewer"
    )
    assert admin.query("users:get_user_by_email", email="x@y")["_id"] == new_id


def test_two_factor_and_cascade_delete(admin):
    alan = admin.query("users:get_user_by_email", email="alan@example.com")
    admin.mutation("two_factor:configure", userId=alan["_id"], enabled=True, method="totp")
    admin.action("users:login", email="alan@example.com", ip="10.0.0.1", when="t1")
    assert admin.query("two_factor:get", userId=alan["_id"])["method"] == "totp"
    as_user(admin, "ada@example.com").mutation("users:delete_user", userId=alan["_id"])
    assert admin.query("two_factor:get", userId=alan["_id"]) is None
    assert admin.query("users:list_users", role="viewer") == []

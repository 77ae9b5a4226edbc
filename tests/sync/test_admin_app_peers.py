"""Role-based access of the example admin app (notebooks/admin_app) end to end: the server
verifies real signed user tokens, the functions look the caller up by the token's email and
check role and permissions, and the official clients see the outcome (data or ConvexError)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sync_peers import ISSUER, SECRET, ServerProcess, run_node, run_python_client

from kernel_ext.functions.auth import make_dev_token

APP = Path(__file__).parents[2] / "notebooks" / "admin_app"


def token_for(email: str, *, secret: str = SECRET) -> str:
    return make_dev_token(email, secret=secret, issuer=ISSUER, email=email)


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the admin app on a fresh, seeded store (each test changes roles)."""
    db = tmp_path / "store.db"
    server = ServerProcess(
        db, app=APP, extra=("--auth-issuer", ISSUER, "--auth-secret", SECRET)
    ).start()
    seeded = server.http(
        "/api/mutation",
        {"path": "seed:run", "args": {}, "format": "json"},
        headers={"Authorization": f"Convex {server.admin_key}"},
    )
    assert seeded == {"status": "success", "value": "3"}, seeded  # int64 in clean JSON
    yield server
    server.stop(signal.SIGKILL)


def test_python_client_roles_through_signed_tokens(admin_server, tmp_path):
    out = run_python_client(
        tmp_path,
        admin_server.url,
        """
        tokens = json.loads(os.environ["TOKENS"])

        def attempt(label, client, name, args):
            try:
                emit(label, {"ok": client.mutation(name, args)})
            except ConvexError as e:
                emit(label, {"error": e.data})

        anonymous = ConvexClient(URL)
        alan_id = anonymous.query("users:get_user_by_email", {"email": "alan@example.com"})["_id"]
        users = anonymous.subscribe("users:list_users", {"role": "staff"})
        emit("staff before", [u["email"] for u in next(users)])

        attempt("anonymous set_role", anonymous, "users:set_role",
                {"userId": alan_id, "role": "staff"})
        alan = ConvexClient(URL)
        alan.set_auth(tokens["alan"])
        attempt("viewer set_role", alan, "users:set_role", {"userId": alan_id, "role": "admin"})
        stranger = ConvexClient(URL)
        stranger.set_auth(tokens["stranger"])
        attempt("unknown user", stranger, "users:set_role", {"userId": alan_id, "role": "admin"})
        grace = ConvexClient(URL)
        grace.set_auth(tokens["grace"])
        attempt("permission set_role", grace, "users:set_role",
                {"userId": alan_id, "role": "staff"})
        attempt("permission delete", grace, "users:delete_user", {"userId": alan_id})
        # The anonymous subscription sees the role change made by another client.
        value = next(users)
        while "alan@example.com" not in [u["email"] for u in value]:
            value = next(users)
        emit("staff after", sorted(u["email"] for u in value))

        ada = ConvexClient(URL)
        ada.set_auth(tokens["ada"])
        attempt("admin create", ada, "users:create_user",
                {"email": "edsger@example.com", "name": "Edsger Dijkstra", "role": "viewer"})
        emit("login", ada.action("users:login", {"email": "ada@example.com", "ip": "127.0.0.1",
                                                  "when": "2026-11-24T09:00:00Z"}) is not None)
        emit("last login", ada.query("users:get_user_by_email",
                                     {"email": "ada@example.com"})["lastLogin"])
        try:
            ada.query("users:id_for_email", {"email": "ada@example.com"})
        except Exception as e:
            emit("internal for users", str(e))
        """,
        env={
            "TOKENS": __import__("json").dumps(
                {
                    name: token_for(f"{name}@example.com")
                    for name in ("ada", "grace", "alan", "stranger")
                }
            )
        },
    )
    assert out["staff before"] == ["grace@example.com"]
    assert out["anonymous set_role"] == {
        "error": {"code": "UNAUTHENTICATED", "message": "Sign in first"}
    }
    assert out["viewer set_role"] == {
        "error": {"code": "FORBIDDEN", "needs": "users:set_role", "role": "viewer"}
    }
    assert out["unknown user"] == {
        "error": {"code": "UNKNOWN_USER", "email": "stranger@example.com"}
    }
    assert out["permission set_role"] == {"ok": None}
    assert out["permission delete"] == {
        "error": {"code": "FORBIDDEN", "needs": "users:delete", "role": "staff"}
    }
    assert out["staff after"] == ["alan@example.com", "grace@example.com"]
    assert out["admin create"]["ok"]  # the new user's id
    assert out["login"] is True
    assert out["last login"] == "2026-11-24T09:00:00Z"
    assert "Could not find public function" in out["internal for users"]


def test_a_token_signed_with_another_key_never_reaches_the_functions(admin_server, node_client):
    out = run_node(
        "admin_app.mjs",
        admin_server.url,
        env={
            "VIEWER_TOKEN": token_for("alan@example.com"),
            "ADMIN_TOKEN": token_for("ada@example.com"),
            "FORGED_TOKEN": token_for(
                "ada@example.com", secret="another-secret-that-is-long-enough-for-hs256"
            ),
        },
    )
    assert out["viewer"] == {
        "convexError": True,
        "data": {"code": "FORBIDDEN", "needs": "users:set_role", "role": "viewer"},
    }
    assert out["admin"] == {"ok": None}
    # A system error (HTTP 401), not a function's ConvexError: the handler never ran.
    assert out["forged"] == {
        "convexError": False,
        "message": '{"code":"Unauthenticated","message":"Invalid auth token: '
        'Signature verification failed"}',
    }
    assert out["role after"] == "staff"

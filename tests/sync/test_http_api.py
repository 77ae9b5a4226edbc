"""The HTTP API as request -> response functions, over a real (memory) backend."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest

from kernel_ext import query, v
from kernel_ext.engine import write_log
from kernel_ext.engine.store import Store
from kernel_ext.functions.auth import make_dev_token
from kernel_ext.functions.backend import Backend
from kernel_ext.persistence.sqlite import SqlitePersistence
from kernel_ext.sync.auth import AuthProvider, ServerAuthenticator
from kernel_ext.sync.http import HttpApi, HttpRequest
from kernel_ext.sync.messages import decode_ts, encode_ts
from kernel_ext.sync.runner import BackendRunner

APP = Path(__file__).parent / "app"
SECRET = "test-secret-of-at-least-32-bytes-long"
ENCODED = "convex_encoded_json"


@pytest.fixture(scope="module")
def backend():
    b = Backend(Store(SqlitePersistence(None)))
    b.load_functions(APP)
    yield b
    b.close()


@pytest.fixture(scope="module")
def api(backend):
    auth = ServerAuthenticator("the-admin-key", AuthProvider("https://issuer", secret=SECRET))
    return HttpApi(BackendRunner(backend), auth)


def post(api, path, body, **headers):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return api.handle(
        HttpRequest("POST", path, {}, {k.replace("_", "-"): v for k, v in headers.items()}, data)
    )


def test_query_mutation_action_as_the_python_http_client_sends_them(api):
    # convex.http_client.ConvexHttpClient: args as an object, encoded format.
    r = post(
        api,
        "/api/mutation",
        {"path": "counter:inc", "args": {"name": "h1", "by": 2}, "format": ENCODED},
    )
    assert r.status == 200 and r.json() == {"status": "success", "value": 2.0}
    r = post(api, "/api/query", {"path": "counter:get", "args": {"name": "h1"}, "format": ENCODED})
    assert r.json() == {"status": "success", "value": 2.0}
    r = post(
        api,
        "/api/action",
        {"path": "counter:inc_many", "args": {"name": "h1", "times": 2}, "format": ENCODED},
    )
    assert r.json() == {"status": "success", "value": [3.0, 4.0]}


def test_legacy_positional_args_as_the_js_http_client_sends_them(api):
    r = post(
        api,
        "/api/function",
        {"path": "counter.js:get", "args": [{"name": "h1"}], "format": ENCODED},
    )
    assert r.json()["status"] == "success"
    r = post(api, "/api/query", {"path": "values", "args": [{}], "format": ENCODED})
    assert r.json() == {"status": "success", "value": "the default export"}


def test_formats(api):
    args = {
        "n": {"$integer": base64.b64encode((41).to_bytes(8, "little")).decode()},
        "b": {"$bytes": "aGk="},
    }
    encoded = post(
        api, "/api/query", {"path": "values:typed", "args": args, "format": ENCODED}
    ).json()
    assert encoded["value"]["n"] == {
        "$integer": base64.b64encode((42).to_bytes(8, "little")).decode()
    }
    assert encoded["value"]["b"] == {"$bytes": base64.b64encode(b"hi!").decode()}
    clean = post(api, "/api/query", {"path": "values:typed", "args": args}).json()
    assert clean["value"]["n"] == "42" and clean["value"]["b"] == base64.b64encode(b"hi!").decode()
    r = post(api, "/api/query", {"path": "values:typed", "args": args, "format": "yaml"})
    assert r.status == 400 and r.json()["code"] == "BadFormat"


def test_get_query(api):
    args = json.dumps({"name": "h1"})
    r = api.handle(
        HttpRequest("GET", "/api/query", {"path": "counter:get", "args": args, "format": ENCODED})
    )
    assert r.json()["status"] == "success"
    r = api.handle(HttpRequest("GET", "/api/query", {"path": "counter:get", "args": "{bad"}))
    assert r.status == 400 and r.json()["code"] == "BadJsonBody"


def test_run_route_defaults_to_clean_json(api):
    r = post(api, "/api/run/nested/deep/where", {"args": {}})
    assert r.json() == {"status": "success", "value": "nested/deep:where"}
    r = post(
        api,
        "/api/run/values/typed",
        {"args": {"n": {"$integer": "AQAAAAAAAAA="}, "b": {"$bytes": ""}}},
    )
    assert r.json()["value"]["n"] == "2"
    assert post(api, "/api/run/only", {}).status == 404


def test_function_errors_are_http_200_with_error_data(api):
    r = post(
        api, "/api/query", {"path": "values:fail_convex", "args": {"code": "E1"}, "format": ENCODED}
    )
    assert r.status == 200
    assert r.json() == {
        "status": "error",
        "errorMessage": 'Uncaught ConvexError: {"code":"E1","n":"7"}',
        "errorData": {"code": "E1", "n": {"$integer": "BwAAAAAAAAA="}},
    }
    r = post(api, "/api/query", {"path": "values:fail_plain", "args": {}, "format": ENCODED})
    assert r.json() == {
        "status": "error",
        # As Convex does, the message ends with where the handler raised: the file's name
        # only (no server path) and the line.
        "errorMessage": "Uncaught ValueError: plain failure with a secret path /etc/hidden"
        "\n    at fail_plain (values.py:28)",
    }
    # The user's line, not the deepest frame of the standard library it called.
    r = post(api, "/api/query", {"path": "values:fail_in_the_standard_library", "args": {}})
    assert r.json()["errorMessage"].startswith("Uncaught JSONDecodeError: ")
    assert r.json()["errorMessage"].endswith("\n    at fail_in_the_standard_library (values.py:58)")
    r = post(api, "/api/query", {"path": "nope:nothing", "args": {}})
    assert r.status == 200 and "Could not find public function" in r.json()["errorMessage"]
    r = post(api, "/api/mutation", {"path": "counter:get", "args": {}})
    assert "defined as Query" in r.json()["errorMessage"]
    r = post(api, "/api/query", {"path": "values:typed", "args": {"n": {"$integer": "AA=="}}})
    assert r.json()["status"] == "error" and "ArgumentValidationError" in r.json()["errorMessage"]
    r = post(api, "/api/query", {"path": "values:typed", "args": "not an object"})
    assert r.json()["status"] == "error"


def test_a_failed_mutation_writes_nothing(api):
    r = post(api, "/api/mutation", {"path": "counter:fail_after_write", "args": {"name": "rb"}})
    assert r.json()["errorData"] == {"code": "ROLLED_BACK", "name": "rb"}
    assert (
        post(api, "/api/query", {"path": "counter:get", "args": {"name": "rb"}}).json()["value"]
        == 0.0
    )


def test_internal_functions_need_the_admin_key(api):
    r = post(api, "/api/query", {"path": "counter:secret", "args": {}})
    assert "Could not find public function" in r.json()["errorMessage"]
    r = post(
        api,
        "/api/query",
        {"path": "counter:secret", "args": {}},
        authorization="Convex the-admin-key",
    )
    assert r.json() == {"status": "success", "value": "internal data"}
    r = api.handle(
        HttpRequest(
            "POST",
            "/api/query",
            {"adminKey": "the-admin-key"},
            {},
            b'{"path":"counter:secret","args":{}}',
        )
    )
    # Headers only: a key in the URL would end up in logs (Convex accepts it; we do not).
    assert r.status == 401 and "Authorization: Convex <admin key>" in r.json()["message"]
    r = post(
        api, "/api/query", {"path": "counter:secret", "args": {}}, authorization="Convex wrong"
    )
    assert r.status == 401 and r.json()["code"] == "Unauthenticated"


def test_user_tokens_are_verified(api):
    token = make_dev_token("ada", secret=SECRET, issuer="https://issuer", name="Ada")
    r = post(api, "/api/query", {"path": "who:ami", "args": {}}, authorization=f"Bearer {token}")
    assert r.json()["value"]["subject"] == "ada" and r.json()["value"]["name"] == "Ada"
    assert r.json()["value"]["tokenIdentifier"] == "https://issuer|ada"
    forged = make_dev_token(
        "ada", secret="other-secret-of-at-least-32-bytes-long", issuer="https://issuer"
    )
    expired = make_dev_token("ada", secret=SECRET, issuer="https://issuer", ttl_s=-10)
    wrong_issuer = make_dev_token("ada", secret=SECRET, issuer="https://elsewhere")
    for bad in (forged, expired, wrong_issuer, "not.a.jwt"):
        r = post(api, "/api/query", {"path": "who:ami", "args": {}}, authorization=f"Bearer {bad}")
        assert r.status == 401, bad
    r = post(api, "/api/query", {"path": "who:ami", "args": {}})
    assert r.json()["value"] is None
    acting = base64.b64encode(json.dumps({"subject": "u9", "issuer": "x"}).encode()).decode()
    r = post(
        api,
        "/api/query",
        {"path": "who:ami", "args": {}},
        authorization=f"Convex the-admin-key:{acting}",
    )
    assert r.json()["value"]["tokenIdentifier"] == "x|u9"


@pytest.fixture
def fresh_api():
    """An API over a backend of its own (these tests redefine functions, prune history)."""
    b = Backend(Store(SqlitePersistence(None)))
    b.load_functions(APP)
    yield HttpApi(BackendRunner(b), ServerAuthenticator("the-admin-key")), b
    b.close()


def test_query_at_ts_answers_exactly_or_says_why_not(fresh_api, monkeypatch):
    """The store keeps only the latest versions: a read as of an earlier ts is answered when
    nothing it reads was written since, and refused otherwise (never a wrong answer)."""
    api, backend = fresh_api

    def at(ts, name):
        body = {"path": "counter:get", "args": {"name": name}, "ts": encode_ts(ts)}
        return post(api, "/api/query_at_ts", body)

    post(api, "/api/mutation", {"path": "counter:inc", "args": {"name": "old", "by": 5}})
    post(api, "/api/mutation", {"path": "counter:inc", "args": {"name": "hot", "by": 1}})
    before = decode_ts(post(api, "/api/query_ts", b"").json()["ts"])
    post(api, "/api/mutation", {"path": "counter:inc", "args": {"name": "hot", "by": 1}})
    latest = decode_ts(post(api, "/api/query_ts", b"").json()["ts"])
    assert latest > before

    unchanged = at(before, "old")  # not written since `before`: its value then is its value now
    assert unchanged.status == 200 and unchanged.json()["value"] == 5.0
    assert at(latest, "hot").json()["value"] == 2.0
    changed = at(before, "hot")
    assert changed.status == 400 and changed.json()["code"] == "HistoricalQueryUnsupported"
    assert "changed after ts" in changed.json()["message"]
    future = at(latest + 1, "old")
    assert future.status == 400 and "later than the latest commit" in future.json()["message"]
    assert post(api, "/api/query_at_ts", {"path": "counter:get", "ts": "bad"}).status == 400

    # Beyond the history kept, nothing can be shown unchanged.
    monkeypatch.setattr(write_log, "HISTORY_MAX_KEYS", 0)
    backend.store.keep_history()  # with the smaller limit
    post(api, "/api/mutation", {"path": "counter:inc", "args": {"name": "hot", "by": 1}})
    ancient = at(before, "old")
    assert ancient.status == 400 and "older than the write history" in ancient.json()["message"]


def test_query_at_ts_refuses_a_read_across_a_function_redefinition(fresh_api):
    api, backend = fresh_api
    before = decode_ts(post(api, "/api/query_ts", b"").json()["ts"])

    @query(args={"name": v.optional(v.string())})
    def get(ctx, name="main"):
        return "redefined"

    backend.register("counter:get", get)
    body = {"path": "counter:get", "args": {"name": "x"}, "ts": encode_ts(before)}
    refused = post(api, "/api/query_at_ts", body)
    assert refused.status == 400 and "redefined after ts" in refused.json()["message"]
    now = post(api, "/api/query_ts", b"").json()["ts"]
    answered = post(api, "/api/query_at_ts", {**body, "ts": now})
    assert answered.json()["value"] == "redefined"


def test_query_ts_and_batch(api):
    ts_text = post(api, "/api/query_ts", b"").json()["ts"]
    r = post(
        api, "/api/query_at_ts", {"path": "counter:get", "args": {"name": "h1"}, "ts": ts_text}
    )
    assert r.json()["status"] == "success"
    r = post(
        api,
        "/api/query_batch",
        {
            "queries": [
                {"path": "counter:get", "args": {"name": "h1"}},
                {"path": "values:fail_convex", "args": {"code": "X"}, "format": ENCODED},
                {"path": "values:typed", "args": 5},
                {"path": "nested/deep:where", "args": {}},
            ]
        },
    )
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["success", "error", "error", "success"]
    assert results[1]["errorData"]["n"] == {"$integer": "BwAAAAAAAAA="}
    assert post(api, "/api/query_batch", {"queries": 5}).status == 400


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/api/nothing", b"{}", 404, "NotFound"),
        ("GET", "/api/mutation", b"", 405, "MethodNotAllowed"),
        ("POST", "/api/query", b"{not json", 400, "BadJsonBody"),
        ("POST", "/api/query", b"[1]", 400, "BadJsonBody"),
        ("POST", "/api/query", b'{"args":{}}', 400, "BadRequest"),
        ("POST", "/api/query", b'{"path":"a:b:c"}', 400, "BadRequest"),
        (
            "POST",
            "/api/query",
            b'{"path":"a:b","args":' + b"[" * 200 + b"]" * 200 + b"}",
            400,
            "BadJsonBody",
        ),
    ],
)
def test_bad_requests(api, method, path, body, status, code):
    r = api.handle(HttpRequest(method, path, {}, {}, body))
    assert r.status == status and r.json()["code"] == code


def test_client_version_header(api):
    body = {"path": "counter:get", "args": {}}
    for good in ("python-0.8.1", "npm-1.48.0", "rust-0.10.4", "npm-cli-1.2.3-alpha.1"):
        assert post(api, "/api/query", body, convex_client=good).status == 200
    r = post(api, "/api/query", body, convex_client="garbage")
    assert r.status == 400 and r.json()["code"] == "InvalidClientVersion"


def test_cors(api):
    pre = api.handle(
        HttpRequest(
            "OPTIONS",
            "/api/query",
            {},
            {
                "origin": "http://app.test",
                "access-control-request-headers": "content-type,authorization",
            },
        )
    )
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "http://app.test"
    assert pre.headers["Access-Control-Allow-Headers"] == "content-type,authorization"
    r = post(api, "/api/query", {"path": "counter:get", "args": {}}, origin="http://app.test")
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.test"
    assert (
        "Access-Control-Allow-Origin"
        not in post(api, "/api/query", {"path": "counter:get"}).headers
    )

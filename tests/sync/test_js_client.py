"""The official JavaScript client (npm `convex`, run by node): `ConvexHttpClient` and the
WebSocket `ConvexClient` against `python -m kernel_ext serve`.

`js/scenarios.mjs` runs every scenario once against a shared server; each test checks one
part of what it observed.
"""

from __future__ import annotations

import pytest
from sync_peers import ISSUER, SECRET, run_node

from kernel_ext.functions.auth import make_dev_token


@pytest.fixture(scope="module")
def seen(node_client, shared_server):
    token = make_dev_token("grace", secret=SECRET, issuer=ISSUER, name="Grace")
    env = {"TEST_TOKEN": token, "TEST_ADMIN_KEY": shared_server.admin_key}
    return run_node("scenarios.mjs", shared_server.url, env=env)


def test_the_script_ran_to_the_end(seen):
    assert seen["done"] is True


def test_http_client_query_mutation_action(seen):
    assert seen["http query"] == 0
    assert seen["http mutation"] == 2
    assert seen["http action"] == [3, 4]
    assert seen["http after"] == 4


def test_http_client_int64_and_bytes(seen):
    assert seen["http typed"] == {
        "n": {"bigint": "42"},
        "b": {"bytes": "0001ff21"},
        "types": ["int", "bytes"],
    }
    assert seen["http int64 max"] == {"x": {"bigint": str(2**63 - 1)}}


def test_http_client_errors(seen):
    query_error = seen["http query error"]
    assert query_error["convexError"] is True
    assert query_error["data"] == {"code": "JQ", "n": {"bigint": "7"}}
    assert seen["http mutation error"]["data"] == {"code": "ROLLED_BACK", "name": "js-rb"}
    plain = seen["http plain error"]
    assert plain["convexError"] is False and "Uncaught ValueError" in plain["message"]
    assert "Could not find public function" in seen["http internal hidden"]["message"]


def test_http_client_consistent_query(seen):
    """consistentQuery reads at one earlier ts: answered while what it reads is unchanged,
    refused (never answered wrongly) once a later commit changed it."""
    assert seen["consistent first"] == 0
    assert seen["consistent unrelated"] == 0
    changed = seen["consistent changed"]
    assert changed["convexError"] is False
    assert "HistoricalQueryUnsupported" in changed["message"]


def test_http_client_admin_and_user_auth(seen):
    assert seen["http internal"] == "internal data"
    assert seen["http whoami"]["subject"] == "grace" and seen["http whoami"]["name"] == "Grace"


def test_websocket_client_subscription_and_read_your_writes(seen):
    assert seen["ws first"] == []
    # The mutation's promise resolved only once the subscription reflected it.
    assert seen["ws after own mutation"] == [{"author": "ws", "body": "mine"}]
    assert seen["ws after other mutation"][-1] == {"author": "http", "body": "theirs"}


def test_websocket_client_query_action_values(seen):
    assert seen["ws query"] == 4
    assert seen["ws action"] == [{"bigint": "7"}, {"bytes": "09"}]
    assert seen["ws typed"] == {
        "n": {"bigint": "-4"},
        "b": {"bytes": "21"},
        "types": ["int", "bytes"],
    }


def test_websocket_client_errors(seen):
    for label, data in [
        ("ws query error", {"code": "JW", "n": {"bigint": "7"}}),
        ("ws mutation error", {"code": "ROLLED_BACK", "name": "js-rb2"}),
        ("ws action error", "JA"),
    ]:
        assert seen[label]["convexError"] is True, label
        assert seen[label]["data"] == data, label
    assert seen["ws subscription error"] == {
        "convexError": True,
        "data": {"code": "SUB", "n": {"bigint": "7"}},
    }


def test_websocket_client_set_auth(seen):
    assert seen["ws auth confirmed"] is True
    assert seen["ws whoami"]["tokenIdentifier"] == f"{ISSUER}|grace"

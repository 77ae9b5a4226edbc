"""User code must not take the server down or stall it (issue 8): `BaseException`s from
handlers, functions past their time limit, and per-connection caps, over a real server."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import pytest
from sync_peers import RawClient, ServerProcess

HOSTILE = Path(__file__).parent / "hostile_app"


@pytest.fixture
def hostile(tmp_path):
    """Start servers of the hostile app with extra options; stopped at the end."""
    started: list[ServerProcess] = []

    def start(*extra: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"store{len(started)}.db", app=HOSTILE, extra=extra)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop(signal.SIGKILL)


def post(server: ServerProcess, kind: str, path: str, args: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{server.url}/api/{kind}",
        data=json.dumps({"path": path, "args": args or {}, "format": "json"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("what", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_base_exceptions_over_http_fail_the_call_not_the_server(hostile, what):
    server = hostile()
    answer = post(server, "mutation", "hostile:raise_base", {"what": what})
    assert answer["status"] == "error"
    assert what in answer["errorMessage"] and "hostile:raise_base" in answer["errorMessage"]
    assert server.proc is not None and server.proc.poll() is None
    post(server, "mutation", "hostile:write")
    assert post(server, "query", "hostile:count")["value"] == 1  # the failed one wrote nothing


@pytest.mark.parametrize("what", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_base_exceptions_over_the_socket_fail_the_mutation(hostile, what):
    server = hostile()
    client = RawClient(server.url).connect()
    client.add(0, "hostile:count")
    response, _ = client.mutation("hostile:raise_base", {"what": what})
    assert response["success"] is False
    assert what in response["result"]
    response, transition = client.mutation("hostile:write")
    assert response["success"] is True
    assert transition["modifications"][0]["value"] == 1


def test_a_live_query_raising_system_exit_fails_alone(hostile):
    server = hostile()
    client = RawClient(server.url).connect()
    failed = client.add(0, "hostile:exits")["modifications"][0]
    assert failed["type"] == "QueryFailed" and "SystemExit" in failed["errorMessage"]
    assert client.add(1, "hostile:count")["modifications"][0]["value"] == 0
    # Other subscriptions (here and on another socket) keep updating after every re-run of it.
    other = RawClient(server.url).connect()
    other.add(0, "hostile:count")
    for expected in (1, 2):
        _, transition = client.mutation("hostile:write")
        updates = {m["queryId"]: m for m in transition["modifications"]}
        assert updates[1]["value"] == expected
        seen = other.expect("Transition")["modifications"]
        assert [m["value"] for m in seen] == [expected]


def test_a_function_past_its_time_limit_fails_and_commits_nothing(hostile):
    server = hostile("--function-time-limit", "0.5")
    answer = post(server, "mutation", "hostile:spin")
    assert answer["status"] == "error"
    assert "hostile:spin" in answer["errorMessage"] and "0.5 s" in answer["errorMessage"]
    assert post(server, "query", "hostile:spun")["value"] == 0
    # A pure-Python loop that swallows exceptions is stopped too.
    answer = post(server, "query", "hostile:busy")
    assert answer["status"] == "error" and "time limit" in answer["errorMessage"]
    post(server, "mutation", "hostile:write")
    assert post(server, "query", "hostile:count")["value"] == 1


def test_a_live_query_past_its_time_limit_gets_an_error(hostile):
    server = hostile("--function-time-limit", "0.5")
    client = RawClient(server.url).connect()
    failed = client.add(0, "hostile:busy")["modifications"][0]
    assert failed["type"] == "QueryFailed" and "time limit of 0.5 s" in failed["errorMessage"]
    assert client.add(1, "hostile:count")["modifications"][0]["value"] == 0


def test_subscriptions_beyond_the_cap_fail_for_that_client_only(hostile):
    server = hostile("--max-subscriptions", "2")
    client = RawClient(server.url).connect()
    client.add(0, "hostile:count")
    client.add(1, "hostile:spun")
    refused = client.add(2, "hostile:count")["modifications"][0]
    assert refused["type"] == "QueryFailed"
    assert "limit 2" in refused["errorMessage"]
    other = RawClient(server.url).connect()
    assert other.add(0, "hostile:count")["modifications"][0]["value"] == 0
    _, transition = client.mutation("hostile:write")
    assert {m["queryId"]: m.get("value") for m in transition["modifications"]} == {0: 1}


def test_the_remote_client_raises_these_errors_by_class(hostile):
    """FunctionTimeout and FunctionAborted reach `kernel_ext.connect(url)` callers as their
    classes (the server sends their codes)."""
    import kernel_ext
    from kernel_ext.errors import FunctionAborted, FunctionTimeout

    server = hostile("--function-time-limit", "0.5")
    with kernel_ext.connect(server.url) as client:
        with pytest.raises(FunctionTimeout, match="hostile:spin"):
            client.mutation("hostile:spin")
        with pytest.raises(FunctionAborted, match="SystemExit"):
            client.mutation("hostile:raise_base", what="SystemExit")

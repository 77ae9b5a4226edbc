"""A function's output (`print()`, `logging`) reaches its caller as Convex log lines: over the
socket, over HTTP, to the official clients (which print them) and to the remote client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sync_peers import RawClient, python_client_script, run_node

import kernel_ext
from kernel_ext.engine.logs import MAX_LINES

GREETING = ["[LOG] 'hello ada'", "[WARN] 'careful, ada'"]


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def test_socket_messages_carry_the_log_lines(server):
    client = RawClient(server.url).connect()
    transition = client.add(0, "logs:greet", {"name": "ada"})
    (updated,) = transition["modifications"]
    assert updated["value"] == "hi ada" and updated["logLines"] == GREETING
    failed = client.add(1, "logs:fail", {"name": "bob"})["modifications"][0]
    assert failed["type"] == "QueryFailed"
    assert failed["logLines"] == ["[LOG] 'about to fail for bob'"]
    response, _ = client.mutation("logs:count", {"n": 3.0})
    assert response["logLines"] == ["[LOG] 'line 0'", "[LOG] 'line 1'", "[LOG] 'line 2'"]
    client.send({"type": "Action", "requestId": 9, "udfPath": "logs:shout", "args": [{}]})
    action = client.expect("ActionResponse", skip=("Ping", "Transition"))
    # The nested query's output is part of the action's lines; the unterminated print too.
    assert action["logLines"] == [
        "[LOG] 'hello action'",
        "[WARN] 'careful, action'",
        "[LOG] 'from an action'",
    ]


def test_lines_beyond_the_limit_are_counted_not_sent(server):
    client = RawClient(server.url).connect()
    response, _ = client.mutation("logs:count", {"n": float(MAX_LINES + 44)})
    lines = response["logLines"]
    assert len(lines) == MAX_LINES + 1
    assert lines[MAX_LINES - 1] == f"[LOG] 'line {MAX_LINES - 1}'"
    assert lines[-1] == f"[WARN] 'Log overflow (maximum {MAX_LINES}): 44 lines omitted'"


def test_http_responses_carry_them_only_when_there_are_some(server):
    greet = server.http("/api/query", {"path": "logs:greet", "args": {"name": "ada"}})
    assert greet == {"status": "success", "value": "hi ada", "logLines": GREETING}
    quiet = server.http("/api/query", {"path": "values:default", "args": {}})
    assert "logLines" not in quiet
    failed = server.http("/api/query", {"path": "logs:fail", "args": {"name": "x"}})
    assert failed["status"] == "error" and failed["logLines"] == ["[LOG] 'about to fail for x'"]
    batch = server.http(
        "/api/query_batch", {"queries": [{"path": "logs:greet", "args": {"name": "ada"}}]}
    )
    assert batch["results"][0]["logLines"] == GREETING


def test_the_official_javascript_client_prints_them(server, node_client):
    out = run_node("logs.mjs", server.url)
    assert out["http"] == "hi ada" and out["ws"] == "hi ada"
    # It parses the `[LEVEL] ` prefix (a line without one prints "Could not parse console.log").
    style = "color:rgb(0, 145, 255)"
    once = [
        f"log: %c[CONVEX Q(logs:greet)] [LOG] {style} 'hello ada'",
        f"log: %c[CONVEX Q(logs:greet)] [WARN] {style} 'careful, ada'",
    ]
    assert out["console"] == once + once  # the HTTP client, then the WebSocket client


def test_the_official_python_client_prints_them(server, tmp_path):
    script = python_client_script(
        tmp_path,
        """
        c = ConvexClient(URL)
        emit("value", c.query("logs:greet", {"name": "ada"}))
        """,
    )
    done = subprocess.run(
        [sys.executable, str(script), server.url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [*GREETING, '["value", "hi ada"]']


def test_the_remote_client_prints_call_lines_and_keeps_live_ones(server, capsys):
    client = kernel_ext.connect(server.url)
    try:
        assert client.query("logs:greet", name="ada") == "hi ada"
        client.mutation("logs:count", n=1.0)
        assert client.query("values:default") == "the default export"  # prints nothing
        printed = capsys.readouterr().out.splitlines()
        assert printed == [
            "[CONVEX Q(logs:greet)] [LOG] 'hello ada'",
            "[CONVEX Q(logs:greet)] [WARN] 'careful, ada'",
            "[CONVEX M(logs:count)] [LOG] 'line 0'",
        ]
        with client.subscribe("logs:greet", name="eve") as sub:
            assert sub.value == "hi eve"
            assert sub.log_lines == ("[LOG] 'hello eve'", "[WARN] 'careful, eve'")
            # A query answered from that subscription's result does not print its lines again.
            assert client.query("logs:greet", name="eve") == "hi eve"
            assert capsys.readouterr().out == ""
    finally:
        client.close()


def test_embedded_live_queries_keep_their_lines(capsys):
    client = kernel_ext.connect("memory")
    try:
        client.load_functions(Path(__file__).parent / "app")
        with client.subscribe("logs:greet", name="kim") as sub:
            assert sub.value == "hi kim"
            assert sub.log_lines == ("[LOG] 'hello kim'", "[WARN] 'careful, kim'")
        # A direct embedded call prints where it runs: here.
        assert client.query("logs:greet", name="lee") == "hi lee"
        assert "hello lee" in capsys.readouterr().out
    finally:
        client.close()

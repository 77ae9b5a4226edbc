"""Errors at the edges of the server and the value codec, against a real `serve` process:
values nested too deeply, keys of a str subclass, a body over the size limit, a bad port.
Each is a library error with a message (what is wrong, how to fix it) and at most one log
line, never a crash, a raw Python error or a silent surprise."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sync_peers import APP, ROOT, RawClient

from kernel_ext.store.values import MAX_VALUE_NESTING
from kernel_ext.sync.server import MAX_MESSAGE_SIZE


def _post(server, path: str, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _query(server, path: str, args: dict) -> dict:
    body = json.dumps({"path": path, "args": args, "format": "convex_encoded_json"}).encode()
    status, data = _post(server, "/api/query", body)
    assert status in (200, 400, 500), (status, data)
    return json.loads(data)


def test_a_result_nested_too_deeply_is_an_error_with_one_log_line(server_factory):
    server = server_factory()
    before = len(server.output)
    result = _query(server, "odd:deep", {"depth": 900})
    assert result["status"] == "error"
    assert "too nested" in result["errorMessage"]
    assert f"{MAX_VALUE_NESTING} levels" in result["errorMessage"]
    assert "RecursionError" not in result["errorMessage"]
    # The same over the WebSocket, and the server goes on serving.
    client = RawClient(server.url).connect()
    failed = client.add(0, "odd:deep", {"depth": 900})["modifications"][0]
    assert failed["type"] == "QueryFailed" and "too nested" in failed["errorMessage"]
    ok = _query(server, "odd:deep", {"depth": MAX_VALUE_NESTING - 1})
    assert ok["status"] == "success"
    server.stop(signal.SIGTERM)
    logged = server.output[before:]
    assert len(logged) <= 2, logged  # at most one line per failed call
    assert not any("RecursionError" in line or "Traceback" in line for line in logged)


def test_arguments_nested_too_deeply_are_refused_with_a_message(server_factory):
    server = server_factory()
    for depth in (100, 900):
        deep: object = 1.0
        for _ in range(depth):
            deep = [deep]
        result = _query(server, "values:echo", {"x": deep})
        message = result.get("errorMessage") or result.get("message")
        assert result.get("status") == "error" or result.get("code") == "BadJsonBody"
        assert "nest" in message, result


def test_str_subclass_keys_are_plain_strings(server_factory):
    server = server_factory()
    assert _query(server, "odd:subclass_key", {}) == {"status": "success", "value": {"a": 1.0}}
    body = json.dumps({"path": "odd:insert_subclass_key", "args": {}}).encode()
    status, data = _post(server, "/api/mutation", body)
    assert status == 200, data
    assert json.loads(data)["value"] == {"name": "subclass", "value": 2.0}


def test_a_body_over_the_limit_gets_413_with_a_message(server_factory):
    server = server_factory()
    big = b'{"path": "counter:get", "args": {"name": "' + b"x" * (100 << 20) + b'"}}'
    status, data = _post(server, "/api/query", big)
    assert status == 413
    message = json.loads(data)["message"]
    assert f"{MAX_MESSAGE_SIZE:,}" in message and "bytes" in message
    # The server still answers.
    assert _query(server, "counter:get", {"name": "after"})["status"] == "success"


def test_a_declared_length_over_the_limit_is_refused_before_the_body(server_factory):
    server = server_factory()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/query")
        connection.putheader("Content-Length", str(10 << 30))  # 10 GiB, never sent
        connection.putheader("Content-Type", "application/json")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert "limit" in json.loads(response.read())["message"]
    finally:
        connection.close()


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_refused(tmp_path: Path, port: str):
    done = subprocess.run(
        [
            *(sys.executable, "-m", "kernel_ext", "serve", "--functions", str(APP)),
            *("--db", str(tmp_path / "s.db"), "--port", port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert "Serving" not in done.stdout
    assert "0 and 65535" in done.stderr and port in done.stderr

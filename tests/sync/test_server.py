"""`python -m kernel_ext serve`: the command line, both WebSocket paths, the HTTP API,
security defaults and clean shutdown (raw clients; the official ones have their own files)."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from polling import wait_for
from sync_peers import APP, ROOT, RawClient, ServerProcess
from websockets.exceptions import ConnectionClosed

from kernel_ext.functions.auth import make_dev_token
from kernel_ext.sync.auth import admin_key_path
from kernel_ext.sync.messages import decode_ts


def test_cli_prints_the_url_and_the_admin_key_once(server_factory, tmp_path):
    server = server_factory()
    assert server.url.startswith("http://127.0.0.1:")
    assert [line for line in server.output if line.startswith("Serving ")] == [
        f"Serving {server.url}"
    ]
    key_lines = [line for line in server.output if server.admin_key in line]
    assert len(key_lines) == 1
    key_file = admin_key_path(server.db)
    assert key_file.read_text().strip() == server.admin_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_given_admin_key_is_used(server_factory):
    server = server_factory("--admin-key", "my-own-key")
    assert server.admin_key == "my-own-key"
    result = server.http(
        "/api/query",
        {"path": "counter:secret", "args": {}},
        headers={"Authorization": "Convex my-own-key"},
    )
    assert result == {"status": "success", "value": "internal data"}


@pytest.mark.parametrize("path", ["/api/sync", "/api/1.48.0/sync"])
def test_both_websocket_paths(server_factory, path):
    server = server_factory()
    client = RawClient(server.url, path).connect()
    first = client.add(0, "counter:get", {"name": "ws"})
    assert first["startVersion"] == {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
    assert first["modifications"] == [
        {"type": "QueryUpdated", "queryId": 0, "value": 0.0, "logLines": [], "journal": None}
    ]
    response, transition = client.mutation("counter:inc", {"name": "ws"})
    assert response["success"] is True and response["logLines"] == []
    assert transition["startVersion"] == first["endVersion"]
    assert decode_ts(transition["endVersion"]["ts"]) >= decode_ts(response["ts"])
    assert transition["modifications"][0]["value"] == 1.0
    client.close()


def test_http_routes_and_root(server_factory):
    server = server_factory()
    assert server.http("/api/query_ts", {})["ts"]
    with urllib.request.urlopen(server.url + "/", timeout=5) as response:
        assert b"running" in response.read()
    with pytest.raises(urllib.error.HTTPError) as info:
        server.http("/api/nothing", {})
    assert info.value.code == 404 and json.loads(info.value.read())["code"] == "NotFound"
    info.value.close()


def test_foreign_host_headers_are_refused_on_loopback(server_factory):
    server = server_factory()
    request = urllib.request.Request(
        server.url + "/api/query_ts", data=b"{}", headers={"Host": "evil.example:80"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 403
    info.value.close()
    request = urllib.request.Request(
        server.url.replace("127.0.0.1", "localhost") + "/api/query_ts", data=b"{}"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_without_auth_options_every_token_gets_an_auth_error(server_factory):
    server = server_factory()
    bystander = RawClient(server.url).connect()
    bystander.add(0, "counter:get", {})
    client = RawClient(server.url).connect()
    token = make_dev_token("u", secret="x" * 40, issuer="https://any")
    client.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": token})
    error = client.expect("AuthError")
    assert error["authUpdateAttempted"] is True and "No auth provider" in error["error"]
    with pytest.raises(ConnectionClosed):
        client.recv(5)
    # Anonymous calls and other connections are unaffected.
    response, _ = bystander.mutation("counter:inc", {})
    assert response["success"] is True


def test_user_tokens_over_the_socket(server_factory):
    secret = "a-long-enough-secret-for-the-server-test"
    server = server_factory(
        "--auth-issuer", "https://iss", "--auth-audience", "app", "--auth-secret", secret
    )
    client = RawClient(server.url).connect()
    client.add(0, "who:ami")
    token = make_dev_token("lin", secret=secret, issuer="https://iss", audience="app")
    client.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": token})
    transition = client.expect("Transition")
    assert transition["endVersion"]["identity"] == 1
    assert transition["modifications"][0]["value"]["subject"] == "lin"
    wrong_audience = make_dev_token("lin", secret=secret, issuer="https://iss", audience="other")
    client.send(
        {"type": "Authenticate", "baseVersion": 1, "tokenType": "User", "value": wrong_audience}
    )
    assert client.expect("AuthError")["baseVersion"] == 1


def test_the_auth_secret_may_come_from_the_environment(server_factory, monkeypatch):
    secret = "a-secret-from-the-environment-long-enough"
    monkeypatch.setenv("CONVEX_AUTH_SECRET", secret)
    server = server_factory("--auth-issuer", "https://iss")
    client = RawClient(server.url).connect()
    client.add(0, "who:ami")
    token = make_dev_token("env", secret=secret, issuer="https://iss")
    client.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": token})
    assert client.expect("Transition")["modifications"][0]["value"]["subject"] == "env"


def test_admin_key_over_the_socket(server_factory):
    server = server_factory()
    client = RawClient(server.url).connect()
    assert (
        "Could not find public function"
        in client.add(0, "counter:secret")["modifications"][0]["errorMessage"]
    )
    client.send(
        {"type": "Authenticate", "baseVersion": 0, "tokenType": "Admin", "value": server.admin_key}
    )
    transition = client.expect("Transition")
    assert transition["modifications"][0] == {
        "type": "QueryUpdated",
        "queryId": 0,
        "value": "internal data",
        "logLines": [],
        "journal": None,
    }


def test_ping_after_idle(thread_server_factory):
    server = thread_server_factory(ping_interval=0.3, tick_interval=0.05)
    client = RawClient(server.url).connect()
    client.add(0, "counter:get")
    started = time.monotonic()
    assert client.recv(5) == {"type": "Ping"}
    assert time.monotonic() - started >= 0.25


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_the_server_cleanly(server_factory, sig):
    server = server_factory()
    client = RawClient(server.url).connect()
    client.add(0, "counter:get")
    assert server.stop(sig) == 0
    with pytest.raises(ConnectionClosed) as info:
        client.recv(5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert not any("Traceback" in line for line in server.output), server.output


def run_serve(db: Path, *options: str, functions: Path = APP) -> subprocess.CompletedProcess[str]:
    """`python -m kernel_ext serve` that is expected to exit at once (on an error)."""
    command = [sys.executable, "-m", "kernel_ext", "serve", "--functions", str(functions)]
    return subprocess.run(
        [*command, "--db", str(db), *options],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def test_a_second_server_on_the_same_store_is_refused(server_factory, tmp_path):
    server = server_factory()
    done = run_serve(server.db, "--port", "0")
    assert done.returncode == 1
    assert server.url in done.stderr


@pytest.mark.parametrize(
    "options",
    [
        ["--auth-issuer", "https://x"],
        ["--auth-secret", "s"],
        ["--auth-issuer", "https://x", "--auth-public-key", "/nonexistent.pem"],
        ["--auth-issuer", "https://x", "--auth-secret", "s", "--auth-jwks", "j.json"],
    ],
)
def test_bad_auth_options(tmp_path, options):
    done = run_serve(tmp_path / "s.db", "--port", "0", *options)
    assert done.returncode == 2, done.stderr
    assert "Serving" not in done.stdout


@pytest.mark.parametrize(
    "options",
    [
        ["--function-time-limit", "-1"],
        ["--max-subscriptions", "-1"],
        ["--max-concurrent-calls", "-5"],
        ["--max-subscriptions", "many"],
    ],
)
def test_negative_limits_are_refused(tmp_path, options):
    done = run_serve(tmp_path / "s.db", "--port", "0", *options)
    assert done.returncode == 2, done.stderr
    assert f"{options[0]}: " in done.stderr and "give 0 or more" in done.stderr
    assert "Serving" not in done.stdout


def test_a_time_limit_of_0_is_no_limit(thread_server_factory):
    server = thread_server_factory(time_limit=0)
    body = json.dumps({"path": "counter:get", "args": {"name": "zero"}}).encode()
    request = urllib.request.Request(
        f"{server.url}/api/query", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {"status": "success", "value": 0.0}


def test_shutdown_under_load_loses_no_committed_write(server_factory, tmp_path):
    """Mutations race a SIGTERM: every one that was acknowledged is in the store after a
    restart (and nothing that was never sent)."""
    server = server_factory()
    acknowledged, attempted = [], []
    lock = threading.Lock()

    def writer(worker: int) -> None:
        for i in range(1000):
            with lock:
                attempted.append(1)
            try:
                server.call("mutation", "counter:inc", {"name": "load"})
            except Exception:
                return
            with lock:
                acknowledged.append((worker, i))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acknowledged) >= 30)  # the writers are under way
    assert server.stop(signal.SIGTERM) == 0
    assert not any("Traceback" in line for line in server.output), server.output
    for t in threads:
        t.join(30)
    assert acknowledged, "no mutation went through before the shutdown"
    restarted = ServerProcess(server.db).start()
    try:
        value = restarted.call("query", "counter:get", {"name": "load"})
    finally:
        restarted.stop()
    assert len(acknowledged) <= value <= len(attempted)


def test_store_file_lock_names_the_serving_url(server_factory):
    server = server_factory()
    lock = Path(str(server.db) + ".lock")
    assert server.url in lock.read_text()


def test_a_resent_mutation_of_the_same_session_is_not_run_twice(server_factory):
    """The JS client re-sends answered-but-unconfirmed mutations after reconnecting, with
    the same sessionId and requestId: they are answered from the record."""
    server = server_factory()
    connect = {
        "type": "Connect",
        "sessionId": "js-session",
        "connectionCount": 0,
        "lastCloseReason": None,
        "clientTs": 0,
    }
    mutation = {
        "type": "Mutation",
        "requestId": 7,
        "udfPath": "counter:inc",
        "args": [{"name": "dedup"}],
    }
    first = RawClient(server.url)
    first.send(connect)
    first.send(mutation)
    answer = first.expect("MutationResponse")
    first.close()
    again = RawClient(server.url)
    again.send({**connect, "connectionCount": 1, "lastCloseReason": "closed with code 1006"})
    again.send(mutation)
    assert again.expect("MutationResponse") == answer
    assert server.call("query", "counter:get", {"name": "dedup"}) == 1.0
    other = RawClient(server.url)
    other.send({**connect, "sessionId": "another-session"})
    other.send(mutation)
    assert other.expect("MutationResponse")["result"] == 2.0


def test_every_transition_shows_one_timestamp(server_factory):
    """Two queries over counters that always change together, under a stream of writes by
    another client: no Transition may show one changed without the other."""
    server = server_factory()
    client = RawClient(server.url).connect()
    client.send(
        {
            "type": "ModifyQuerySet",
            "baseVersion": 0,
            "newVersion": 1,
            "modifications": [
                {"type": "Add", "queryId": 0, "udfPath": "counter:get", "args": [{"name": "left"}]},
                {
                    "type": "Add",
                    "queryId": 1,
                    "udfPath": "counter:get",
                    "args": [{"name": "right"}],
                },
            ],
        }
    )
    writes = 60

    def writer() -> None:
        for _ in range(writes):
            server.call("mutation", "counter:inc_pair", {"a": "left", "b": "right"})

    thread = threading.Thread(target=writer)
    thread.start()
    view: dict[int, float] = {}
    previous = None
    while view.get(0) != float(writes):
        transition = client.expect("Transition")
        if previous is not None:
            assert transition["startVersion"] == previous
        previous = transition["endVersion"]
        for modification in transition["modifications"]:
            view[modification["queryId"]] = modification["value"]
        assert view.get(0) == view.get(1), transition
    thread.join(30)
    assert view == {0: float(writes), 1: float(writes)}


def test_a_taken_port_or_a_missing_folder_is_an_error(server_factory, tmp_path):
    server = server_factory()
    other = tmp_path / "other.db"
    done = run_serve(other, "--port", str(server.port))
    assert done.returncode == 1 and "cannot listen" in done.stderr
    done = run_serve(other, "--port", "0", functions=tmp_path / "missing")
    assert done.returncode == 1 and "does not exist" in done.stderr


def test_a_server_on_every_interface_advertises_this_machines_name():
    """A wildcard address is where a server listens, never where a client connects: the
    URLs it prints and the file URLs its functions hand out name this machine instead."""
    import socket

    from kernel_ext.engine.store import Store
    from kernel_ext.functions.backend import Backend
    from kernel_ext.persistence.sqlite import SqlitePersistence
    from kernel_ext.sync.background import BackgroundServer
    from kernel_ext.sync.server import url_for

    name = socket.gethostname()
    assert url_for("0.0.0.0", 3210) == f"http://{name}:3210"
    assert url_for("::", 3210) == f"http://{name}:3210"
    assert url_for("127.0.0.1", 3210) == "http://127.0.0.1:3210"
    assert url_for("::1", 3210) == "http://[::1]:3210"
    backend = Backend(Store(SqlitePersistence(None)))
    server = BackgroundServer(backend, host="0.0.0.0")
    try:
        assert server.url.startswith(f"http://{name}:")
        assert backend.storage.url_for("x").startswith(f"http://{name}:")
    finally:
        server.stop()
        backend.close()

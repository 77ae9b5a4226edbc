"""HTTP actions (`http.py`): routing as Convex's router, served by `serve` on --site-port,
by `%convex serve`'s background server, and inside Jupyter under `<base_url>convex/http/`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from polling import wait_for
from sync_peers import ISSUER, ROOT, SECRET, ServerProcess
from test_server_ext import start_jupyter

import kernel_ext
from kernel_ext import Response, http_action, http_router
from kernel_ext.errors import ValidationError
from kernel_ext.functions.http_actions import MAX_BODY_SIZE

HTTP_APP = Path(__file__).parent / "http_app"


def site_url(server: ServerProcess) -> str:
    lines = [line for line in server.output if line.startswith("HTTP actions at ")]
    assert lines, server.output
    return lines[0].split()[-1]


def send(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request, error statuses included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("http") / "store.db"
    server = ServerProcess(
        db, app=HTTP_APP, extra=("--auth-issuer", ISSUER, "--auth-secret", SECRET)
    ).start()
    yield server, site_url(server)
    server.stop(signal.SIGKILL)


# -- the router, without a server ----------------------------------------------------------


@http_action
def _noop(ctx, request):
    return Response()


def test_route_definitions_are_checked():
    http = http_router()
    http.route(path="/a", method="GET", handler=_noop)
    with pytest.raises(ValidationError, match="already routed"):
        http.route(path="/a", method="GET", handler=_noop)
    http.route(path="/a", method="POST", handler=_noop)  # another method: fine
    http.route(path_prefix="/p/", method="GET", handler=_noop)
    with pytest.raises(ValidationError, match="already routed"):
        http.route(path_prefix="/p/", method="GET", handler=_noop)
    with pytest.raises(ValidationError, match="must end with a /"):
        http.route(path_prefix="/q", method="GET", handler=_noop)
    with pytest.raises(ValidationError, match="starting with a /"):
        http.route(path="a", method="GET", handler=_noop)
    with pytest.raises(ValidationError, match="HEAD cannot be routed"):
        http.route(path="/h", method="HEAD", handler=_noop)
    with pytest.raises(ValidationError, match="not an HTTP method"):
        http.route(path="/h", method="TRACE", handler=_noop)
    with pytest.raises(ValidationError, match="exactly one"):
        http.route(path="/x", path_prefix="/x/", method="GET", handler=_noop)
    with pytest.raises(TypeError, match="@http_action"):
        http.route(path="/plain", method="GET", handler=lambda ctx, request: Response())
    with pytest.raises(TypeError, match="HTTP action"):
        _noop(None, None)
    assert http.routes() == [("/a", "GET"), ("/a", "POST"), ("/p/*", "GET")]


def test_response_bodies():
    assert Response("é").body == "é".encode()
    assert Response("x").headers["content-type"].startswith("text/plain")
    assert Response(b"\x00").headers.get("content-type") is None
    assert json.loads(Response.json({"a": 1}).body) == {"a": 1}
    with pytest.raises(TypeError, match=r"Response\.json"):
        Response({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        Response("x", status=99)


# -- served by `serve` ---------------------------------------------------------------------


def test_serve_prints_the_site_on_port_plus_one(tmp_path: Path):
    # A port whose successor is free: the site takes port + 1, without a warning.
    for _ in range(20):
        port = _free_port()
        if _is_free(port + 1):
            break
    server = ServerProcess(tmp_path / "s.db", app=HTTP_APP)
    server.port = port
    server.start()
    try:
        assert site_url(server) == f"http://127.0.0.1:{port + 1}"
        assert not [line for line in server.output if line.startswith("warning")]
        assert send(site_url(server) + "/exact")[2] == b"exact"
    finally:
        server.stop(signal.SIGKILL)


def test_exact_and_prefix_routing(served):
    _, site = served
    status, headers, body = send(site + "/exact")
    assert (status, body, headers["X-Route"]) == (200, b"exact", "exact")
    assert send(site + "/files/a/b")[2] == b"short /files/a/b"
    assert send(site + "/files/deep/y")[2] == b"long /files/deep/y"  # the longest prefix
    assert send(site + "/files/deep/x")[2] == b"exact"  # an exact path beats any prefix


def test_no_route_is_404(served):
    _, site = served
    status, _, body = send(site + "/nothing-here")
    assert (status, body) == (404, b"No HttpAction routed for /nothing-here")
    assert send(site + "/exact", "POST", b"{}")[0] == 404  # routed for GET only
    assert send(site + "/exact/")[0] == 404  # an exact path is no prefix
    assert send(site + "/files")[0] == 404  # a prefix needs its final /


def test_head_runs_get_without_a_body(served):
    _, site = served
    status, headers, body = send(site + "/exact", "HEAD")
    assert (status, body) == (200, b"")
    assert headers["X-Route"] == "exact"
    assert headers["Content-Length"] == "5"


def test_json_echo(served):
    _, site = served
    payload = json.dumps({"a": [1, 2], "b": "é"}).encode()
    status, headers, body = send(
        site + "/echo?x=1", "POST", payload, {"Content-Type": "application/json"}
    )
    assert status == 201
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "method": "POST",
        "url": site + "/echo?x=1",
        "json": {"a": [1, 2], "b": "é"},
        "type": "application/json",
    }


def test_an_action_runs_a_mutation_then_a_query(served):
    _, site = served
    body = json.loads(send(site + "/note", "POST", b"first")[2])
    assert body == {"texts": ["first"], "shouted": "FIRST"}
    body = json.loads(send(site + "/note", "POST", b"second")[2])
    assert body["texts"] == ["first", "second"]


def test_a_failing_handler_is_500_and_logged(served):
    server, site = served
    status, _, body = send(site + "/boom")
    assert status == 500
    assert b"hunter2" not in body and b"RuntimeError" not in body
    assert json.loads(body)["code"] == "InternalServerError"
    wait_for(lambda: any("hunter2" in line for line in server.output))
    wait_for(lambda: any(line.startswith("Traceback") for line in server.output))
    status, _, body = send(site + "/not-a-response")
    assert status == 500 and b"hello" not in body
    wait_for(lambda: any("not a Response" in line for line in server.output))


def test_request_bodies_are_capped(served):
    _, site = served
    status, _, body = send(site + "/size", "PUT", b"x" * MAX_BODY_SIZE)
    assert (status, body) == (200, str(MAX_BODY_SIZE).encode())
    status, _, body = send(site + "/size", "PUT", b"x" * (MAX_BODY_SIZE + 1))
    assert status == 413
    message = json.loads(body)["message"]
    assert "20 MiB" in message and "HTTP action" in message


def test_bearer_tokens_are_verified(served):
    _, site = served
    token = kernel_ext.make_dev_token("ada", secret=SECRET, issuer=ISSUER)
    auth = {"Authorization": f"Bearer {token}"}
    assert json.loads(send(site + "/whoami", headers=auth)[2]) == "ada"
    assert json.loads(send(site + "/whoami")[2]) is None
    # A webhook's own scheme is the handler's business, not a refused token.
    assert json.loads(send(site + "/whoami", headers={"Authorization": "Basic eDp5"})[2]) is None
    status, _, body = send(site + "/whoami", headers={"Authorization": "Bearer forged"})
    assert status == 401 and json.loads(body)["code"] == "Unauthenticated"


def _taken_port_after_a_free_one() -> socket.socket:
    """A listening socket on a port whose predecessor is free (a few tries)."""
    for _ in range(50):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", taken.getsockname()[1] - 1))
            except OSError:
                taken.close()
                continue
        return taken
    raise AssertionError("no free port below a taken one in 50 tries")


def test_a_taken_site_port_falls_back_with_a_warning(tmp_path: Path):
    with _taken_port_after_a_free_one() as taken:
        busy = taken.getsockname()[1]
        server = ServerProcess(tmp_path / "s.db", app=HTTP_APP)
        server.port = busy - 1
        server.start()
        try:
            url = site_url(server)
            assert url != f"http://127.0.0.1:{busy}"
            assert any(f"port {busy} is taken" in line for line in server.output)
            assert send(url + "/exact")[2] == b"exact"
        finally:
            server.stop(signal.SIGKILL)


def test_a_taken_explicit_site_port_is_an_error(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "kernel_ext", "serve", "--functions", str(HTTP_APP),
             "--db", str(tmp_path / "s.db"), "--port", "0", "--site-port", str(busy)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:0 or {busy}" in done.stderr


def test_port_zero_gives_a_free_site_port_with_a_warning(served):
    server, site = served  # started with --port 0
    assert any("served on a free port" in line for line in server.output)
    assert site != server.url


def test_a_pushed_http_py_takes_effect(tmp_path: Path):
    server = ServerProcess(tmp_path / "s.db").start()  # the tests' usual app: no http.py
    try:
        site = site_url(server)
        assert send(site + "/pushed")[0] == 404
        source = (
            "from kernel_ext import Response, http_action, http_router\n"
            "http = http_router()\n"
            "@http_action\n"
            "def hi(ctx, request):\n"
            "    return Response('pushed ' + str(ctx.run_query('counter:get', {'name': 'n'})))\n"
            "http.route(path='/pushed', method='GET', handler=hi)\n"
        )
        answer = server.http(
            "/api/push",
            {"files": {"http.py": source}},
            headers={"Authorization": f"Convex {server.admin_key}"},
        )
        assert answer["status"] == "success"
        assert send(site + "/pushed")[2] == b"pushed 0.0"
    finally:
        server.stop(signal.SIGKILL)


def test_http_py_without_a_router_is_refused(tmp_path: Path):
    folder = tmp_path / "functions"
    folder.mkdir()
    (folder / "http.py").write_text("routes = 1\n")
    with (
        kernel_ext.connect("memory") as client,
        pytest.raises(ValidationError, match="http_router"),
    ):
        client.load_functions(folder)


def test_background_server_serves_http_actions():
    from kernel_ext.engine.store import Store
    from kernel_ext.functions.backend import Backend
    from kernel_ext.persistence.sqlite import SqlitePersistence
    from kernel_ext.sync.background import BackgroundServer

    backend = Backend(Store(SqlitePersistence(None)))
    backend.load_functions(HTTP_APP)
    server = BackgroundServer(backend)
    try:
        assert send(server.site_url + "/exact")[2] == b"exact"
    finally:
        server.stop()
        backend.close()


# -- inside Jupyter ------------------------------------------------------------------------


def test_jupyter_serves_http_actions_behind_its_auth(tmp_path: Path):
    process, (base, token, _) = start_jupyter(tmp_path)
    try:
        source = (HTTP_APP / "http.py").read_text()
        push = urllib.request.Request(
            f"{base}/convex/api/push",
            data=json.dumps({"files": {"http.py": source}}).encode(),
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(push, timeout=30) as response:
            assert json.loads(response.read())["status"] == "success"
        assert send(f"{base}/convex/http/exact")[0] == 403  # no Jupyter token
        jupyter_auth = {"Authorization": f"token {token}"}
        status, _, body = send(f"{base}/convex/http/exact", headers=jupyter_auth)
        assert (status, body) == (200, b"exact")
        status, _, body = send(
            f"{base}/convex/http/echo?x=1&token={token}",
            "POST",
            b'{"k": 1}',
            {"Content-Type": "application/json"},
        )
        assert status == 201
        echoed = json.loads(body)
        # The action sees the path after the prefix, and not Jupyter's token.
        assert echoed["url"].endswith("/echo?x=1") and token not in echoed["url"]
        assert echoed["json"] == {"k": 1}
        status, _, body = send(f"{base}/convex/http/nothing", headers=jupyter_auth)
        assert (status, body) == (404, b"No HttpAction routed for /nothing")
        status, _, body = send(f"{base}/convex/http/boom", headers=jupyter_auth)
        assert status == 500 and b"hunter2" not in body
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

"""`kernel_ext.connect(url)` fails fast and clearly when no Convex server answers there, and
calls fail after a bound (instead of blocking) once the server is gone for good."""

from __future__ import annotations

import http.server
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from polling import wait_for

import kernel_ext
from kernel_ext.errors import ServerUnreachable, StoreError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Forbidden(http.server.BaseHTTPRequestHandler):
    """What Jupyter answers a WebSocket upgrade without its token: 403."""

    protocol_version = "HTTP/1.1"  # as Jupyter's tornado answers

    def do_GET(self) -> None:
        self.send_response(403, "Forbidden")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def forbidding_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def plain_http_server(tmp_path) -> Iterator[str]:
    """`python -m http.server`: an HTTP server that is not a Convex server."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _listening(port), timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(10)


def test_nothing_listening_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ServerUnreachable, match="connection refused") as info:
        kernel_ext.connect(url)
    assert url in str(info.value)
    assert isinstance(info.value, StoreError) and isinstance(info.value, ConnectionError)


def test_a_403_says_how_to_authenticate(forbidding_server):
    with pytest.raises(ServerUnreachable, match="403") as info:
        kernel_ext.connect(forbidding_server)
    message = str(info.value)
    assert forbidding_server in message
    assert "token" in message and "connect_jupyter()" in message


def test_a_server_that_is_not_convex_is_named_so(plain_http_server):
    with pytest.raises(ServerUnreachable, match="not a Convex server") as info:
        kernel_ext.connect(plain_http_server)
    assert plain_http_server in str(info.value)


def test_calls_fail_after_a_bound_once_the_server_is_gone_for_good(server_factory):
    server = server_factory()
    client = kernel_ext.connect(server.url)
    try:
        assert client.mutation("counter:inc", name="gone") == 1.0
        server.stop(signal.SIGKILL)
        wait_for(lambda: client.status == "reconnecting")
        started = time.monotonic()
        with pytest.raises(ServerUnreachable, match="unreachable") as info:
            client.mutation("counter:inc", name="gone")
        assert server.url in str(info.value)
        with pytest.raises(ServerUnreachable):
            client.query("counter:get", name="gone")
        assert time.monotonic() - started < 60  # bounded, not forever
    finally:
        client.close()

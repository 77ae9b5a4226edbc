"""Real peers for the sync server tests: the server as a subprocess (or in a thread), raw WebSocket
clients, the official Python client in its own process (it holds the GIL while it waits) and
the official JavaScript client under node."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from websockets.sync.client import connect as ws_connect

APP = Path(__file__).parent / "app"
JS_DIR = Path(__file__).parent / "js"
ROOT = Path(__file__).parent.parent.parent
SECRET = "sync-tests-secret-long-enough-for-hs256"
ISSUER = "https://issuer.test"


class ServerProcess:
    """`python -m kernel_ext serve` in a subprocess; restartable on the same port and store."""

    def __init__(self, db: Path, *, app: Path = APP, extra: tuple[str, ...] = ()) -> None:
        self.db, self.app, self.extra = db, app, extra
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.url = ""
        self.admin_key = ""

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start and wait for `Serving http://...`."""
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kernel_ext",
                "serve",
                "--functions",
                str(self.app),
                "--db",
                str(self.db),
                "--port",
                str(self.port),
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self._drainer = threading.Thread(
            target=self._drain, args=(self.proc, self.lines), daemon=True
        )
        self._drainer.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"server did not start: {self.output}") from None
            if line.startswith("Admin key"):
                self.admin_key = line.rsplit(": ", 1)[1]
            if line.startswith("Serving "):
                self.url = line.split()[1]
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
            if self.proc.poll() is not None and self.lines.empty():
                raise AssertionError(f"server exited: {self.output}")

    def _drain(self, proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line.rstrip("\n"))
            lines.put(line.rstrip("\n"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the server and wait for it; returns its exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"server did not stop on signal {sig}: {self.output}") from None
        finally:
            self._drainer.join(5)
            assert proc.stdout is not None
            proc.stdout.close()

    def http(self, path: str, body: Any = None, *, headers: dict[str, str] | None = None) -> Any:
        """POST JSON (or GET without a body) and decode the JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def call(self, kind: str, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run a function over HTTP; returns its value or raises with the error."""
        result = self.http(
            f"/api/{kind}", {"path": path, "args": args or {}, "format": "convex_encoded_json"}
        )
        if result["status"] != "success":
            raise RuntimeError(result)
        return result["value"]


# -- raw WebSocket client --------------------------------------------------------------------


#: Every RawClient made by the current test (closed after it by a conftest fixture).
OPEN_CLIENTS: list[RawClient] = []


class RawClient:
    """A hand-driven sync client: send dicts or raw frames, receive decoded messages."""

    def __init__(self, url: str, path: str = "/api/sync") -> None:
        self.ws = ws_connect(
            url.replace("http", "ws", 1) + path, open_timeout=10, max_size=None, legacy=True
        )
        OPEN_CLIENTS.append(self)
        self.query_set = 0
        self.identity = 0
        self.request_id = 0

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        return json.loads(self.ws.recv(timeout))

    def expect(
        self, kind: str, timeout: float = 10.0, *, skip: tuple[str, ...] = ("Ping",)
    ) -> dict[str, Any]:
        """The next message of that type (skipping those of the `skip` types)."""
        while True:
            message = self.recv(timeout)
            if message["type"] == kind:
                return message
            assert message["type"] in skip, f"expected {kind}, got {message}"

    def connect(self) -> RawClient:
        self.send(
            {
                "type": "Connect",
                "sessionId": str(uuid.uuid4()),
                "connectionCount": 0,
                "lastCloseReason": "InitialConnect",
                "clientTs": 0,
            }
        )
        return self

    def add(self, query_id: int, path: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self.send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": self.query_set,
                "newVersion": self.query_set + 1,
                "modifications": [
                    {"type": "Add", "queryId": query_id, "udfPath": path, "args": [args or {}]}
                ],
            }
        )
        self.query_set += 1
        return self.expect("Transition")

    def mutation(
        self, path: str, args: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run a mutation; returns its response and the Transition after it."""
        self.send(
            {
                "type": "Mutation",
                "requestId": self.request_id,
                "udfPath": path,
                "args": [args or {}],
            }
        )
        self.request_id += 1
        response = self.expect("MutationResponse")
        return response, self.expect("Transition")

    def close(self) -> None:
        self.ws.close()


# -- the official Python client ------------------------------------------------------------

PRELUDE = """
import json, sys, os
from convex import ConvexClient, ConvexError, ConvexInt64

def plain(x):
    if isinstance(x, ConvexInt64):
        return {"int64": str(x.value)}
    if isinstance(x, bytes):
        return {"bytes": x.hex()}
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    return x

def emit(label, value=None):
    print(json.dumps([label, plain(value)]), flush=True)

URL = sys.argv[1]
TOKEN = os.environ.get("TEST_TOKEN")
ADMIN_KEY = os.environ.get("TEST_ADMIN_KEY")
"""


def python_client_script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / f"client_{abs(hash(body))}.py"
    path.write_text(PRELUDE + textwrap.dedent(body))
    return path


def run_python_client(
    tmp_path: Path, url: str, body: str, *, timeout: float = 60, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a script using the official `convex` package in its own process; returns the
    values it emitted by label."""
    script = python_client_script(tmp_path, body)
    done = subprocess.run(
        [sys.executable, str(script), url],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    results: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("["):
            label, value = json.loads(line)
            results[label] = value
    return results


# -- the official JavaScript client ----------------------------------------------------------


def run_node(
    script: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a node script of tests/sync/js; returns the values it emitted by label."""
    done = subprocess.run(
        ["node", str(JS_DIR / script), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=JS_DIR,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("["):
            label, value = json.loads(line)
            results[label] = value
    return results


# -- an in-process server, for tests that tune it ------------------------------------------


class ThreadServer:
    """A `SyncServer` on its own event loop thread (only raw clients may talk to it here)."""

    def __init__(self, **options: Any) -> None:
        from kernel_ext.engine.store import Store
        from kernel_ext.functions.backend import Backend
        from kernel_ext.persistence.sqlite import SqlitePersistence
        from kernel_ext.sync.server import SyncServer

        self.backend = Backend(Store(SqlitePersistence(None)))
        self.backend.load_functions(APP)
        self.server = SyncServer(self.backend, admin_key="thread-admin-key", **options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        port = asyncio.run_coroutine_threadsafe(
            self.server.start("127.0.0.1", 0), self.loop
        ).result(10)
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.backend.close()

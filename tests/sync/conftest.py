"""Fixtures for the sync server tests (the peers themselves are in `sync_peers`)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sync_peers import ISSUER, JS_DIR, OPEN_CLIENTS, SECRET, ServerProcess, ThreadServer


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers on fresh stores; all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(*extra: str, db: Path | None = None) -> ServerProcess:
        server = ServerProcess(db or tmp_path / f"store{len(started)}.db", extra=extra)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a module's tests, with user tokens verified (HS256)."""
    db = tmp_path_factory.mktemp("shared") / "store.db"
    server = ServerProcess(db, extra=("--auth-issuer", ISSUER, "--auth-secret", SECRET)).start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def node_client() -> Path:
    """`tests/sync/js` with `convex` installed from npm (installed on first use)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the JavaScript client tests")
    if not (JS_DIR / "node_modules" / "convex" / "package.json").exists():
        # The version is pinned in package.json; install scripts are not needed.
        subprocess.run(
            [npm, "install", "--ignore-scripts", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            timeout=600,
        )
    return JS_DIR


@pytest.fixture
def thread_server_factory() -> Iterator[Any]:
    """Start in-process servers (options of `SyncServer`); all are closed at the end."""
    servers: list[ThreadServer] = []

    def start(**options: Any) -> ThreadServer:
        servers.append(ThreadServer(**options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()

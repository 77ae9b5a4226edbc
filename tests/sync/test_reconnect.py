"""Restart the server under connected official clients: their subscriptions recover."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sync_peers import JS_DIR, ServerProcess, python_client_script

WATCHER = """
sub = ConvexClient(URL).subscribe("counter:get", {"name": "reconnect"})
for value in sub:
    emit("value", value)
    if value >= 2.0:
        break
"""


def _values(proc: subprocess.Popen[str]) -> iter:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("["):
            label, value = json.loads(line)
            if label == "value":
                yield value


def _restart_under(command: list[str], server: ServerProcess) -> list[float]:
    """Run a watcher, bump the counter, restart the server, bump it again; returns what the
    watcher saw."""
    seen: list[float] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=JS_DIR) as proc:
        watchdog = threading.Timer(60, proc.kill)  # a stuck watcher ends the test, not CI
        watchdog.start()
        try:
            values = _values(proc)
            seen.append(next(values))
            server.call("mutation", "counter:inc", {"name": "reconnect"})
            while seen[-1] < 1.0:
                seen.append(next(values))
            assert server.stop(signal.SIGTERM) == 0
            server.start()  # same store, same port
            server.call("mutation", "counter:inc", {"name": "reconnect"})
            while seen[-1] < 2.0:
                seen.append(next(values))
            assert proc.wait(20) == 0
        finally:
            watchdog.cancel()
            proc.kill()
    return seen


def test_python_client_subscription_recovers_after_a_restart(server_factory, tmp_path: Path):
    server = server_factory()
    script = python_client_script(tmp_path, WATCHER)
    seen = _restart_under([sys.executable, str(script), server.url], server)
    assert seen[0] == 0.0 and seen[-1] == 2.0 and 1.0 in seen


def test_js_client_subscription_recovers_after_a_restart(node_client, server_factory):
    server = server_factory()
    seen = _restart_under(["node", str(node_client / "watch.mjs"), server.url, "2"], server)
    assert seen[0] == 0 and seen[-1] == 2 and 1 in seen

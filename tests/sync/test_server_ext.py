"""The jupyter-server extension: one shared store behind Jupyter's authentication."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import kernel_ext


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def jupyter(tmp_path: Path):
    port, token = free_port(), secrets.token_hex(16)
    root = tmp_path / "root"
    root.mkdir()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "CONVEX_JUPYTER_FUNCTIONS": str(Path(__file__).parent / "app"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    for name in ("CONVEX_URL", "CONVEX_JUPYTER_URL", "CONVEX_JUPYTER_TOKEN", "CONVEX_ADMIN_KEY"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.jpserver_extensions={'kernel_ext.server_ext': True}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "jupyter server did not start"
            time.sleep(0.25)
    yield base, token, root
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(15)


def test_shared_store_is_behind_jupyter_auth(jupyter):
    base, token, root = jupyter
    body = json.dumps({"path": "nope:nothing", "args": {}}).encode()
    request = urllib.request.Request(f"{base}/convex/api/query", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 403
    info.value.close()
    request.add_header("Authorization", f"token {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "error"
    assert "Could not find" in answer["errorMessage"]
    assert (root / ".convex" / "shared.db").exists()


def test_two_clients_share_live_data(jupyter):
    base, token, root = jupyter
    admin_key = (root / ".convex" / "shared.db.admin-key").read_text().strip()
    headers = {"Authorization": f"token {token}"}
    url = f"{base}/convex"
    with (
        kernel_ext.connect(url, headers=headers) as a,
        kernel_ext.connect(url, headers=headers) as b,
    ):
        sub = a.subscribe("counter:get", name="shared")
        assert sub.value == 0.0
        changed = threading.Event()
        sub.on_change(lambda value: changed.set())
        b.mutation("counter:inc", name="shared", by=4)
        assert changed.wait(10)
        assert sub.value == 4.0
    with kernel_ext.connect(url, headers=headers, admin_key=admin_key) as owner:
        assert owner.query("counter:secret") == "internal data"


def test_websocket_needs_jupyter_auth(jupyter):
    base, _, _ = jupyter
    client = kernel_ext.connect(f"{base}/convex")
    try:
        seen: list[str] = []
        client.on_status(seen.append)
        deadline = time.monotonic() + 10
        while "reconnecting" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "reconnecting" in seen  # the upgrade is refused without Jupyter's token
        assert client.status != "connected"
    finally:
        client.close()


def start_kernel(base: str, token: str, runtime: Path):
    """A kernel started by the Jupyter server (so it inherits the server's environment)."""
    from jupyter_client import BlockingKernelClient

    request = urllib.request.Request(
        f"{base}/api/kernels", data=b"{}", method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        kernel_id = json.loads(response.read())["id"]
    client = BlockingKernelClient()
    client.load_connection_file(str(runtime / f"kernel-{kernel_id}.json"))
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return client


def run(kernel, code: str, expression: str | None = None):
    reply = kernel.execute_interactive(
        code, user_expressions={"x": expression} if expression else None, timeout=60,
        output_hook=lambda msg: None,
    )  # fmt: skip
    assert reply["content"]["status"] == "ok", reply["content"]
    if expression:
        return reply["content"]["user_expressions"]["x"]["data"]["text/plain"]
    return None


def test_two_kernels_share_the_store(jupyter, tmp_path):
    base, token, _ = jupyter
    runtime = tmp_path / "runtime"
    a, b = start_kernel(base, token, runtime), start_kernel(base, token, runtime)
    try:
        run(a, "%load_ext kernel_ext")
        assert "RemoteClient" in run(a, "", "type(convex).__name__")
        run(a, 'sub = convex.subscribe("counter:get", name="kernels")')
        assert run(a, "", "sub.value") == "0.0"
        run(b, "%load_ext kernel_ext")
        run(b, 'convex.mutation("counter:inc", name="kernels", by=7)')
        run(
            a,
            "import time\nfor _ in range(200):\n    if sub.value == 7.0: break\n    time.sleep(0.05)",
        )
        assert run(a, "", "sub.value") == "7.0"
    finally:
        for kernel in (a, b):
            kernel.shutdown()
            kernel.stop_channels()

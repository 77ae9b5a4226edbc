"""The jupyter-server extension: one shared store behind Jupyter's authentication."""

from __future__ import annotations

import http.cookiejar
import json
import os
import secrets
import signal
import socket
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

import kernel_ext
from kernel_ext.errors import ServerUnreachable, StoreError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_jupyter(
    folder: Path,
    runtime: Path | None = None,
    *,
    cwd: Path | None = None,
    db: str | None = None,
    functions: Path | None = None,
):
    """A Jupyter server with the extension, serving `folder/root`, logging to
    `folder/jupyter.log`, started in `cwd` (default: this process's) with the store at `db`
    (`CONVEX_JUPYTER_DB`, default: unset) and the functions of `functions` (default: `app`):
    (process, (base URL, token, root))."""
    port, token = free_port(), secrets.token_hex(16)
    root = folder / "root"
    root.mkdir(parents=True)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(folder / "config"),
        "CONVEX_JUPYTER_FUNCTIONS": str(functions or Path(__file__).parent / "app"),
        "JUPYTER_RUNTIME_DIR": str(runtime or folder / "runtime"),
    }
    for name in ("CONVEX_URL", "CONVEX_JUPYTER_URL", "CONVEX_JUPYTER_TOKEN", "CONVEX_ADMIN_KEY"):
        env.pop(name, None)
    env.pop("CONVEX_JUPYTER_DB", None)
    if db is not None:
        env["CONVEX_JUPYTER_DB"] = db
    with open(folder / "jupyter.log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.jpserver_extensions={'kernel_ext.server_ext': True}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd,
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
    return process, (base, token, root)


@pytest.fixture
def jupyter(tmp_path: Path):
    process, server = start_jupyter(tmp_path)
    yield server
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
    # The upgrade is refused without Jupyter's token: connect() says so at once (it used to
    # return a client that reconnected forever).
    with pytest.raises(ServerUnreachable, match="403") as info:
        kernel_ext.connect(f"{base}/convex")
    assert f"{base}/convex" in str(info.value) and "connect_jupyter()" in str(info.value)


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


# -- a browser logged into Jupyter: cross-site requests ------------------------------------

EVIL = "http://evil.example"


class Browser:
    """A browser's cookie jar, logged into Jupyter the way a user is (the token in a URL once,
    then only the login cookie), holding Jupyter's `_xsrf` cookie as its pages do."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.opener.open(f"{base}/login", timeout=10).close()  # the login page sets _xsrf
        self.opener.open(f"{base}/api/status?token={token}", timeout=10).close()
        names = {c.name for c in self.jar}
        assert "_xsrf" in names and any(n.startswith("username-") for n in names), names

    @property
    def xsrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "_xsrf")

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str):
        """(status, body, headers) of a request sent with the browser's cookies."""
        request = urllib.request.Request(
            self.base + path, data=body, method=method, headers=headers
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read(), error.headers


def token_query(base: str, token: str, path: str, **args):
    body = json.dumps({"path": path, "args": args}).encode()
    request = urllib.request.Request(
        f"{base}/convex/api/query", data=body, method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


PWNED = "import os, pathlib\npathlib.Path(os.getcwd(), 'PWNED').mkdir()\n"
PUSH = json.dumps({"files": {"evil.py": PWNED}}).encode()
INC = json.dumps({"path": "counter:inc", "args": {"name": "xsite", "by": 1}}).encode()


def test_cross_site_requests_with_the_login_cookie_are_refused(jupyter):
    base, token, root = jupyter
    browser = Browser(base, token)
    text = {"Content-Type": "text/plain"}  # a "simple" request: no CORS preflight
    for path, body in (("/convex/api/push", PUSH), ("/convex/api/mutation", INC)):
        # A page on another site: the browser adds the cookies, not the XSRF header.
        status, answer, headers = browser.request("POST", path, body, Origin=EVIL, **text)
        assert status == 403, answer
        assert b"Cross-origin" in answer
        assert headers.get("Access-Control-Allow-Origin") is None
        # Same origin or no Origin header (an old browser, a form), still no XSRF token.
        for origin in ({"Origin": base}, {}):
            status, answer, _ = browser.request("POST", path, body, **origin, **text)
            assert status == 403, answer
    # Reading data: a cross-site GET is refused too.
    status, _, headers = browser.request(
        "GET", "/convex/api/query?path=counter:get&args=%7B%22name%22:%22xsite%22%7D", Origin=EVIL
    )
    assert status == 403 and headers.get("Access-Control-Allow-Origin") is None
    # The refusals came before anything ran: nothing pushed, nothing incremented.
    assert token_query(base, token, "counter:get", name="xsite")["value"] == 0.0
    assert not (root / "PWNED").exists() and not (root / ".convex" / "pushed").exists()
    assert not Path("PWNED").exists()


def test_same_origin_pages_with_the_xsrf_token_and_token_clients_still_work(jupyter):
    base, token, _ = jupyter
    browser = Browser(base, token)
    json_type = {"Content-Type": "application/json"}
    status, answer, headers = browser.request(
        "POST", "/convex/api/mutation", INC, Origin=base, **{"X-XSRFToken": browser.xsrf},
        **json_type,
    )  # fmt: skip
    assert status == 200, answer
    assert json.loads(answer) == {"status": "success", "value": 1.0}
    assert headers.get("Access-Control-Allow-Origin") is None
    status, answer, _ = browser.request(
        "GET", "/convex/api/query?path=counter:get&args=%7B%22name%22:%22xsite%22%7D",
        Referer=f"{base}/lab", **{"X-XSRFToken": browser.xsrf},
    )  # fmt: skip
    assert status == 200 and json.loads(answer)["value"] == 1.0
    # Jupyter's token (kernels, scripts) needs no XSRF token, from any origin, like Jupyter's
    # own API: a browser never sends it on its own.
    request = urllib.request.Request(
        f"{base}/convex/api/mutation", data=INC, method="POST",
        headers={"Authorization": f"token {token}", "Origin": EVIL, **json_type},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["value"] == 2.0


def upgrade(base: str, **headers: str) -> int:
    """The HTTP status of a WebSocket upgrade to the shared store (101 when accepted)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = base.replace("http://", "ws://") + "/convex/api/sync"
    try:
        with connect(url, additional_headers=headers, open_timeout=10, origin=None) as ws:
            ws.close()
            return 101
    except InvalidStatus as exc:
        return int(exc.response.status_code)


def test_cross_origin_websocket_is_refused(jupyter):
    base, token, _ = jupyter
    cookie = Browser(base, token).cookie_header
    assert upgrade(base, Cookie=cookie, Origin=EVIL) == 403
    assert upgrade(base, Cookie=cookie, Origin=base) == 101
    assert upgrade(base, Authorization=f"token {token}", Origin=EVIL) == 101  # not a browser
    assert upgrade(base, Origin=base) == 403  # no login at all


def test_the_admin_key_is_refused_in_the_url_and_never_logged(jupyter, tmp_path):
    base, token, root = jupyter
    admin_key = (root / ".convex" / "shared.db.admin-key").read_text().strip()
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    for path in ("/convex/api/nope", "/convex/api/query", "/convex/nothing"):
        request = urllib.request.Request(
            f"{base}{path}?adminKey={admin_key}", data=INC, method="POST", headers=headers
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code in (401, 404)
        info.value.close()
    log = tmp_path / "jupyter.log"
    wait_for(lambda: b"/convex/nothing" in log.read_bytes())
    text = log.read_bytes()
    assert b"adminKey=[secret]" in text
    assert admin_key.encode() not in text


def test_limits_from_the_jupyter_config_must_be_0_or_more():
    from types import SimpleNamespace

    from kernel_ext.server_ext import _limits

    def limits(**section: object) -> dict[str, object]:
        return _limits(SimpleNamespace(config={"ConvexNotebook": section}))

    assert limits(function_time_limit=0, max_subscriptions="3") == {
        "time_limit": 0.0,
        "max_subscriptions": 3,
    }
    for name in ("function_time_limit", "max_subscriptions", "max_concurrent_calls"):
        with pytest.raises(ValueError, match=f"c.ConvexNotebook.{name} is -1.*0 or more"):
            limits(**{name: -1})


# -- connect_jupyter(): the shared store from another process --------------------------------


def test_connect_jupyter_finds_the_running_server(jupyter, tmp_path):
    base, _, root = jupyter
    runtime = tmp_path / "runtime"
    with kernel_ext.connect_jupyter(runtime_dir=runtime) as owner:
        assert owner.query("counter:secret") == "internal data"  # internal: as admin
        owner.mutation("counter:inc", name="script", by=3)
    with kernel_ext.connect_jupyter(base, runtime_dir=runtime, root_dir=root) as again:
        assert again.query("counter:get", name="script") == 3.0
    key_file = root / ".convex" / "shared.db.admin-key"
    records = list(runtime.glob("convex-notebook-*.json"))
    for private in (key_file, *records):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert len(records) == 1
    with pytest.raises(StoreError, match=r"None of the running Jupyter servers match.*url="):
        kernel_ext.connect_jupyter("http://127.0.0.1:1", runtime_dir=runtime)


def test_connect_jupyter_finds_a_store_given_by_a_relative_path(tmp_path):
    """`CONVEX_JUPYTER_DB` relative to the Jupyter server's folder: another process, in
    another folder, still finds the admin key."""
    process, _ = start_jupyter(tmp_path, cwd=tmp_path, db="stores/shared.db")
    try:
        assert Path.cwd() != tmp_path
        with kernel_ext.connect_jupyter(runtime_dir=tmp_path / "runtime") as owner:
            assert owner.query("counter:secret") == "internal data"  # internal: as admin
        assert (tmp_path / "stores" / "shared.db.admin-key").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


def test_connect_jupyter_without_a_server_says_how_to_start_one(tmp_path):
    with pytest.raises(StoreError, match=r"No running Jupyter server.*jupyter lab"):
        kernel_ext.connect_jupyter(runtime_dir=tmp_path)


def test_connect_jupyter_with_two_servers_lists_them(tmp_path):
    starts = [start_jupyter(tmp_path / name, runtime=tmp_path / "runtime") for name in "ab"]
    try:
        with pytest.raises(StoreError, match="Several of the running Jupyter servers") as info:
            kernel_ext.connect_jupyter(runtime_dir=tmp_path / "runtime")
        for _, (base, _, root) in starts:
            assert base in str(info.value) and str(root) in str(info.value)
        (_, (_, _, root_b)) = starts[1]
        with kernel_ext.connect_jupyter(root_dir=root_b, runtime_dir=tmp_path / "runtime") as b:
            b.mutation("counter:inc", name="b", by=1)
        assert token_query(*starts[1][1][:2], "counter:get", name="b")["value"] == 1.0
        assert token_query(*starts[0][1][:2], "counter:get", name="b")["value"] == 0.0
    finally:
        for process, _ in starts:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)

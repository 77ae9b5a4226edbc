"""Several `python -m kernel_ext serve` processes on one PostgreSQL store: live data, the admin
key and pushed functions are shared by all of them; the URL's password is never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for
from sync_peers import APP, JS_DIR, ROOT, ServerProcess, python_client_script

#: The cluster trusts loopback connections: this password is sent and ignored, so a test can
#: check it never shows.
PASSWORD = "s3cret"

WATCHER = """
sub = ConvexClient(URL).subscribe("counter:get", {"name": "reconnect"})
for value in sub:
    emit("value", value)
    if value >= 2.0:
        break
"""


def _with_password(url: str) -> str:
    """`postgresql://postgres@host...` with a password in its user part."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


@pytest.fixture
def db_url(pg_url: str) -> str:
    return _with_password(pg_url)


@pytest.fixture
def serve(db_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start `serve` processes on the test's database; all are stopped at the end, and none
    printed the password."""
    started: list[ServerProcess] = []

    def start(*extra: str, app: Path = APP) -> ServerProcess:
        # ServerProcess passes `str(db)` as --db: a URL goes through unchanged.
        server = ServerProcess(db_url, app=app, extra=extra)  # type: ignore[arg-type]
        started.append(server)
        return server.start(timeout=60)

    yield start
    for server in started:
        server.stop()
    for server in started:
        assert not any(PASSWORD in line for line in server.output), server.output


def _values(proc: subprocess.Popen[str]) -> Iterator[float]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("["):
            label, value = json.loads(line)
            if label == "value":
                yield value


def _watch_while_other_mutates(
    command: list[str], watched: ServerProcess, mutated: ServerProcess
) -> list[float]:
    """Run a watcher subscribed through one server, bump the counter twice through the
    other; returns what the watcher saw."""
    seen: list[float] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=JS_DIR) as proc:
        watchdog = threading.Timer(60, proc.kill)  # a stuck watcher ends the test, not CI
        watchdog.start()
        try:
            values = _values(proc)
            seen.append(next(values))
            for target in (1.0, 2.0):
                mutated.call("mutation", "counter:inc", {"name": "reconnect"})
                while seen[-1] < target:
                    seen.append(next(values))
            assert proc.wait(20) == 0
        finally:
            watchdog.cancel()
            proc.kill()
    assert watched.url != mutated.url
    return seen


def test_python_client_sees_mutations_made_through_another_serve_process(serve, tmp_path):
    first, second = serve(), serve()
    script = python_client_script(tmp_path, WATCHER)
    seen = _watch_while_other_mutates([sys.executable, str(script), second.url], second, first)
    assert seen[0] == 0.0 and seen[-1] == 2.0 and 1.0 in seen


def test_js_client_sees_mutations_made_through_another_serve_process(node_client, serve):
    first, second = serve(), serve()
    command = ["node", str(node_client / "watch.mjs"), first.url, "2"]
    seen = _watch_while_other_mutates(command, first, second)
    assert seen[0] == 0 and seen[-1] == 2 and 1 in seen


def test_every_serve_process_prints_the_admin_key_kept_in_the_database(serve):
    first, second = serve(), serve()
    lines = [line for s in (first, second) for line in s.output if line.startswith("Admin key")]
    assert lines == [f"Admin key (kept in the database): {first.admin_key}"] * 2
    assert first.admin_key == second.admin_key
    # The store line names the database, password masked.
    assert any("postgres:***@" in line for line in first.output), first.output
    # It works as the admin key of either: an internal query runs through both.
    for server in (first, second):
        headers = {"Authorization": f"Convex {first.admin_key}"}
        answer = server.http("/api/query", {"path": "counter:secret", "args": {}}, headers=headers)
        assert answer["value"] == "internal data"


def test_a_given_admin_key_is_stored_when_the_store_has_none(serve):
    first = serve("--admin-key", "chosen-admin-key-1234")
    second = serve()
    assert first.admin_key == second.admin_key == "chosen-admin-key-1234"


def test_an_admin_key_other_than_the_stored_one_is_refused(serve, db_url):
    first = serve()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "kernel_ext", "serve", "--functions", str(APP)),
            *("--db", db_url, "--port", "0", "--admin-key", "another-admin-key-5678"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "has its own admin key" in output and "--admin-key" in output
    for secret in (first.admin_key, "another-admin-key-5678", PASSWORD):
        assert secret not in output
    assert "Serving" not in output


def _push(server: ServerProcess, key: str, body: dict[str, Any]) -> Any:
    return server.http("/api/push", body, headers={"Authorization": f"Convex {key}"})


def _answers(server: ServerProcess, path: str) -> Callable[[], Any]:
    """A probe for `wait_for`: the query's value, or None while the path is unknown."""

    def probe() -> Any:
        try:
            return server.call("query", path)
        except (RuntimeError, urllib.error.HTTPError):
            return None

    return probe


def test_functions_pushed_to_one_serve_process_are_served_by_every_other(serve):
    first, second = serve(), serve()
    key = first.admin_key
    cell = "%%convex_query pushed:hello\nreturn 'hello from a cell'"
    assert _push(first, key, {"cell": cell})["value"] == ["pushed:hello"]
    module = "from kernel_ext import query\n\n@query\ndef ping(ctx):\n    return 'pong'\n"
    _push(first, key, {"files": {"extra.py": module}})
    assert wait_for(_answers(second, "pushed:hello"), 30) == "hello from a cell"
    assert wait_for(_answers(second, "extra:ping"), 30) == "pong"
    # A redefinition pushed to the second reaches the first; pushes apply in their order.
    _push(second, key, {"cell": "%%convex_query pushed:hello\nreturn 'redefined'"})
    assert wait_for(lambda: _answers(first, "pushed:hello")() == "redefined", 30)
    # A process started later applies every push kept in the database before serving.
    third = serve()
    assert third.call("query", "pushed:hello") == "redefined"
    assert third.call("query", "extra:ping") == "pong"


def test_a_failed_push_is_not_kept(serve):
    first = serve()
    bad = "from kernel_ext import query\n\n@query\ndef broken(ctx):\n    return (\n"
    with pytest.raises(urllib.error.HTTPError):
        _push(first, first.admin_key, {"files": {"broken.py": bad}})
    second = serve()
    assert second.call("query", "counter:get", {"name": "x"}) == 0.0
    assert _answers(second, "broken:broken")() is None


def test_serve_on_an_unreachable_database_fails_naming_it_without_the_password(tmp_path):
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/nowhere"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "kernel_ext", "serve", "--functions", str(APP)),
            *("--db", url, "--port", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "127.0.0.1:1" in output and PASSWORD not in output


def test_concurrent_pushes_to_two_serve_processes_end_the_same_everywhere(serve, pg_url):
    """Both processes apply every push (none is skipped) in the database's order: whichever
    push got the last sequence number defines a function in both."""
    import psycopg

    servers = serve(), serve()
    key = servers[0].admin_key
    count = 12

    def push_many(server: ServerProcess, label: str) -> None:
        for i in range(count):
            module = (
                "from kernel_ext import query\n\n"
                f"@query\ndef who(ctx):\n    return '{label}{i}'\n\n"
                f"@query\ndef {label}{i}(ctx):\n    return {i}.0\n"
            )
            _push(server, key, {"files": {f"{label}{i}.py": module, "shared.py": module}})

    threads = [
        threading.Thread(target=push_many, args=(server, label))
        for server, label in zip(servers, "ab", strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT body FROM convex_pushes ORDER BY seq DESC LIMIT 1").fetchall()
    last = json.loads(bytes(rows[0][0]))["files"]["shared.py"].split("'")[1]
    expected = {f"{label}{i}:{label}{i}": float(i) for label in "ab" for i in range(count)}
    expected["shared:who"] = last

    def converged(server: ServerProcess) -> bool:
        return all(_answers(server, path)() == value for path, value in expected.items())

    for server in servers:
        assert wait_for(lambda s=server: converged(s), 30)

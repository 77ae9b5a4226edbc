"""The jupyter-server extension on a PostgreSQL store: it opens and serves the database, shares
it (data, admin key) with `serve` processes on the same database, and `%convex status` in its
kernels names the database with the password masked."""

from __future__ import annotations

import os
import signal

from polling import wait_for
from sync_peers import APP, ServerProcess
from test_server_ext import run, start_jupyter, start_kernel, token_query

import kernel_ext

#: The test cluster trusts loopback connections: the password is sent and ignored.
PASSWORD = "s3cret"

STATUS = """
import contextlib, io
_out = io.StringIO()
with contextlib.redirect_stdout(_out):
    get_ipython().run_line_magic("convex", "status")
"""


def _with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


def _stop(process) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(15)


def test_jupyter_server_on_postgresql_shares_the_database_with_serve(pg_url, tmp_path):
    url = _with_password(pg_url)
    process, (base, token, root) = start_jupyter(tmp_path, db=url)
    serve = ServerProcess(url)  # type: ignore[arg-type]  # --db takes str(db): the URL
    kernel = None
    try:
        serve.start(timeout=60)
        # One database: a mutation through `serve` is read through the Jupyter server.
        serve.call("mutation", "counter:inc", {"name": "team", "by": 3.0})
        assert wait_for(
            lambda: token_query(base, token, "counter:get", name="team")["value"] == 3.0, 30
        )
        # One admin key: the one kept in the database, also in the key file for scripts.
        key_file = root / ".convex" / "shared.db.admin-key"
        assert key_file.read_text().strip() == serve.admin_key
        with kernel_ext.connect_jupyter(runtime_dir=tmp_path / "runtime") as owner:
            assert owner.query("counter:secret") == "internal data"  # internal: as admin
            owner.mutation("counter:inc", name="team", by=1.0)
        assert serve.call("query", "counter:get", {"name": "team"}) == 4.0
        # A kernel of the server: `%convex status` names the database, password masked.
        kernel = start_kernel(base, token, tmp_path / "runtime")
        run(kernel, "%load_ext kernel_ext")
        run(kernel, STATUS)
        status = run(kernel, "", "_out.getvalue()")
        masked = pg_url.replace("postgresql://postgres@", "postgresql://postgres:***@", 1)
        assert f"store: {masked}" in status, status
        assert PASSWORD not in status
    finally:
        if kernel is not None:
            kernel.shutdown()
            kernel.stop_channels()
        serve.stop()
        _stop(process)
    log = (tmp_path / "jupyter.log").read_text()
    assert "postgres:***@" in log  # the extension says which store it serves
    assert PASSWORD not in log + "\n".join(serve.output)


def test_jupyter_server_takes_its_store_from_its_config(pg_url, tmp_path):
    """`c.ConvexNotebook.db` in jupyter_server_config.py (no environment variable)."""
    url = _with_password(pg_url)
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(f"c.ConvexNotebook.db = {url!r}\n")
    process, (base, token, root) = start_jupyter(tmp_path)
    try:
        assert token_query(base, token, "counter:get", name="cfg")["value"] == 0.0
        with kernel_ext.connect(url) as direct:  # the same database, opened here
            direct.load_functions(APP)
            direct.mutation("counter:inc", name="cfg", by=2.0)
        assert wait_for(
            lambda: token_query(base, token, "counter:get", name="cfg")["value"] == 2.0, 30
        )
        assert not (root / ".convex" / "shared.db").exists()  # no SQLite file was made
    finally:
        _stop(process)
    assert PASSWORD not in (tmp_path / "jupyter.log").read_text()

"""What an analyst meets in a notebook, with a real IPython shell and real stores: which store
`%convex status` names, `%convex connect` with an admin key, the promised names in every cell
body, tracebacks that point at the user's line, and named live tables."""

from __future__ import annotations

import re

import pytest
from IPython.core.interactiveshell import InteractiveShell
from ipython_cells import run
from polling import wait_for

import kernel_ext
from kernel_ext.sync.background import BackgroundServer


@pytest.fixture
def served():
    """An embedded store served on 127.0.0.1 (the server a remote notebook talks to)."""
    owner = kernel_ext.connect("memory")
    server = BackgroundServer(owner.backend)
    yield server
    server.stop()
    owner.close()


def plain(text):
    """Terminal output without its colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_connect_returns_the_one_client_interface(served):
    with kernel_ext.connect("memory") as embedded, kernel_ext.connect(served.url) as remote:
        for client in (embedded, remote):
            assert isinstance(client, kernel_ext.ConvexClient)
        assert (embedded.kind, remote.kind) == ("embedded", "remote")
        assert embedded.status == "connected" and not embedded.closed
    assert embedded.closed and remote.closed


# -- the names %load_ext promises, in every cell body, on every store --------------------


PROMISED_BODY = """%%convex_query promised(x: v.optional(v.string()))
table = define_table({"a": v.string()})
schema = define_schema({"t": table})
return [x is UNDEFINED, "notebook:promised" in str(api.notebook.promised), sorted(schema.tables)]"""


def test_promised_names_in_an_embedded_cell_body(ip):
    run(ip, PROMISED_BODY)
    assert ip.user_ns["convex"].query("notebook:promised") == [True, True, ["t"]]


def test_promised_names_in_a_cell_pushed_to_a_server(ip, served):
    ip.run_line_magic("convex", f"connect {served.url} --admin-key {served.admin_key}")
    run(ip, PROMISED_BODY)
    assert ip.user_ns["convex"].query("notebook:promised") == [True, True, ["t"]]


# -- %convex status and connect ----------------------------------------------------------


def test_status_names_the_embedded_file_and_how_to_reach_it(ip, tmp_path, capsys):
    ip.run_line_magic("convex", "status")
    out = capsys.readouterr().out
    assert str(tmp_path / ".convex" / "store.db") in out
    assert "%convex serve" in out
    ip.run_line_magic("convex", "serve")
    capsys.readouterr()
    try:
        ip.run_line_magic("convex", "status")
        out = capsys.readouterr().out
        url = ip.magics_manager.registry["ConvexMagics"]._server.url
        assert f"kernel_ext.connect({url!r})" in out
        assert ip.user_ns["convex_admin_key"] not in out
    finally:
        ip.run_line_magic("convex", "serve stop")


def test_status_right_after_load_ext_waits_for_a_remote_store(
    tmp_path, monkeypatch, served, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVEX_URL", served.url)
    monkeypatch.setenv("CONVEX_ADMIN_KEY", served.admin_key)
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "kernel_ext")
        shell.run_line_magic("convex", "status")  # at once: the socket may not be open yet
        out = capsys.readouterr().out
        assert f"store served at {served.url}" in out
        assert "connecting" not in out
        assert f"kernel_ext.connect({served.url!r})" in out
        assert served.admin_key not in out
    finally:
        shell.run_line_magic("unload_ext", "kernel_ext")
        InteractiveShell.clear_instance()


def test_status_of_the_jupyter_shared_store(ip, served, monkeypatch, capsys):
    monkeypatch.setenv("CONVEX_JUPYTER_URL", served.url)
    monkeypatch.setenv("CONVEX_JUPYTER_STORE", "/srv/notebooks/.convex/shared.db")
    ip.run_line_magic("convex", f"connect {served.url}")
    out = capsys.readouterr().out
    assert "the Jupyter server's shared store" in out
    assert "/srv/notebooks/.convex/shared.db" in out
    assert "kernel_ext.connect_jupyter()" in out


def test_status_says_what_it_waits_for(ip, capsys, monkeypatch):
    import kernel_ext.magics.shell as shell_module

    monkeypatch.setattr(shell_module, "STATUS_WAIT", 0.2)
    owner = kernel_ext.connect("memory")
    server = BackgroundServer(owner.backend)
    try:
        ip.run_line_magic("convex", f"connect {server.url}")
        server.stop()  # the server goes away: the client keeps trying
        wait_for(lambda: ip.user_ns["convex"].status == "reconnecting")
        capsys.readouterr()
        ip.run_line_magic("convex", "status")
        out = capsys.readouterr().out
        assert f"store served at {server.url} (reconnecting: the server does not answer" in out
        assert not ip.user_ns["convex"]._status_listeners  # the waits stopped listening
    finally:
        owner.close()


def test_connect_with_admin_key_option_and_environment(ip, served, monkeypatch, capsys):
    run(ip, "%%convex_query ping --internal\nreturn 'pong'")  # on the embedded store
    ip.run_line_magic("convex", f"connect {served.url} --admin-key {served.admin_key}")
    run(ip, "%%convex_query ping --internal\nreturn 'served pong'")  # pushing needs the key
    assert ip.run_line_magic("convex", "query notebook:ping")["value"].tolist() == ["served pong"]
    monkeypatch.setenv("CONVEX_ADMIN_KEY", served.admin_key)
    ip.run_line_magic("convex", f"connect {served.url}")
    assert set(ip.run_line_magic("convex", "functions")["path"]) == {"notebook:ping"}
    assert served.admin_key not in capsys.readouterr().out


# -- errors point at the user's line -------------------------------------------------------


def test_traceback_shows_the_cells_line_and_hides_the_library(ip, capsys):
    run(ip, "%%convex_query fails\nx = 1\ny = 2\nreturn x / (y - 2)")
    capsys.readouterr()
    result = ip.run_cell("convex.query('notebook:fails')")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    out = plain(capsys.readouterr().out)
    assert "line 4" in out and "return x / (y - 2)" in out
    assert "convex.query('notebook:fails')" in out
    assert "kernel_ext/" not in out, out
    ip.run_line_magic("convex", "traceback full")
    ip.run_cell("convex.query('notebook:fails')")
    assert "kernel_ext/" in plain(capsys.readouterr().out)


def test_remote_error_names_the_functions_line(ip, served):
    ip.run_line_magic("convex", f"connect {served.url} --admin-key {served.admin_key}")
    run(ip, "%%convex_mutation boom\nx = 1\nraise ValueError('no ' + str(x))")
    with pytest.raises(kernel_ext.errors.StoreError) as info:
        ip.user_ns["convex"].mutation("notebook:boom")
    assert "Uncaught ValueError: no 1" in str(info.value)
    assert "at boom (" in str(info.value) and ":3)" in str(info.value)


# -- named live tables -------------------------------------------------------------------


def test_live_table_is_bound_to_a_name_and_titled_with_its_arguments(ip):
    from widgets import LiveTable

    run(
        ip,
        "%%convex_query tasks:open(done: v.boolean(), n: v.int64())\nreturn [{'done': done, 'n': n}]",
    )
    assert (
        run(
            ip,
            "%%convex_query tasks:open2(done: v.boolean(), n: v.int64()) --live done=False n=2 --name t\nreturn [{'done': done}]",
        )
        is None
    )
    table = ip.user_ns["t"]
    assert isinstance(table, LiveTable)
    assert table.title == "tasks:open2(done=False, n=2)"
    assert table.selection == [] and table.sort == []
    table.set_args({"done": True, "n": 3})  # the caption follows the arguments shown
    wait_for(lambda: table.title == "tasks:open2(done=True, n=3)")
    table.close()

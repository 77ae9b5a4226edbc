"""The magics in a real IPython InteractiveShell."""

from __future__ import annotations

import traceback
import urllib.error
import urllib.request

import pandas as pd
import pytest
from ipython_cells import run

from kernel_ext import ConvexError
from kernel_ext.errors import ArgumentError, UnknownFunction
from kernel_ext.functions.headers import HeaderError


def test_load_ext_injects_names_and_uses_embedded_store(ip, tmp_path):
    for name in ("convex", "api", "v", "define_schema", "define_table"):
        assert name in ip.user_ns
    assert ip.user_ns["convex"].location == str(tmp_path / ".convex" / "store.db")
    client = ip.user_ns["convex"]
    ip.run_line_magic("load_ext", "kernel_ext")  # loading twice is harmless
    __import__("kernel_ext").load_ipython_extension(ip)
    assert ip.user_ns["convex"] is client
    ip.run_line_magic("reload_ext", "kernel_ext")  # a reload reconnects
    assert ip.user_ns["convex"].query is not None
    run(ip, "%%convex_query ping\nreturn 'pong'")
    assert ip.user_ns["convex"].query("notebook:ping") == "pong"


def test_schema_query_mutation_round_trip(ip):
    run(
        ip,
        '%%convex_schema\nusers = define_table({"email": v.string(), "name": v.string()}).index("by_email", ["email"])',
    )
    defined = run(
        ip,
        '%%convex_mutation users:add(email: v.string(), name: v.string())\nreturn db.insert("users", {"email": email, "name": name})',
    )
    assert repr(defined) == "mutation users:add(email: v.string(), name: v.string())"
    run(
        ip,
        '%%convex_query users:get_user_by_email(email: v.string())\nreturn db.query("users").with_index("by_email", lambda q: q.eq("email", email)).unique()',
    )
    convex = ip.user_ns["convex"]
    user_id = convex.mutation("users:add", email="a@b.c", name="Ada")
    assert convex.query("users:get_user_by_email", email="a@b.c")["_id"] == user_id
    assert convex.query(ip.user_ns["api"].users.get_user_by_email, email="x") is None


def test_default_module_and_no_args(ip):
    run(ip, "%%convex_query answer\nreturn 42")
    assert ip.user_ns["convex"].query("notebook:answer") == 42
    with pytest.raises(ArgumentError):
        ip.user_ns["convex"].query("notebook:answer", extra=1)


def test_optional_argument_left_out_is_undefined(ip):
    run(
        ip,
        "%%convex_query opt(x: v.optional(v.int64()))\nreturn 'missing' if x is UNDEFINED_ else x",
    )
    ip.user_ns["UNDEFINED_"] = __import__("kernel_ext").UNDEFINED
    convex = ip.user_ns["convex"]
    assert convex.query("notebook:opt") == "missing"
    assert convex.query("notebook:opt", x=3) == 3


def test_helpers_from_earlier_cells_are_visible(ip):
    run(ip, "def shout(s):\n    return s.upper()")
    run(ip, "%%convex_query greet(name: v.string())\nreturn shout(name)")
    assert ip.user_ns["convex"].query("notebook:greet", name="ada") == "ADA"


def test_rerunning_a_cell_redefines_and_reruns_subscriptions(ip):
    run(ip, "%%convex_query version\nreturn 1")
    sub = ip.user_ns["convex"].subscribe("notebook:version")
    assert sub.value == 1
    run(ip, "%%convex_query version\nreturn 2")
    import time

    deadline = time.monotonic() + 5
    while sub.value != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sub.value == 2


def test_bad_header_explains_grammar_and_registers_nothing(ip):
    with pytest.raises(HeaderError, match=r"\[module:\]name"):
        run(ip, "%%convex_query users:get(email)\nreturn 1")
    with pytest.raises(HeaderError, match="Unknown option"):
        run(ip, "%%convex_query users:get --nope\nreturn 1")
    with pytest.raises(UnknownFunction):
        ip.user_ns["convex"].query("users:get")


def test_syntax_error_points_at_users_line(ip):
    result = ip.run_cell("%%convex_query broken\nx = 1\nreturn (\n")
    error = result.error_in_exec or result.error_before_exec
    assert isinstance(error, SyntaxError)
    assert error.lineno in (3, 4)
    with pytest.raises(UnknownFunction):
        ip.user_ns["convex"].query("notebook:broken")


def test_runtime_error_traceback_shows_cell_lines(ip):
    run(ip, "%%convex_query fails\nx = 1\ny = 2\nreturn 1 / 0")
    with pytest.raises(ZeroDivisionError) as info:
        ip.user_ns["convex"].query("notebook:fails")
    frames = traceback.extract_tb(info.value.__traceback__)
    last = frames[-1]
    assert last.lineno == 4
    assert last.line == "return 1 / 0"


def test_schema_cell_errors_name_the_cells_own_line(ip):
    result = ip.run_cell('%%convex_schema\nok = define_table({"a": v.string()})\nbad = 1 / 0')
    error = result.error_in_exec
    assert isinstance(error, ZeroDivisionError)
    last = traceback.extract_tb(error.__traceback__)[-1]
    assert (last.lineno, last.line) == (3, "bad = 1 / 0")


def test_validator_error_registers_nothing(ip):
    with pytest.raises(HeaderError, match="validator of 'x'"):
        run(ip, "%%convex_query f(x: v.nonsense())\nreturn x")
    with pytest.raises(UnknownFunction):
        ip.user_ns["convex"].query("notebook:f")


def test_line_magics(ip, capsys):
    run(ip, '%%convex_schema\ntasks = define_table({"title": v.string(), "done": v.boolean()})')
    run(
        ip,
        "%%convex_mutation tasks:add(title: v.string()) --internal\nreturn db.insert('tasks', {'title': title, 'done': False})",
    )
    run(ip, "%%convex_query tasks:list\nreturn db.query('tasks').collect()")
    ip.run_line_magic("convex", "mutation tasks:add title='a b'")
    ip.run_line_magic("convex", "mutation tasks:add title=plain")
    ip.run_line_magic("convex", "mutation tasks:add title='1'")  # a quoted literal: a string
    ip.run_line_magic("convex", 'mutation tasks:add title="True"')
    df = ip.run_line_magic("convex", "query tasks:list")
    assert isinstance(df, pd.DataFrame)
    assert list(df["title"]) == ["a b", "plain", "1", "True"]
    assert df.index.name == "_id"
    functions = ip.run_line_magic("convex", "functions")
    assert set(functions["path"]) == {"tasks:add", "tasks:list"}
    assert "tasks" in set(ip.run_line_magic("convex", "tables")["table"])
    ip.run_line_magic("convex", "status")
    assert "embedded store" in capsys.readouterr().out
    with pytest.raises(HeaderError, match="Unknown %convex command"):
        ip.run_line_magic("convex", "frobnicate")


def test_convex_error_from_magic_function(ip):
    run(ip, "%%convex_mutation fail\nraise ConvexError({'code': 'NOPE'})")
    ip.user_ns["ConvexError"] = ConvexError
    with pytest.raises(ConvexError) as info:
        ip.user_ns["convex"].mutation("notebook:fail")
    assert info.value.data == {"code": "NOPE"}


def test_connect_rebinds_convex(ip):
    ip.run_line_magic("convex", "connect memory")
    assert ip.user_ns["convex"].location == "memory"


def test_serve_the_kernels_store(ip, capsys):
    import kernel_ext

    run(ip, "%%convex_query hello\nreturn 'served'")
    ip.run_line_magic("convex", "serve")
    out = capsys.readouterr().out
    url = out.split("serving ")[1].split()[0]
    site = out.split("HTTP actions at ")[1].split()[0]
    try:
        with kernel_ext.connect(url) as remote:
            assert remote.query("notebook:hello") == "served"
        # No http.py is loaded: the site answers, with Convex's 404 for an unrouted path.
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{site}/nothing", timeout=10)
        assert answer.value.code == 404
    finally:
        ip.run_line_magic("convex", "serve stop")


def test_convex_query_gives_imported_columns_their_types(ip):
    """`df = %convex query ...` converts imported columns back like table_df does."""
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(["2026-01-02 03:04:05", "2026-05-06 07:08:09"]),
            "n": pd.array([1, None], dtype="Int64"),
        }
    )
    ip.user_ns["convex"].import_dataframe("events", frame, progress=False)
    run(ip, "%%convex_query events:all\nreturn db.query('events').collect()")
    df = ip.run_line_magic("convex", "query events:all")
    assert df["when"].dtype == frame["when"].dtype
    assert df["n"].dtype == "Int64"
    assert list(df["when"]) == list(frame["when"])


def test_query_cell_returning_a_limited_query(ip):
    run(ip, '%%convex_schema\nscores = define_table({"n": v.int64()}).index("by_n", ["n"])')
    run(
        ip,
        "%%convex_mutation scores:put(ns: v.array(v.int64()))\n"
        'for n in ns:\n    db.insert("scores", {"n": n})',
    )
    run(
        ip,
        "%%convex_query scores:top(k: v.int64())\n"
        'return db.query("scores").with_index("by_n").order("desc").limit(k)',
    )
    convex = ip.user_ns["convex"]
    convex.mutation("scores:put", ns=[3, 9, 1, 7])
    top = convex.query("scores:top", k=2)
    assert type(top) is list
    assert [d["n"] for d in top] == [9, 7]
    assert convex.query("scores:top", k=0) == []

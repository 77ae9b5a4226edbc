"""A `%%convex_query` cell may return the query itself: callers get the consumed list."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVEX_URL", raising=False)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kernel_ext")
    yield shell
    shell.run_line_magic("unload_ext", "kernel_ext")
    InteractiveShell.clear_instance()


def run(ip, source):
    result = ip.run_cell(source)
    if result.error_before_exec:
        raise result.error_before_exec
    if result.error_in_exec:
        raise result.error_in_exec
    return result.result


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

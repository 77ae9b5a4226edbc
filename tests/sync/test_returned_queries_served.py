"""A query function that returns its query (`.with_index(...).order("desc").limit(3)`) served
by `python -m kernel_ext serve`: the project's remote client and the official Python client
both receive the consumed list."""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sync_peers import ServerProcess, run_python_client

import kernel_ext
from tests.polling import wait_for

SCHEMA = """
from kernel_ext import define_schema, define_table, v

schema = define_schema({"scores": define_table({"n": v.number()}).index("by_n", ["n"])})
"""

SCORES = """
from kernel_ext import mutation, query, v


@mutation(args={"ns": v.array(v.number())})
def put(ctx, ns):
    for n in ns:
        ctx.db.insert("scores", {"n": n})


@query
def top3(ctx):
    return ctx.db.query("scores").with_index("by_n").order("desc").limit(3)
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    app = tmp_path / "app"
    app.mkdir()
    (app / "schema.py").write_text(textwrap.dedent(SCHEMA))
    (app / "scores.py").write_text(textwrap.dedent(SCORES))
    served = ServerProcess(tmp_path / "store.db", app=app).start()
    yield served
    served.stop(signal.SIGKILL)


def ns(docs) -> list[float]:
    return [d["n"] for d in docs]


def test_remote_and_official_clients_get_the_consumed_list(server, tmp_path):
    with kernel_ext.connect(server.url) as client:
        assert client.query("scores:top3") == []
        sub = client.subscribe("scores:top3")
        client.mutation("scores:put", ns=[4.0, 1.0, 5.0, 2.0])
        result = client.query("scores:top3")
        assert type(result) is list
        assert ns(result) == [5.0, 4.0, 2.0]
        wait_for(lambda: ns(sub.value or []) == [5.0, 4.0, 2.0])
        client.mutation("scores:put", ns=[4.5])
        wait_for(lambda: ns(sub.value or []) == [5.0, 4.5, 4.0])
    out = run_python_client(
        tmp_path,
        server.url,
        """
        c = ConvexClient(URL)
        emit("top3", c.query("scores:top3", {}))
        sub = c.subscribe("scores:top3", {})
        emit("live", next(sub))
        """,
    )
    assert ns(out["top3"]) == [5.0, 4.5, 4.0]
    assert ns(out["live"]) == [5.0, 4.5, 4.0]
    assert set(out["top3"][0]) == {"_id", "_creationTime", "n"}

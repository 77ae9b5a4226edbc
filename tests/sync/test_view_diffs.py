"""Result diffs on a served store (`QueryDiff`, our protocol extension): the project's remote
client receives a maintained view's changed rows instead of its whole value; official clients
keep receiving whole values; a reconnect starts again from a whole value."""

from __future__ import annotations

import random
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sync_peers import ServerProcess, run_python_client

import kernel_ext
from kernel_ext.store.rows import RowsSnapshot
from kernel_ext.store.values import from_json
from kernel_ext.store.views import ResultDiff
from kernel_ext.sync import messages as m
from kernel_ext.sync.outcomes import Outcome
from kernel_ext.sync.protocol import SubscribeQuery, SyncProtocol
from tests.polling import wait_for

SCHEMA = """
from kernel_ext import define_schema, define_table, v

schema = define_schema(
    {"items": define_table({"n": v.number(), "g": v.string()}).index("by_n", ["n"])}
)
"""

ITEMS = """
from kernel_ext import mutation, query, v


@mutation(args={"start": v.number(), "count": v.number()})
def seed(ctx, start, count):
    for i in range(int(start), int(start + count)):
        ctx.db.insert("items", {"n": float(i), "g": "abc"[i % 3]})


@mutation(args={"n": v.number(), "g": v.string()})
def add(ctx, n, g):
    return ctx.db.insert("items", {"n": n, "g": g})


@mutation(args={"id": v.string(), "n": v.number()})
def move(ctx, id, n):
    ctx.db.patch(id, {"n": n})


@mutation(args={"id": v.string()})
def drop(ctx, id):
    ctx.db.delete(id)


@query
def by_n(ctx):
    return ctx.db.query("items").with_index("by_n").order("desc")


@query
def per_group(ctx):
    return ctx.db.query("items").group_by("g").agg(count=("_id", "count"), top=("n", "max"))


@query
def overall(ctx):
    return ctx.db.query("items").agg(count=("_id", "count"), total=("n", "sum"))
"""

DOCS = 10_000
VIEWS = ("items:by_n", "items:per_group", "items:overall")


def write_app(folder: Path) -> Path:
    folder.mkdir()
    (folder / "schema.py").write_text(textwrap.dedent(SCHEMA))
    (folder / "items.py").write_text(textwrap.dedent(ITEMS))
    return folder


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    served = ServerProcess(tmp_path / "store.db", app=write_app(tmp_path / "app")).start()
    for start in range(0, DOCS, 2_500):
        served.call("mutation", "items:seed", {"start": start, "count": 2_500})
    yield served
    served.stop(signal.SIGKILL)


def fresh(server: ServerProcess, path: str) -> Any:
    """The query's value from a fresh run (HTTP API)."""
    return from_json(server.call("query", path))


def random_write(client: Any, rng: random.Random, ids: list[str]) -> None:
    """One random insert, patch or delete."""
    op = rng.choice(("add", "move", "drop"))
    if op == "add" or not ids:
        ids.append(
            client.mutation("items:add", n=rng.uniform(-10, DOCS + 10), g=rng.choice("abcd"))
        )
    elif op == "move":
        client.mutation("items:move", id=rng.choice(ids), n=rng.uniform(-10, DOCS + 10))
    else:
        client.mutation("items:drop", id=ids.pop(rng.randrange(len(ids))))


def test_remote_client_receives_diffs_that_rebuild_the_value(server):
    rng = random.Random(9)
    with kernel_ext.connect(server.url) as client:
        subs = {path: client.subscribe(path) for path in VIEWS}
        rows: dict[str, list[Any]] = {path: [] for path in VIEWS}
        diffs: list[ResultDiff] = []
        for path, sub in subs.items():
            sub.result(timeout=30)

            def on_diff(diff: ResultDiff, path: str = path) -> None:
                diffs.append(diff)
                diff.apply_to(rows[path])

            sub.on_diff(on_diff)
        whole = client.wire_stats()
        assert whole["QueryUpdated"] == len(VIEWS) and "QueryDiff" not in whole
        assert len(subs["items:by_n"].value) == DOCS
        ids = [row["_id"] for row in subs["items:by_n"].value[:: DOCS // 50]]
        for _ in range(40):
            random_write(client, rng, ids)
            # mutation() returns once this client's subscriptions reflect it
            for path, sub in subs.items():
                expected = fresh(server, path)
                assert sub.value == expected, path
        stats = client.wire_stats()
        assert stats["QueryUpdated"] == len(VIEWS), "no whole value after the first ones"
        assert stats["QueryDiff"] >= 40
        # 40 commits cost far less than one whole value of 10,000 documents (~700 kB)
        assert stats["bytes"] - whole["bytes"] < 200_000
        assert isinstance(subs["items:by_n"].value, RowsSnapshot)
        assert isinstance(subs["items:overall"].value, dict)
        wait_for(lambda: all(rows[p] == list(_rows(subs[p].value)) for p in VIEWS))
        assert any(d.base_ts is not None and len(d.removed) < 5 for d in diffs)


def _rows(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


def test_official_python_client_gets_whole_values_beside_a_diffing_client(server, tmp_path):
    with kernel_ext.connect(server.url) as client:
        sub = client.subscribe("items:by_n")
        sub.result(timeout=30)
        first = sub.value[0]
        out = run_python_client(
            tmp_path,
            server.url,
            f"""
            c = ConvexClient(URL)
            sub = c.subscribe("items:by_n", {{}})
            before = next(sub)
            emit("before", [len(before), before[0]["n"]])
            c.mutation("items:move", {{"id": "{first["_id"]}", "n": -1.0}})
            value = next(sub)
            while value[-1]["_id"] != "{first["_id"]}":
                value = next(sub)
            emit("after", value)
            """,
        )
        wait_for(lambda: sub.value[-1]["_id"] == first["_id"])
        assert client.wire_stats().get("QueryDiff", 0) >= 1
    assert out["before"] == [DOCS, DOCS - 1.0]
    assert out["after"] == fresh(server, "items:by_n")


def test_a_reconnect_resyncs_with_a_whole_value(server):
    with kernel_ext.connect(server.url) as client:
        sub = client.subscribe("items:by_n")
        sub.result(timeout=30)
        top = sub.value[0]["_id"]
        client.mutation("items:move", id=top, n=-5.0)
        assert client.wire_stats()["QueryUpdated"] == 1
        assert server.stop(signal.SIGTERM) == 0
        server.start()  # the same store, on the same port
        wait_for(lambda: client.wire_stats()["QueryUpdated"] == 2, timeout=30)
        wait_for(lambda: client.status == "connected")
        client.mutation("items:drop", id=top)
        assert sub.value == fresh(server, "items:by_n")
        stats = client.wire_stats()
        assert stats["QueryUpdated"] == 2 and stats["QueryDiff"] >= 2


# -- the protocol alone (sans-I/O) ----------------------------------------------------------


class _NoAuth:
    def authenticate_user(self, token: str) -> Any:
        raise AssertionError

    def authenticate_admin(self, key: str, acting_as: Any) -> Any:
        raise AssertionError


def _session(diffs: bool) -> tuple[SyncProtocol, SubscribeQuery]:
    protocol = SyncProtocol(_NoAuth(), now=0.0)
    connect = {"type": "Connect", "sessionId": "s", "connectionCount": 0, "clientTs": 0}
    if diffs:
        connect["resultDiffs"] = 1
    protocol.receive_text(m.serialize(connect))
    add = {"type": "Add", "queryId": 0, "udfPath": "items:by_n", "args": [{}]}
    protocol.receive_text(
        m.serialize(
            {"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [add]}
        )
    )
    (event,) = protocol.events_received()
    assert isinstance(event, SubscribeQuery)
    return protocol, event


def _send(protocol: SyncProtocol) -> list[dict[str, Any]]:
    ts = protocol.transition_ts()
    assert ts is not None
    protocol.send_transition(ts)
    import json

    (frame,) = protocol.data_to_send()
    return list(json.loads(frame)["modifications"])


def test_protocol_sends_diffs_only_to_a_client_that_asked():
    value = [{"n": 1.0}, {"n": 2.0}]
    changed = [{"n": 1.0}, {"n": 3.0}]
    diff = ResultDiff(20, 10, (), (), ((1, {"n": 3.0}),))
    for asked in (False, True):
        protocol, sub = _session(asked)
        first = Outcome.ok(value, (), ResultDiff(10, 5, (0,), (), ()))
        protocol.receive_query_result(0, sub.token, first, 10)
        assert [e["type"] for e in _send(protocol)] == ["QueryUpdated"]  # a first result
        protocol.receive_query_result(0, sub.token, Outcome.ok(changed, (), diff), 20)
        (entry,) = _send(protocol)
        if asked:
            assert entry["type"] == "QueryDiff"
            assert entry["diffs"] == [
                {"removed": [], "inserted": [], "updated": [[1, {"n": 3.0}]], "one": False}
            ]
        else:  # byte for byte what an official client always got
            assert entry == m.query_updated(0, Outcome.ok(changed))


def test_protocol_chains_diffs_and_falls_back_to_a_whole_value():
    protocol, sub = _session(True)
    protocol.receive_query_result(0, sub.token, Outcome.ok([{"n": 1.0}]), 10)
    _send(protocol)
    two = Outcome.ok([{"n": 1.0}, {"n": 2.0}], (), ResultDiff(20, 10, (), ((1, {"n": 2.0}),)))
    three = Outcome.ok([{"n": 2.0}], (), ResultDiff(30, 20, (0,)))
    protocol.receive_query_result(0, sub.token, two, 20)
    protocol.receive_query_result(0, sub.token, three, 30)
    (entry,) = _send(protocol)
    assert entry["type"] == "QueryDiff" and len(entry["diffs"]) == 2
    # A diff from a value this client never got: the whole value.
    skipped = Outcome.ok([{"n": 4.0}], (), ResultDiff(50, 40, (), (), ((0, {"n": 4.0}),)))
    protocol.receive_query_result(0, sub.token, skipped, 50)
    (entry,) = _send(protocol)
    assert entry["type"] == "QueryUpdated" and entry["value"] == [{"n": 4.0}]


def test_the_jupyter_shared_store_sends_diffs_too(tmp_path):
    """`connect_jupyter()` uses the same client, and the extension the same server."""
    import os

    from test_server_ext import start_jupyter

    process, _ = start_jupyter(tmp_path / "jupyter")
    try:
        with kernel_ext.connect_jupyter(runtime_dir=tmp_path / "jupyter" / "runtime") as store:
            store.load_functions(write_app(tmp_path / "app"))
            store.mutation("items:seed", start=0, count=2_000)
            sub = store.subscribe("items:by_n")
            wait_for(lambda: sub.value is not None and len(sub.value) == 2_000)
            top = sub.value[0]["_id"]
            store.mutation("items:move", id=top, n=-1.0)
            assert sub.value[-1]["_id"] == top and len(sub.value) == 2_000
            stats = store.wire_stats()
            assert stats["QueryUpdated"] == 1 and stats["QueryDiff"] >= 1
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


def test_a_views_whole_value_is_marked_for_a_client_that_asked():
    """So the client hands out an immutable value and knows the view is incremental before
    its first diff (a LiveTable says `live · incremental` from the start)."""
    from kernel_ext.store.rows import SortedRows
    from kernel_ext.sync.client_protocol import _query_event

    view_value = SortedRows([(b"a", {"n": 1.0}), (b"b", {"n": 2.0})]).snapshot()
    for asked in (False, True):
        protocol, sub = _session(asked)
        protocol.receive_query_result(0, sub.token, Outcome.ok(view_value), 10)
        (entry,) = _send(protocol)
        if asked:
            assert entry["view"] is True
            event = _query_event(entry, 10)
            assert isinstance(event.value, RowsSnapshot) and event.value == list(view_value)
        else:  # byte for byte what an official client always got
            assert entry == m.query_updated(0, Outcome.ok(list(view_value)))


def test_a_live_table_over_a_served_view_says_incremental_from_the_start(server):
    from widgets import LiveTable

    with kernel_ext.connect(server.url) as client:
        table = LiveTable(client, "items:by_n")
        try:
            wait_for(lambda: table.mode != "", timeout=60)
            assert table.mode == "incremental"  # before any diff arrived
        finally:
            table.close()

"""Maintained views: a live subscription to a returned query or aggregate equals, after every
commit, what a fresh run returns, on SQLite file and memory stores (property-tested against
the same function's consumed result after random inserts, patches, unsets and deletes)."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cpu_load import cpu_load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polling import wait_for

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, query, v
from kernel_ext.client.embedded import Client
from kernel_ext.store.keys import encode_value
from kernel_ext.store.rows import RowsSnapshot
from kernel_ext.store.views import QueryView, ResultDiff

SCHEMA_INDEX = ("g", "x")


@query
def everything(ctx: Any) -> Any:
    return ctx.db.query("docs")


@query
def by_gx_desc(ctx: Any) -> Any:
    return ctx.db.query("docs").with_index("by_gx").order("desc")


@query
def group_range(ctx: Any, g: str) -> Any:
    return (
        ctx.db.query("docs")
        .with_index("by_gx", lambda q: q.eq("g", g).gt("x", 1))
        .filter(lambda q: q.neq(q.field("tag"), "skip"))
    )


@query
def top(ctx: Any, k: float, desc: bool) -> Any:
    return ctx.db.query("docs").with_index("by_gx").order("desc" if desc else "asc").limit(int(k))


@query
def filtered_top(ctx: Any) -> Any:
    return (
        ctx.db.query("docs").filter(lambda q: q.eq(q.field("tag"), "keep")).order("desc").limit(2)
    )


@query
def summary(ctx: Any) -> Any:
    return (
        ctx.db.query("docs")
        .group_by("g", "tag")
        .agg(
            n=("_id", "count"),
            present=("x", "count"),
            total=("x", "sum"),
            mean=("x", "mean"),
            low=("x", "min"),
            high=("x", "max"),
        )
    )


@query
def overall(ctx: Any) -> Any:
    return ctx.db.query("docs").agg(n=("_id", "count"), total=("x", "sum"), high=("x", "max"))


@query
def keyed_by_prelude(ctx: Any) -> Any:
    # Reads before returning: a change to what it read re-runs the function.
    config = ctx.db.query("config").first()
    g = "a" if config is None else config["g"]
    return ctx.db.query("docs").with_index("by_gx", lambda q: q.eq("g", g))


@mutation
def apply_ops(ctx: Any, ops: list[Any]) -> None:
    ids = [d["_id"] for d in ctx.db.query("docs").collect()]
    for op in ops:
        kind = op["kind"]
        if kind == "insert" or not ids:
            ctx.db.insert("docs", op["doc"])
        elif kind == "config":
            current = ctx.db.query("config").first()
            if current is None:
                ctx.db.insert("config", {"g": op["doc"]["g"]})
            else:
                ctx.db.patch(current["_id"], {"g": op["doc"]["g"]})
        else:
            target = ids[int(op["which"]) % len(ids)]
            if ctx.db.get(target) is None:
                continue
            if kind == "patch":
                ctx.db.patch(target, op["doc"])
            elif kind == "unset":
                ctx.db.patch(target, {"x": None})  # None removes the field (as in Convex)
            else:
                ctx.db.delete(target)


FUNCTIONS = {
    "views:everything": everything,
    "views:by_gx_desc": by_gx_desc,
    "views:group_range": group_range,
    "views:top": top,
    "views:filtered_top": filtered_top,
    "views:summary": summary,
    "views:overall": overall,
    "views:keyed_by_prelude": keyed_by_prelude,
    "views:apply_ops": apply_ops,
}

SUBSCRIPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("views:everything", {}),
    ("views:by_gx_desc", {}),
    ("views:group_range", {"g": "a"}),
    ("views:top", {"k": 3, "desc": False}),
    ("views:top", {"k": 2, "desc": True}),
    ("views:filtered_top", {}),
    ("views:summary", {}),
    ("views:overall", {}),
    ("views:keyed_by_prelude", {}),
]

numbers = st.one_of(
    st.integers(-3, 3), st.sampled_from([0.5, 1.5, 2.0, -1.25, 1e300, float("inf")])
)
docs = st.fixed_dictionaries(
    {"g": st.sampled_from(["a", "b"]), "tag": st.sampled_from(["keep", "skip"])},
    optional={"x": numbers},
)
ops = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["insert", "insert", "patch", "unset", "delete", "config"]),
        "which": st.integers(0, 50),
        "doc": docs,
    }
)


@pytest.fixture
def views_client(store_url: str) -> Iterator[Client]:
    """A client whose `docs` table has the index `by_gx` on (g, x), any field types."""
    client = kernel_ext.connect(store_url)
    try:
        docs_table = define_table({"g": v.string(), "tag": v.string(), "x": v.any()}).index(
            "by_gx", list(SCHEMA_INDEX)
        )
        config = define_table({"g": v.string()})
        client.backend.store.set_schema(
            define_schema({"docs": docs_table, "config": config}, schema_validation=False)
        )
        for path, function in FUNCTIONS.items():
            client.backend.register(path, function)
        yield client
    finally:
        client.close()


def _exact(value: Any) -> bytes:
    """The value in Convex's exact encoding: 0 and 0.0 (and True and 1) differ."""
    return encode_value(value if isinstance(value, dict) else list(value))


def _rows(value: Any) -> list[Any]:
    return [value] if isinstance(value, dict) else list(value)


def _commit(client: Client, batch: list[Any]) -> int:
    _, ts = client.backend.call_with_ts(
        "views:apply_ops", {"ops": batch}, kind="mutation", identity=None, public_only=True
    )
    assert ts is not None
    return ts


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(ops, min_size=1, max_size=4), min_size=1, max_size=12))
def test_views_equal_a_fresh_run_after_every_commit(
    views_client: Client, batches: list[list[Any]]
) -> None:
    client = views_client
    _commit(client, [{"kind": "delete", "which": i, "doc": {}} for i in range(60)])
    subs = [client.subscribe(path, args) for path, args in SUBSCRIPTIONS]
    replayed: list[list[Any]] = [[] for _ in subs]
    handles = []
    try:
        for rows, sub in zip(replayed, subs, strict=True):
            sub.value
            handles.append(sub.on_diff(lambda diff, rows=rows: diff.apply_to(rows)))
        for batch in batches:
            ts = _commit(client, batch)
            assert client.backend.subscriptions.wait_processed(ts, timeout=30)
            for (path, args), sub, rows in zip(SUBSCRIPTIONS, subs, replayed, strict=True):
                fresh = client.query(path, args)
                assert _exact(sub.value) == _exact(fresh), (path, args)
        for (path, args), sub, rows in zip(SUBSCRIPTIONS, subs, replayed, strict=True):
            _wait_for_callbacks(client)
            assert _exact(rows) == _exact(_rows(client.query(path, args))), ("diffs", path, args)
    finally:
        for handle in handles:
            handle.remove()
        for sub in subs:
            sub.close()


def _wait_for_callbacks(client: Client) -> None:
    """Return once the callbacks queued so far ran (the callback thread runs them in order)."""
    client._dispatcher.submit(lambda: None).result(timeout=30)


def _ids(value: Any) -> list[Any]:
    return [row["_id"] for row in value]


def test_a_returned_query_is_maintained_not_rerun(views_client: Client) -> None:
    client = views_client
    ts = _commit(
        client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": i}} for i in range(5)]
    )
    sub = client.subscribe("views:everything", {})
    first = sub.value
    assert isinstance(first, RowsSnapshot)  # a view's value, not a re-run's list
    live = next(iter(client.backend.subscriptions._queries.values()))
    assert live.view is not None
    ts = _commit(client, [{"kind": "patch", "which": 0, "doc": {"x": 100}}])
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    result = sub.result()
    assert result.ts == ts
    assert result.diff is not None and result.diff.updated and not result.diff.inserted
    assert [row["x"] for row in result.value] == [100, 1, 2, 3, 4]
    # The earlier value is an immutable snapshot: later commits never change it.
    assert [row["x"] for row in first] == [0, 1, 2, 3, 4]
    sub.close()


def test_a_commit_that_does_not_change_the_view_delivers_nothing(views_client: Client) -> None:
    client = views_client
    _commit(client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": 2}}])
    sub = client.subscribe("views:group_range", {"g": "a"})
    before = sub.result()
    # Into its index range but filtered out, and into another group: no change to the value.
    ts = _commit(
        client,
        [
            {"kind": "insert", "doc": {"g": "a", "tag": "skip", "x": 3}},
            {"kind": "insert", "doc": {"g": "b", "tag": "keep", "x": 3}},
        ],
    )
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    assert sub.result() is before
    sub.close()


def test_a_top_k_view_refills_after_deletes(views_client: Client) -> None:
    client = views_client
    _commit(
        client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": i}} for i in range(6)]
    )
    sub = client.subscribe("views:top", {"k": 3, "desc": False})
    assert [row["x"] for row in sub.value] == [0, 1, 2]
    for _ in range(2):  # delete the first two documents (ids of the first-inserted first)
        ts = _commit(client, [{"kind": "delete", "which": 0, "doc": {}}])
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    assert [row["x"] for row in sub.value] == [2, 3, 4]
    sub.close()


def test_a_function_whose_prelude_changes_runs_again(views_client: Client) -> None:
    client = views_client
    _commit(
        client,
        [
            {"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": 1}},
            {"kind": "insert", "doc": {"g": "b", "tag": "keep", "x": 2}},
        ],
    )
    sub = client.subscribe("views:keyed_by_prelude", {})
    assert [row["g"] for row in sub.value] == ["a"]
    ts = _commit(client, [{"kind": "config", "which": 0, "doc": {"g": "b"}}])
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    assert [row["g"] for row in sub.value] == ["b"]
    sub.close()


def test_a_non_incremental_subscription_delivers_diffs_replacing_everything(
    views_client: Client,
) -> None:
    client = views_client

    @query
    def consumed(ctx: Any) -> Any:
        return ctx.db.query("docs").collect()

    client.backend.register("views:consumed", consumed)
    _commit(client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": 1}}])
    sub = client.subscribe("views:consumed", {})
    diffs: list[ResultDiff] = []
    sub.on_diff(diffs.append)
    sub.value
    ts = _commit(client, [{"kind": "insert", "doc": {"g": "b", "tag": "keep", "x": 2}}])
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    _wait_for_callbacks(client)
    assert [(d.removed, len(d.inserted), d.base_ts) for d in diffs] == [
        ((), 1, None),
        ((0,), 2, None),
    ]
    sub.close()


def test_describe_functions_says_which_live_queries_are_incremental(views_client: Client) -> None:
    client = views_client

    @query
    def consumed(ctx: Any) -> Any:
        return ctx.db.query("docs").collect()

    client.backend.register("views:consumed", consumed)
    live = {f["path"]: f["live"] for f in client.describe_functions()}
    assert live["views:everything"] is None  # nobody subscribes
    subs = [client.subscribe("views:everything", {}), client.subscribe("views:consumed", {})]
    for sub in subs:
        sub.value
    live = {f["path"]: f["live"] for f in client.describe_functions()}
    assert live["views:everything"] == "incremental"
    assert live["views:consumed"] == "re-run"
    assert client.function_info("views:everything")["live"] == "incremental"
    for sub in subs:
        sub.close()


def test_a_redefined_function_replaces_its_view(views_client: Client) -> None:
    client = views_client
    _commit(client, [{"kind": "insert", "doc": {"g": g, "tag": "keep", "x": 1}} for g in "ab"])
    sub = client.subscribe("views:everything", {})
    assert len(sub.value) == 2

    @query
    def only_b(ctx: Any) -> Any:
        return ctx.db.query("docs").filter(lambda q: q.eq(q.field("g"), "b"))

    client.backend.register("views:everything", only_b)
    wait_for(lambda: [row["g"] for row in sub.value] == ["b"], timeout=30)
    ts = _commit(client, [{"kind": "insert", "doc": {"g": "b", "tag": "keep", "x": 2}}])
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    assert [row["x"] for row in sub.value] == [1, 2]
    sub.close()


def test_views_stay_exact_under_concurrent_writers(views_client: Client) -> None:
    """Subscriptions start (and the prelude-dependent one is rebuilt) while 4 threads write:
    the commits that land during a view's first run must be applied to it too."""
    client = views_client
    last_ts: list[int] = []
    started = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(60):
            kinds = ["insert", "insert", "patch", "unset", "delete", "config"]
            batch = [
                {
                    "kind": rng.choice(kinds),
                    "which": rng.randrange(50),
                    "doc": {
                        "g": rng.choice("ab"),
                        "tag": rng.choice(["keep", "skip"]),
                        "x": rng.randrange(-3, 4),
                    },
                }
                for _ in range(rng.randrange(1, 4))
            ]
            last_ts.append(_commit(client, batch))
            if i == 5:
                started.set()

    with cpu_load():
        threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        assert started.wait(60)
        subs = [client.subscribe(path, args) for path, args in SUBSCRIPTIONS]
        replayed: list[list[Any]] = [[] for _ in subs]
        for rows, sub in zip(replayed, subs, strict=True):
            sub.on_diff(lambda diff, rows=rows: diff.apply_to(rows))
        for thread in threads:
            thread.join(timeout=120)
    assert client.backend.subscriptions.wait_processed(max(last_ts), timeout=60)
    _wait_for_callbacks(client)
    for (path, args), sub, rows in zip(SUBSCRIPTIONS, subs, replayed, strict=True):
        fresh = client.query(path, args)
        assert _exact(sub.value) == _exact(fresh), (path, args)
        assert _exact(rows) == _exact(_rows(fresh)), ("diffs", path, args)
        sub.close()


def test_building_a_view_is_not_held_to_the_function_time_limit(views_client: Client) -> None:
    """The scan that builds a view is the engine's work, done once: a served store's time
    limit (here 20 ms) stops the consumed twin of the same query but not the view."""
    client = views_client

    @query
    def consumed(ctx: Any) -> Any:
        return ctx.db.query("docs").filter(lambda q: q.neq(q.field("tag"), "skip")).collect()

    @query
    def returned(ctx: Any) -> Any:
        return ctx.db.query("docs").filter(lambda q: q.neq(q.field("tag"), "skip"))

    client.backend.register("views:consumed", consumed)
    client.backend.register("views:returned", returned)
    doc = {"g": "a", "tag": "keep", "x": 1}
    for _ in range(4):
        _commit(client, [{"kind": "insert", "which": 0, "doc": doc}] * 5000)
    results: dict[str, Any] = {}
    for path in ("views:consumed", "views:returned"):
        done = threading.Event()

        def on_update(result: Any, path: str = path, done: threading.Event = done) -> None:
            results[path] = result
            done.set()

        unsubscribe = client.backend.subscribe(path, {}, None, on_update, time_limit=0.02)
        assert done.wait(60)
        unsubscribe()
    assert type(results["views:consumed"].error).__name__ == "FunctionTimeout"
    assert results["views:returned"].error is None
    assert len(results["views:returned"].value) == 20000


@query
def order_by_prelude(ctx: Any) -> Any:
    # The order depends on a document read first: a commit into it flips the order.
    config = ctx.db.query("config").first()
    desc = config is not None and config["g"] == "b"
    return ctx.db.query("docs").with_index("by_gx").order("desc" if desc else "asc")


FUNCTIONS["views:order_by_prelude"] = order_by_prelude
SUBSCRIPTIONS.append(("views:order_by_prelude", {}))


def test_a_rebuild_that_flips_the_order_is_delivered(views_client: Client) -> None:
    """The same rows in another order: positions of changed rows cannot say it, the whole
    value replaces the previous one (review finding 1)."""
    client = views_client
    _commit(
        client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": i}} for i in range(3)]
    )
    sub = client.subscribe("views:order_by_prelude", {})
    rows: list[Any] = []
    sub.on_diff(lambda diff: diff.apply_to(rows))
    assert [row["x"] for row in sub.value] == [0, 1, 2]
    ts = _commit(client, [{"kind": "config", "which": 0, "doc": {"g": "b"}}])
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    assert [row["x"] for row in sub.value] == [2, 1, 0]
    ts = _commit(client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": 3}}])
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    _wait_for_callbacks(client)
    assert [row["x"] for row in rows] == [row["x"] for row in sub.value] == [3, 2, 1, 0]
    sub.close()


def test_a_commit_dispatched_after_the_view_saw_it_is_not_applied_twice(
    views_client: Client,
) -> None:
    """A commit is stored (snapshots see it) a moment before its listeners run: a view built
    in between must not count it again when it is dispatched (review finding 2)."""
    client = views_client
    store, manager = client.backend.store, client.backend.subscriptions
    _commit(client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": 1}}])
    index = store._listeners.index(manager._on_commit)
    stored, release = threading.Event(), threading.Event()

    def late(commit: Any) -> None:  # the committer is descheduled before publishing
        stored.set()
        assert release.wait(30)
        manager._on_commit(commit)

    store._listeners[index] = late
    writer = threading.Thread(
        target=_commit, args=(client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep"}}])
    )
    writer.start()
    try:
        assert stored.wait(30)
        store._listeners[index] = manager._on_commit  # later commits publish at once
        result: list[Any] = []
        done = threading.Event()
        client.backend.subscribe(
            "views:overall", {}, None, lambda r: (result.append(r), done.set())
        )
        assert done.wait(30) and result[0].value["n"] == 2  # built on a snapshot with it
    finally:
        release.set()
        writer.join(30)
    ts = _commit(client, [{"kind": "insert", "doc": {"g": "b", "tag": "keep", "x": 2}}])
    assert manager.wait_processed(ts, timeout=30)
    assert result[-1].value["n"] == client.query("views:overall", {})["n"] == 3


def test_an_interrupted_round_builds_the_view_again(
    views_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the notebook's thread runs a view's round (mutation() waits for its
    subscriptions) must not lose the commits the round had taken (review finding 3)."""
    client = views_client
    sub = client.subscribe("views:everything", {})
    assert len(sub.value) == 0
    original = QueryView.apply
    fired: list[bool] = []

    def interrupted(self: QueryView, old: Any, new: Any) -> None:
        if not fired and threading.current_thread() is threading.main_thread():
            fired.append(True)
            raise KeyboardInterrupt
        original(self, old, new)

    monkeypatch.setattr(QueryView, "apply", interrupted)
    for i in range(200):
        if fired:
            break
        with contextlib.suppress(KeyboardInterrupt):
            client.mutation(
                "views:apply_ops",
                {"ops": [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": i}}]},
            )
    assert fired, "no round ran on the main thread"
    ts = _commit(client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": 1000}}])
    assert client.backend.subscriptions.wait_processed(ts, timeout=30)
    assert _exact(sub.value) == _exact(client.query("views:everything", {}))
    sub.close()


def test_diffs_after_a_restart_replace_the_rows_on_diff_consumers_hold(
    views_client: Client,
) -> None:
    """`client.clear_auth()` / `set_auth()` restart subscriptions: the next diff replaces
    the rows the consumer holds, it does not add to them (review finding 6)."""
    client = views_client
    _commit(
        client, [{"kind": "insert", "doc": {"g": "a", "tag": "keep", "x": i}} for i in range(3)]
    )
    sub = client.subscribe("views:everything", {})
    rows: list[Any] = []
    sub.on_diff(lambda diff: diff.apply_to(rows))
    assert len(sub.value) == 3
    client.clear_auth()
    assert len(sub.value) == 3
    _wait_for_callbacks(client)
    assert _exact(rows) == _exact(sub.value)
    sub.close()

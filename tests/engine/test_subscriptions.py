"""Live queries: only affected subscriptions re-run, identical ones share a run, unchanged
results are not delivered, errors are results too."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

import kernel_ext
from kernel_ext import ConvexError, mutation, query, v


@pytest.fixture
def counted(store_url):
    """A client with `c:indexed` (counting runs per key), `c:failing`, `c:put`, `c:set_n`."""
    client = kernel_ext.connect(store_url)
    runs: Counter[str] = Counter()

    @query(args={"key": v.string()})
    def indexed(ctx, key):
        runs["indexed:" + key] += 1
        return [
            d["n"] for d in ctx.db.query("items").with_index("by_key", lambda q: q.eq("key", key))
        ]

    @query(args={"key": v.string()})
    def failing(ctx, key):
        doc = ctx.db.query("items").with_index("by_key", lambda q: q.eq("key", key)).first()
        if doc is None:
            raise ConvexError({"missing": key})
        return doc["n"]

    @mutation(args={"key": v.string(), "n": v.int64()})
    def put(ctx, key, n):
        return ctx.db.insert("items", {"key": key, "n": n})

    @mutation(args={"id": v.id("items"), "n": v.int64()})
    def set_n(ctx, id, n):
        ctx.db.patch(id, {"n": n})

    client.backend.store.set_schema(
        kernel_ext.define_schema(
            {
                "items": kernel_ext.define_table({"key": v.string(), "n": v.int64()}).index(
                    "by_key", ["key"]
                )
            }
        )
    )
    for name, fn in dict(indexed=indexed, failing=failing, put=put, set_n=set_n).items():
        client.backend.register(f"c:{name}", fn)
    yield client, runs
    client.close()


def test_only_subscriptions_whose_range_was_written_rerun(counted):
    client, runs = counted
    subs = {k: client.subscribe("c:indexed", key=k) for k in ("a", "b", "c")}
    for sub in subs.values():
        assert sub.value == []
    before = runs.copy()
    client.mutation("c:put", key="b", n=1)
    assert subs["b"].value == [1]
    assert runs["indexed:b"] == before["indexed:b"] + 1
    assert runs["indexed:a"] == before["indexed:a"]
    assert runs["indexed:c"] == before["indexed:c"]


def test_identical_subscriptions_share_one_execution(counted):
    client, runs = counted
    first = client.subscribe("c:indexed", key="k")
    second = client.subscribe("c:indexed", {"key": "k"})
    assert first.value == second.value == []
    assert runs["indexed:k"] == 1
    client.mutation("c:put", key="k", n=5)
    assert first.value == second.value == [5]
    assert runs["indexed:k"] == 2


def test_unchanged_result_is_not_delivered(counted):
    client, _ = counted
    doc_id = client.mutation("c:put", key="x", n=1)
    sub = client.subscribe("c:indexed", key="x")
    assert sub.value == [1]
    calls = []
    sub.on_change(calls.append)
    client.mutation("c:set_n", id=doc_id, n=1)  # a no-op patch: nothing written
    client.mutation("c:put", key="y", n=1)  # another key: not in the range
    changed = threading.Event()
    sub.on_change(lambda value: changed.set())
    client.mutation("c:set_n", id=doc_id, n=2)
    assert changed.wait(5)
    assert calls == [[2]]


def test_error_is_a_result_and_recovers(counted):
    client, _ = counted
    sub = client.subscribe("c:failing", key="z")
    with pytest.raises(ConvexError) as info:
        sub.value
    assert info.value.data == {"missing": "z"}
    assert isinstance(sub.error, ConvexError)
    client.mutation("c:put", key="z", n=7)
    assert sub.value == 7
    assert sub.error is None


def test_iteration_yields_current_then_each_new_value(counted):
    client, _ = counted
    sub = client.subscribe("c:indexed", key="it")
    got = []
    ready = threading.Event()

    def consume():
        for value in sub:
            got.append(value)
            ready.set()
            if len(got) == 3:
                return

    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(5)
    client.mutation("c:put", key="it", n=1)
    client.mutation("c:put", key="it", n=2)
    thread.join(5)
    assert got == [[], [1], [1, 2]]


def test_closed_subscription_stops_updating(counted):
    client, runs = counted
    sub = client.subscribe("c:indexed", key="q")
    assert sub.value == []
    sub.close()
    sub.close()  # idempotent
    client.mutation("c:put", key="q", n=1)
    assert runs["indexed:q"] == 1
    assert len(client.backend.subscriptions) == 0


def test_schema_change_reruns_everything(counted):
    client, runs = counted
    sub = client.subscribe("c:indexed", key="s")
    assert sub.value == []
    before = runs["indexed:s"]
    client.backend.store.set_schema(client.backend.store.schema)
    client.mutation("c:put", key="unrelated", n=1)
    assert runs["indexed:s"] == before + 1


def test_redefining_a_function_reruns_its_subscriptions(counted):
    client, _ = counted
    sub = client.subscribe("c:indexed", key="r")
    assert sub.value == []
    changed = threading.Event()
    sub.on_change(lambda value: changed.set())

    @query(args={"key": v.string()})
    def indexed(ctx, key):
        return ["redefined", key]

    client.backend.register("c:indexed", indexed)
    assert changed.wait(5)
    assert sub.value == ["redefined", "r"]

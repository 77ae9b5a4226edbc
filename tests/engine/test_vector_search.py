"""Vector search on every backend: `ctx.vector_search` in actions, `with_vector_index` in
queries (reactive), scores against numpy, limits, filters, unindexed documents, writes,
snapshot consistency."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import kernel_ext
from kernel_ext import action, define_schema, define_table, mutation, query, v
from kernel_ext.errors import QueryError
from kernel_ext.store.vector_query import vector_search

DIMS = 8
RUNS: Counter[str] = Counter()

SCHEMA = define_schema(
    {
        "items": define_table(
            {"tag": v.string(), "emb": v.any(), "note": v.optional(v.string())}
        ).vector_index("by_emb", vector_field="emb", dimensions=DIMS, filter_fields=["tag"]),
        "other": define_table({"x": v.float64()}),
    }
)


def _opts(vector: list[float], limit: int | None, tags: list[str] | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"vector": vector}
    if limit is not None:
        opts["limit"] = limit
    if tags is not None:
        opts["filter"] = lambda q: q.or_(*[q.eq("tag", t) for t in tags])
    return opts


@mutation
def add(ctx, tag, emb):
    return ctx.db.insert("items", {"tag": tag, "emb": emb})


@mutation
def change(ctx, id, fields):
    ctx.db.patch(id, fields)


@mutation
def remove(ctx, id):
    ctx.db.delete(id)


@mutation
def add_other(ctx, x):
    return ctx.db.insert("other", {"x": x})


@mutation
def add_and_search(ctx, tag, emb):
    new = ctx.db.insert("items", {"tag": tag, "emb": emb})
    found = ctx.db.query("items").with_vector_index("by_emb", {"vector": emb, "limit": 1})
    return [new, [d["_id"] for d in found]]


@action
def search(ctx, vector, limit=None, tags=None):
    return ctx.vector_search("items", "by_emb", _opts(vector, limit, tags))


@query
def near(ctx, vector, limit=None, tags=None):
    RUNS[str(tags)] += 1
    return ctx.db.query("items").with_vector_index("by_emb", _opts(vector, limit, tags)).collect()


@query
def consumers(ctx, vector):
    q = ctx.db.query("items").with_vector_index("by_emb", {"vector": vector, "limit": 4})
    return {
        "take": [d["_id"] for d in q.take(2)],
        "iter": [d["_id"] for d in q],
        "first": q.first()["_id"],
    }


@query
def ordered(ctx, vector):
    q = ctx.db.query("items").with_vector_index("by_emb", {"vector": vector})
    return q.order("desc").collect()


FUNCTIONS = {
    "add": add,
    "change": change,
    "remove": remove,
    "add_other": add_other,
    "add_and_search": add_and_search,
    "search": search,
    "near": near,
    "consumers": consumers,
    "ordered": ordered,
}


@pytest.fixture
def client(store_url: str) -> Iterator[kernel_ext.Client]:
    c = kernel_ext.connect(store_url)
    c.set_schema(SCHEMA)
    for name, fn in FUNCTIONS.items():
        c.register(f"vec:{name}", fn)
    yield c
    c.close()


def _fill(client: kernel_ext.Client, n: int = 40, seed: int = 1) -> dict[str, tuple[str, Any]]:
    """n indexed documents (tags a, b, c) plus three that are stored but not indexed."""
    rng = np.random.default_rng(seed)
    docs: dict[str, tuple[str, Any]] = {}
    for i in range(n):
        tag, emb = "abc"[i % 3], rng.normal(size=DIMS).tolist()
        docs[client.mutation("vec:add", {"tag": tag, "emb": emb})] = (tag, emb)
    for emb in ([1.0] * (DIMS - 1), ["x"] * DIMS, "not a vector"):
        client.mutation("vec:add", {"tag": "a", "emb": emb})
    return docs


def _expected(docs, vector, limit=10, tags=None) -> list[tuple[str, float]]:
    ids = [i for i, (tag, _) in docs.items() if tags is None or tag in tags]
    m = np.array([docs[i][1] for i in ids], dtype=np.float64)
    q = np.asarray(vector, dtype=np.float64)
    scores = m @ q / np.linalg.norm(m, axis=1) / np.linalg.norm(q)
    order = np.argsort(-scores)[:limit]
    return [(ids[i], float(scores[i])) for i in order]


def _check(found: list[dict[str, Any]], expected: list[tuple[str, float]]) -> None:
    assert [r["_id"] for r in found] == [i for i, _ in expected]
    for r, (_, score) in zip(found, expected, strict=True):
        assert r["_score"] == pytest.approx(score, rel=1e-12, abs=1e-12)


def test_action_results_are_numpys_cosine_ranking(client):
    docs = _fill(client)
    rng = np.random.default_rng(2)
    for _ in range(3):
        vector = rng.normal(size=DIMS).tolist()
        _check(client.action("vec:search", {"vector": vector}), _expected(docs, vector))
        _check(
            client.action("vec:search", {"vector": vector, "limit": 256}),
            _expected(docs, vector, 256),
        )
        _check(
            client.action("vec:search", {"vector": vector, "limit": 5, "tags": ["b"]}),
            _expected(docs, vector, 5, {"b"}),
        )
        _check(
            client.action("vec:search", {"vector": vector, "limit": 7, "tags": ["a", "c"]}),
            _expected(docs, vector, 7, {"a", "c"}),
        )
    assert client.action("vec:search", {"vector": [1.0] * DIMS, "tags": ["zzz"]}) == []


def test_bad_requests_are_clear_errors(client):
    _fill(client, n=3)
    vector = [1.0] * DIMS
    for limit in (0, 257):
        with pytest.raises(QueryError, match="between 1 and 256"):
            client.action("vec:search", {"vector": vector, "limit": limit})
    with pytest.raises(QueryError, match="has 3 dimensions, the index has 8"):
        client.action("vec:search", {"vector": [1.0, 2.0, 3.0]})
    with pytest.raises(QueryError, match="has 3 dimensions"):
        client.query("vec:near", {"vector": [1.0, 2.0, 3.0]})
    with pytest.raises(QueryError, match="order"):
        client.query("vec:ordered", {"vector": vector})


def test_writes_are_reflected_updates_deletes_and_leaving_the_index(client):
    docs = _fill(client)
    vector = np.random.default_rng(3).normal(size=DIMS).tolist()
    best = _expected(docs, vector)[0][0]
    client.mutation("vec:remove", {"id": best})
    del docs[best]
    _check(client.action("vec:search", {"vector": vector}), _expected(docs, vector))
    second = _expected(docs, vector)[0][0]
    client.mutation("vec:change", {"id": second, "fields": {"emb": [1.0, 2.0]}})  # unindexed
    del docs[second]
    _check(client.action("vec:search", {"vector": vector}), _expected(docs, vector))
    last = _expected(docs, vector, 100)[-1][0]
    client.mutation("vec:change", {"id": last, "fields": {"emb": vector}})  # now the best
    docs[last] = (docs[last][0], vector)
    _check(client.action("vec:search", {"vector": vector}), _expected(docs, vector))
    assert client.action("vec:search", {"vector": vector})[0]["_score"] == pytest.approx(1.0)
    client.mutation("vec:change", {"id": last, "fields": {"tag": "z"}})
    docs[last] = ("z", vector)
    _check(
        client.action("vec:search", {"vector": vector, "tags": ["z", "a"]}),
        _expected(docs, vector, tags={"z", "a"}),
    )


def test_queries_consume_vector_results_like_any_query(client):
    docs = _fill(client)
    vector = np.random.default_rng(4).normal(size=DIMS).tolist()
    expected = _expected(docs, vector, 4)
    found = client.query("vec:near", {"vector": vector, "limit": 4})
    assert [d["_id"] for d in found] == [i for i, _ in expected]
    assert all(d["emb"] == docs[d["_id"]][1] for d in found)  # whole documents
    shapes = client.query("vec:consumers", {"vector": vector})
    assert shapes == {
        "take": [i for i, _ in expected[:2]],
        "iter": [i for i, _ in expected],
        "first": expected[0][0],
    }


def test_a_mutation_searches_its_own_writes(client):
    _fill(client)
    vector = [0.5] * DIMS
    new, found = client.mutation("vec:add_and_search", {"tag": "c", "emb": vector})
    assert found == [new]


def _search_at(store, snapshot, vector, limit=5):
    hits, _, _ = store.read(
        lambda txn: vector_search(txn, "items", "by_emb", {"vector": vector, "limit": limit}),
        snapshot,
    )
    return [{"_id": d["_id"], "_score": s} for d, s in hits]


@pytest.mark.parametrize("built_before", [True, False])
def test_a_search_sees_its_snapshot_not_later_commits(client, built_before):
    docs = _fill(client)
    store = client.backend.store
    vector = np.random.default_rng(5).normal(size=DIMS).tolist()
    before = _expected(docs, vector, 5)
    if built_before:  # the index exists, and will be ahead of the snapshot
        _check(_search_at(store, None, vector), before)
    snap = store.snapshot()
    try:
        client.mutation("vec:remove", {"id": before[0][0]})
        client.mutation(
            "vec:change", {"id": before[1][0], "fields": {"tag": "c", "emb": [0.0] * DIMS}}
        )
        client.mutation("vec:add", {"tag": "a", "emb": vector})
        for i, _ in _expected(docs, vector, 40)[20:]:  # the others come closer
            client.mutation("vec:change", {"id": i, "fields": {"emb": vector}})
        _check(_search_at(store, snap, vector), before)
    finally:
        store.close_snapshot(snap)
    now = _search_at(store, None, vector)
    assert now[0]["_score"] == pytest.approx(1.0) and len(now) == 5


def _ts(client) -> int:
    return client.backend.store.ts


def test_a_live_vector_query_reruns_only_for_writes_that_can_change_it(client):
    docs = _fill(client)
    rng = np.random.default_rng(6)
    vector = rng.normal(size=DIMS).tolist()
    args = {"vector": vector, "limit": 3, "tags": ["a"]}
    subscriptions = client.backend.subscriptions
    sub = client.subscribe("vec:near", args)
    try:
        top = [d["_id"] for d in sub.value]
        assert top == [i for i, _ in _expected(docs, vector, 3, {"a"})]
        outside = next(i for i, (tag, _) in docs.items() if tag == "a" and i not in top)
        other_tag = next(i for i, (tag, _) in docs.items() if tag == "b")
        runs = RUNS["['a']"]
        for name, call in [
            ("another table", ("vec:add_other", {"x": 1.0})),
            ("another tag", ("vec:add", {"tag": "b", "emb": vector})),
            ("an unindexed document", ("vec:add", {"tag": "a", "emb": [1.0]})),
            (
                "a note outside the results",
                ("vec:change", {"id": outside, "fields": {"note": "n"}}),
            ),
            (
                "a vector of another tag",
                ("vec:change", {"id": other_tag, "fields": {"emb": vector}}),
            ),
        ]:
            client.mutation(*call)
            assert subscriptions.wait_processed(_ts(client), timeout=30)
            assert RUNS["['a']"] == runs, name
        for name, call in [
            ("a note of a result", ("vec:change", {"id": top[1], "fields": {"note": "n"}})),
            ("a vector of the tag", ("vec:change", {"id": outside, "fields": {"emb": vector}})),
            ("a document of the tag", ("vec:add", {"tag": "a", "emb": vector})),
            ("a result leaves the tag", ("vec:change", {"id": top[0], "fields": {"tag": "b"}})),
        ]:
            client.mutation(*call)
            assert subscriptions.wait_processed(_ts(client), timeout=30)
            assert RUNS["['a']"] > runs, name
            runs = RUNS["['a']"]
        assert sub.value[0]["_id"] == outside or sub.value[0]["emb"] == vector
        assert top[0] not in [d["_id"] for d in sub.value]
        assert all(d["tag"] == "a" for d in sub.value)
    finally:
        sub.close()


def test_two_stores_on_one_postgresql_database_keep_their_indexes_current(pg_url):
    """Each store builds its own index and follows the other's commits (replayed from the
    commit log): searches and live vector queries see the other's writes."""
    from polling import wait_for

    first, second = kernel_ext.connect(pg_url), kernel_ext.connect(pg_url)
    try:
        first.set_schema(SCHEMA)
        for c in (first, second):
            for name, fn in FUNCTIONS.items():
                c.register(f"vec:{name}", fn)
        docs = _fill(first, n=30)
        vector = np.random.default_rng(8).normal(size=DIMS).tolist()
        _check(second.action("vec:search", {"vector": vector}), _expected(docs, vector))
        sub = second.subscribe("vec:near", {"vector": vector, "limit": 3})
        try:
            assert [d["_id"] for d in sub.value] == [i for i, _ in _expected(docs, vector, 3)]
            new = first.mutation("vec:add", {"tag": "a", "emb": vector})
            docs[new] = ("a", vector)
            wait_for(lambda: sub.value[0]["_id"] == new, timeout=30)
            best = _expected(docs, vector, 2)[1][0]
            first.mutation("vec:remove", {"id": best})
            del docs[best]
            wait_for(lambda: best not in [d["_id"] for d in sub.value], timeout=30)
            _check(second.action("vec:search", {"vector": vector}), _expected(docs, vector))
            _check(first.action("vec:search", {"vector": vector}), _expected(docs, vector))
            # Answered from the second store's own index, kept by the replayed commits (not
            # from a scan of the table, which would give the same answer).
            (index,) = second.backend.store.vectors._indexes.values()
            assert not index.building and not index.dropped
            assert new in index.matrix and best not in index.matrix
            assert len(index.matrix) == len(docs)
        finally:
            sub.close()
    finally:
        second.close()
        first.close()

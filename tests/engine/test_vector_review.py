"""Vector search review: exact results against a float64 numpy reference where float32
candidates or extreme magnitudes could mislead the index, on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, query, v
from kernel_ext.errors import QueryError
from kernel_ext.store.vector_query import vector_search

DIMS = 8

SCHEMA = define_schema(
    {
        "items": define_table(
            {"tag": v.optional(v.any()), "emb": v.any(), "note": v.optional(v.any())}
        ).vector_index("by_emb", vector_field="emb", dimensions=DIMS, filter_fields=["tag"]),
    }
)


@mutation
def add_many(ctx, docs):
    return [ctx.db.insert("items", d) for d in docs]


@mutation
def change(ctx, id, fields):
    ctx.db.patch(id, fields)


@mutation
def remove(ctx, id):
    ctx.db.delete(id)


@query
def near(ctx, vector, limit, tags=None):
    opts: dict[str, Any] = {"vector": vector, "limit": limit}
    if tags is not None:
        opts["filter"] = lambda q: q.or_(*[q.eq("tag", t) for t in tags])
    found = ctx.db.query("items").with_vector_index("by_emb", opts).collect()
    return [[d["_id"], d.get("tag"), d["emb"]] for d in found]


FUNCTIONS = {"add_many": add_many, "change": change, "remove": remove, "near": near}


@pytest.fixture
def client(store_url: str) -> Iterator[kernel_ext.Client]:
    c = kernel_ext.connect(store_url)
    c.set_schema(SCHEMA)
    for name, fn in FUNCTIONS.items():
        c.register(f"rev:{name}", fn)
    yield c
    c.close()


def _search(client: kernel_ext.Client, opts: dict[str, Any], snapshot: Any = None) -> list[Any]:
    hits, _, _ = client.backend.store.read(
        lambda txn: vector_search(txn, "items", "by_emb", opts), snapshot
    )
    return [(d["_id"], s) for d, s in hits]


def _reference(
    docs: dict[str, list[float]], vector: list[float], limit: int
) -> list[tuple[str, float]]:
    """numpy's float64 cosine ranking (ties never happen in these tests' data)."""
    ids = list(docs)
    m = np.array([docs[i] for i in ids], dtype=np.float64)
    q = np.asarray(vector, dtype=np.float64)
    scores = (m @ q) / np.linalg.norm(m, axis=1) / np.linalg.norm(q)
    order = np.argsort(-scores, kind="stable")[:limit]
    return [(ids[i], float(scores[i])) for i in order]


def test_near_duplicates_rank_by_their_exact_scores_not_float32_noise(client):
    """300 vectors within 1e-6 of each other: their float32 scores in the index are noise,
    yet the results must be the float64 top (the index hands out every row within its
    float32 error of the k-th, not a fixed few more)."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=DIMS)
    embs = [(base + rng.normal(size=DIMS) * 1e-6).tolist() for _ in range(300)]
    ids = client.mutation("rev:add_many", {"docs": [{"tag": "b", "emb": e} for e in embs]})
    docs = dict(zip(ids, embs, strict=True))
    for _ in range(5):
        vector = (base + rng.normal(size=DIMS) * 1e-6).tolist()
        for opts in (
            {"vector": vector, "limit": 3},
            {"vector": vector, "limit": 3, "filter": lambda q: q.eq("tag", "b")},
        ):
            found = _search(client, opts)
            assert [i for i, _ in found] == [i for i, _ in _reference(docs, vector, 3)]


def test_huge_and_tiny_vectors_score_their_cosine(client):
    """Finite vectors whose norms overflow (1e200) or whose norms' product underflows
    (1e-200) are indexed; they score their true cosine (no NaN, no 0 for parallel vectors)
    and rank by it."""
    rng = np.random.default_rng(2)
    direction = rng.normal(size=DIMS)
    others = [rng.normal(size=DIMS).tolist() for _ in range(40)]
    huge = (direction * 1e200).tolist()
    tiny = (direction * 1e-200).tolist()
    ids = client.mutation("rev:add_many", {"docs": [{"emb": e} for e in [*others, huge, tiny]]})
    for vector in (huge, tiny, direction.tolist()):
        found = _search(client, {"vector": vector, "limit": 2})
        assert {i for i, _ in found} == {ids[-2], ids[-1]}
        assert [s for _, s in found] == pytest.approx([1.0, 1.0], abs=1e-12)
    found = _search(client, {"vector": (-direction * 1e200).tolist(), "limit": 50})
    scores = [s for _, s in found]
    assert all(np.isfinite(scores)) and scores[-2:] == pytest.approx([-1.0, -1.0])


def _documents_at(client: kernel_ext.Client, snapshot: Any) -> list[dict[str, Any]]:
    docs, _, _ = client.backend.store.read(lambda txn: list(txn.query("items").collect()), snapshot)
    return docs


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """Convex equality of the scalars these tests use as tags (1 and 1.0 differ)."""
    return type(a) is type(b) and a == b


def _brute_force(
    docs: list[dict[str, Any]], vector: list[float], limit: int, tags: list[Any] | None
) -> list[tuple[str, float]]:
    """numpy over every document in the index that passes the filter: `[(id, score)]`, best
    first, ties newest first then by id (equal vectors give bit-equal scores)."""
    kept = [
        d
        for d in docs
        if type(d["emb"]) is list
        and len(d["emb"]) == DIMS
        and all(type(x) in (int, float) and np.isfinite(x) for x in d["emb"])
        and (tags is None or any(_same(t, d.get("tag", _MISSING)) for t in tags))
    ]
    if not kept:
        return []
    m = np.array([d["emb"] for d in kept], dtype=np.float64)
    q = np.asarray(vector, dtype=np.float64)
    norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
    scores = np.where(norms > 0, (m @ q) / np.where(norms > 0, norms, 1), 0.0)
    order = sorted(
        range(len(kept)), key=lambda i: (-scores[i], -kept[i]["_creationTime"], kept[i]["_id"])
    )
    return [(kept[i]["_id"], float(scores[i])) for i in order[:limit]]


_COMPONENTS = [-1, 0, 1, 2, 0.5, -2.0]


def _random_vector(rng: np.random.Generator) -> Any:
    """Mostly small-integer vectors (exact ties, parallel duplicates); sometimes ints, a
    wrong length, a non-number, NaN or infinity (stored, not indexed)."""
    kind = rng.integers(10)
    vector: list[Any] = [float(rng.choice(_COMPONENTS)) for _ in range(DIMS)]
    if kind == 0:
        return [int(x) for x in vector]
    if kind == 1:
        return vector[:-1]
    if kind == 2:
        return [*vector[:-1], "x"]
    if kind == 3:
        return [*vector[:-1], float(rng.choice([np.nan, np.inf]))]
    return vector


@pytest.mark.parametrize("log_size", [50_000, 3])
def test_random_writes_searched_at_held_snapshots_match_brute_force(client, monkeypatch, log_size):
    """Inserts, patches (vector, tag, to and from unindexed vectors, tag removed) and
    deletes, with snapshots held along the way: each search at each snapshot (index ahead
    of it, log of written ids long or pruned) equals numpy over the documents at that
    snapshot; with and without OR filters, including null and missing tags."""
    from kernel_ext.engine import vector_index

    monkeypatch.setattr(vector_index, "MAX_LOGGED_IDS", log_size)
    store = client.backend.store
    rng = np.random.default_rng(7)
    tags: list[Any] = ["a", "b", None, 1, 1.0]
    ids: list[str] = []
    held: list[Any] = []
    try:
        for step in range(120):
            op = rng.integers(6)
            if op <= 1 or len(ids) < 5:
                doc: dict[str, Any] = {"emb": _random_vector(rng)}
                if rng.integers(5):
                    doc["tag"] = tags[rng.integers(len(tags))]
                ids.extend(client.mutation("rev:add_many", {"docs": [doc]}))
            elif op == 2:
                target = ids[rng.integers(len(ids))]
                client.mutation(
                    "rev:change", {"id": target, "fields": {"emb": _random_vector(rng)}}
                )
            elif op == 3:
                target = ids[rng.integers(len(ids))]
                client.mutation(
                    "rev:change", {"id": target, "fields": {"tag": tags[rng.integers(len(tags))]}}
                )
            elif op == 4:
                client.mutation("rev:remove", {"id": ids.pop(rng.integers(len(ids)))})
            else:
                vector = [float(x) for x in rng.choice(_COMPONENTS, DIMS)]
                _search(client, {"vector": vector, "limit": 4})  # builds/uses the index
            if step % 15 == 7:
                held.append(store.snapshot())
                if len(held) > 3:
                    store.close_snapshot(held.pop(0))
        for snapshot in [*held, None]:
            docs = _documents_at(client, snapshot)
            for _ in range(6):
                vector = [float(x) for x in rng.choice(_COMPONENTS, DIMS)]
                limit = int(rng.integers(1, 12))
                for wanted in (None, ["a"], ["b", None], [1], [1.0, "a"]):
                    opts: dict[str, Any] = {"vector": vector, "limit": limit}
                    if wanted is not None:
                        opts["filter"] = lambda q, w=wanted: q.or_(*[q.eq("tag", t) for t in w])
                    # Small binary fractions: exact products, so equal scores are bit-equal
                    # on both sides and ties must fall the same way (newest first, then id).
                    assert _search(client, opts, snapshot) == _brute_force(
                        docs, vector, limit, wanted
                    )
    finally:
        for snapshot in held:
            store.close_snapshot(snapshot)


def test_closing_the_store_frees_its_vector_indexes(client):
    """A closed client may stay referenced (a notebook variable): its indexes' matrices
    (150 MB for 100,000 x 384) must not."""
    client.mutation("rev:add_many", {"docs": [{"emb": [1.0] * DIMS}]})
    assert _search(client, {"vector": [1.0] * DIMS})
    vectors = client.backend.store.vectors
    assert vectors._indexes
    client.close()
    assert not vectors._indexes


@pytest.mark.parametrize("tags", [None, ["a", None]])
def test_live_vector_queries_follow_every_write_that_changes_their_result(client, tags):
    """After each random write (insert, vector or tag patch, a vector made unindexed or
    indexed again, delete), each live query's value equals a fresh run: no write that
    changes a result was missed by the read set."""
    rng = np.random.default_rng(11)
    ids = client.mutation(
        "rev:add_many",
        {"docs": [{"tag": "a", "emb": _random_vector(rng)} for _ in range(12)]},
    )
    subscriptions = client.backend.subscriptions
    argsets = [
        {"vector": [float(x) for x in rng.choice(_COMPONENTS, DIMS)], "limit": limit}
        for limit in (1, 3, 6)
    ]
    for args in argsets:
        if tags is not None:
            args["tags"] = tags
    subs = [client.subscribe("rev:near", args) for args in argsets]
    try:
        for _ in range(80):
            op = rng.integers(5)
            target = ids[rng.integers(len(ids))]
            if op == 0:
                doc = {"tag": ["a", "b", None][rng.integers(3)], "emb": _random_vector(rng)}
                ids.extend(client.mutation("rev:add_many", {"docs": [doc]}))
            elif op == 1:
                client.mutation(
                    "rev:change", {"id": target, "fields": {"emb": _random_vector(rng)}}
                )
            elif op == 2:
                tag = ["a", "b", None][rng.integers(3)]
                client.mutation("rev:change", {"id": target, "fields": {"tag": tag}})
            elif op == 3 and len(ids) > 3:
                ids.remove(target)
                client.mutation("rev:remove", {"id": target})
            else:
                client.mutation("rev:change", {"id": target, "fields": {"note": 1}})
            assert subscriptions.wait_processed(client.backend.store.ts, timeout=30)
            for sub, args in zip(subs, argsets, strict=True):
                assert sub.value == client.query("rev:near", args)
    finally:
        for sub in subs:
            sub.close()


def test_a_mutations_vector_search_conflicts_with_a_commit_that_changes_its_result(client):
    """OCC: a mutation that searched, then saw a more similar document committed before its
    own commit, runs again and returns the new result; a commit it cannot see (another
    tag) does not make it run again."""
    store = client.backend.store
    ids = client.mutation(
        "rev:add_many", {"docs": [{"tag": "a", "emb": [1.0, *([0.0] * (DIMS - 1))]}]}
    )
    vector = [1.0] * DIMS

    def run(intruder: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        attempts: list[list[str]] = []

        def searching(txn: Any) -> list[str]:
            found = [
                d["_id"]
                for d in txn.query("items").with_vector_index(
                    "by_emb",
                    {"vector": vector, "limit": 1, "filter": lambda q: q.eq("tag", "a")},
                )
            ]
            attempts.append(found)
            if len(attempts) == 1:  # committed after this attempt's snapshot
                ids.extend(client.mutation("rev:add_many", {"docs": [intruder]}))
            txn.insert("items", {"tag": "log", "emb": []})
            return found

        result, _ = store.mutate(searching)
        return result, attempts

    assert run({"tag": "b", "emb": vector}) == ([ids[0]], [[ids[0]]])
    assert run({"tag": "a", "emb": vector}) == ([ids[-1]], [[ids[0]], [ids[-1]]])


def test_request_errors_say_what_is_wrong_and_numpy_vectors_are_accepted(client):
    client.mutation("rev:add_many", {"docs": [{"emb": [1.0] * DIMS}]})
    ones = np.ones(DIMS)
    assert _search(client, {"vector": ones})[0][1] == pytest.approx(1.0)  # a model's output
    assert _search(client, {"vector": list(ones.astype(np.float32))})[0][1] == pytest.approx(1.0)
    for opts, message in [
        ({}, r"`vector` is missing; it must be a list of numbers \(8 of them\)"),
        ({"vector": "1 1 1"}, "must be a list of numbers, got a str"),
        ({"vector": [1.0] * (DIMS - 1) + [True]}, r"item 7 is True \(bool\)"),
        ({"vector": [1.0] * (DIMS - 1) + ["1"]}, r"item 7 is '1' \(str\)"),
        ({"vector": [1.0] * (DIMS - 1) + [10**400]}, "NaN or infinity"),
    ]:
        with pytest.raises(QueryError, match=message):
            _search(client, opts)
    with pytest.raises(QueryError, match="there is no table 'itmes'"):
        client.backend.store.read(
            lambda txn: vector_search(txn, "itmes", "by_emb", {"vector": [1.0] * DIMS})
        )


def test_an_index_that_fails_to_follow_a_commit_is_dropped_not_the_commit(client, monkeypatch):
    """The index is a cache beside the commit path: if keeping it fails (say numpy cannot
    grow it: MemoryError), the commit still returns, live queries still see it, and the
    next search builds the index again from the documents."""
    from kernel_ext.store.vector_matrix import VectorMatrix

    first = client.mutation("rev:add_many", {"docs": [{"tag": "a", "emb": [1.0] * DIMS}]})
    assert _search(client, {"vector": [1.0] * DIMS}) == [(first[0], pytest.approx(1.0))]
    sub = client.subscribe("rev:near", {"vector": [1.0] * DIMS, "limit": 5})
    try:
        real = VectorMatrix.upsert

        def failing(self: VectorMatrix, *args: Any) -> None:
            monkeypatch.setattr(VectorMatrix, "upsert", real)  # once
            raise MemoryError("cannot grow")

        monkeypatch.setattr(VectorMatrix, "upsert", failing)
        second = client.mutation("rev:add_many", {"docs": [{"tag": "a", "emb": [2.0] * DIMS}]})
        assert client.backend.subscriptions.wait_processed(client.backend.store.ts, timeout=30)
        assert {row[0] for row in sub.value} == {first[0], second[0]}
        found = _search(client, {"vector": [1.0] * DIMS})
        assert {i for i, _ in found} == {first[0], second[0]}
        assert [second[0] in e.matrix for e in client.backend.store.vectors._indexes.values()] == [
            True
        ]
    finally:
        sub.close()


def test_a_schema_change_of_dimensions_rebuilds_the_index_and_a_dropped_one_is_freed(client):
    """Redefined with 3 dimensions: the 8-dimension documents leave it, 3-dimension ones
    enter; dropped from the schema: its matrix is freed."""
    eight = client.mutation("rev:add_many", {"docs": [{"emb": [1.0] * DIMS}]})
    three = client.mutation("rev:add_many", {"docs": [{"emb": [1.0, 2.0, 3.0]}]})
    assert [i for i, _ in _search(client, {"vector": [1.0] * DIMS})] == eight
    fields = {"tag": v.optional(v.any()), "emb": v.any(), "note": v.optional(v.any())}
    client.set_schema(
        define_schema(
            {"items": define_table(fields).vector_index("by_emb", vector_field="emb", dimensions=3)}
        )
    )
    with pytest.raises(QueryError, match="the query vector has 8 dimensions, the index has 3"):
        _search(client, {"vector": [1.0] * DIMS})
    assert _search(client, {"vector": [1.0, 2.0, 3.0]}) == [(three[0], pytest.approx(1.0))]
    vectors = client.backend.store.vectors
    assert [len(e.matrix) for e in vectors._indexes.values()] == [1]
    client.set_schema(define_schema({"items": define_table(fields)}))
    assert not vectors._indexes

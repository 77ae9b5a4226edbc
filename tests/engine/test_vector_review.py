"""Vector search review: exact results against a float64 numpy reference where float32
candidates or extreme magnitudes could mislead the index, on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, v
from kernel_ext.store.vector_query import vector_search

DIMS = 8

SCHEMA = define_schema(
    {
        "items": define_table({"tag": v.optional(v.any()), "emb": v.any()}).vector_index(
            "by_emb", vector_field="emb", dimensions=DIMS, filter_fields=["tag"]
        ),
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


FUNCTIONS = {"add_many": add_many, "change": change, "remove": remove}


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

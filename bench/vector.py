"""Vector search: 100,000 x 384 vectors, query p50 and recall@10 vs exact numpy, same run.

Data: the glosses of the first 100,000 WordNet synsets (`kernel_ext.text_data`, real English
text), embedded by its deterministic 384-dimension hashing embedder; queries: the glosses of
`QUERIES` later synsets (not in the index). Measured, each as p50 over the queries:

- numpy (the anchor): the normalised float32 matrix prepared once, then `M @ q` and
  `argpartition` for the top 10, sorted: the least an exact search costs in numpy;
- the index (`VectorMatrix.top`, what a search asks of the engine's index);
- the store, end to end: `ctx.vector_search` in an action (`client.action`) and a query of
  `with_vector_index(...).collect()` (`client.query`), on a SQLite file store holding the
  100,000 documents: candidates from the index, each read at the snapshot and scored again in
  float64. The first search builds the index from the documents (timed, printed).

Recall@10 of every side is measured against float64 numpy on the same vectors (ties aside,
an exact search scores 1.0). The store stays exact while its p50 is under `EXACT_BOUND_MS`;
an approximate index (usearch, hnswlib) would be tried only above it (see bench/README.md).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np

import kernel_ext
from bench._common import header, scratch_dir, target
from kernel_ext import action, define_schema, define_table, mutation, query, v
from kernel_ext.store.vector_matrix import VectorMatrix
from kernel_ext.text_data import embed_many, wordnet_synsets

N: Final = 100_000
QUERIES: Final = 200
K: Final = 10
BATCH: Final = 500
EXACT_BOUND_MS: Final = 50.0

SCHEMA = define_schema(
    {
        "glosses": define_table(
            {"text": v.string(), "category": v.string(), "embedding": v.array(v.float64())}
        ).vector_index(
            "by_embedding", vector_field="embedding", dimensions=384, filter_fields=["category"]
        )
    }
)


@mutation
def insert(ctx: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Insert a batch of glosses; their ids."""
    return [ctx.db.insert("glosses", row) for row in rows]


@action
def similar(ctx: Any, vector: list[float]) -> Any:
    """The ids and scores of the 10 most similar glosses."""
    return ctx.vector_search("glosses", "by_embedding", {"vector": vector, "limit": K})


@query
def nearest(ctx: Any, vector: list[float]) -> Any:
    """The 10 most similar glosses (whole documents)."""
    found = ctx.db.query("glosses").with_vector_index(
        "by_embedding", {"vector": vector, "limit": K}
    )
    return [d["_id"] for d in found.collect()]


def _p50_ms(run: Callable[[np.ndarray], Any], queries: np.ndarray) -> tuple[float, list[Any]]:
    seconds, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(run(q))
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds) * 1e3, results


def _recall(found: list[list[int]], truth: list[list[int]]) -> float:
    hits = sum(len(set(f[:K]) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / (K * len(truth))


def _data() -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    synsets = list(wordnet_synsets())
    docs = synsets[:N]
    texts = [f"{s['word']}: {s['text']}" for s in synsets]
    vectors = embed_many(texts[:N])
    queries = embed_many(texts[N : N + QUERIES])
    return docs, vectors, queries


def main() -> None:
    header(f"vector: {N:,} x 384 vectors (WordNet glosses), top {K}, vs exact numpy")
    t0 = time.perf_counter()
    docs, vectors, queries = _data()
    print(f"  data: {N:,} glosses embedded in {time.perf_counter() - t0:.1f} s", flush=True)
    exact = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = [list(np.argsort(-(exact @ q), kind="stable")[:K]) for q in queries]

    matrix32 = exact.astype(np.float32)

    def numpy_top(q: np.ndarray) -> list[int]:
        scores = matrix32 @ q.astype(np.float32)
        top = np.argpartition(-scores, K)[:K]
        return list(top[np.argsort(-scores[top])])

    numpy_ms, numpy_found = _p50_ms(numpy_top, queries)
    print(f"  numpy (anchor): p50 {numpy_ms:7.2f} ms  recall@10 {_recall(numpy_found, truth):.4f}")

    index = VectorMatrix(384, ["category"])
    for i, (doc, vector) in enumerate(zip(docs, vectors, strict=True)):
        index.upsert(str(i), vector, [doc["category"]])
    index_ms, index_found = _p50_ms(lambda q: [int(i) for i in index.top(q, K)], queries)
    print(f"  index (VectorMatrix.top): p50 {index_ms:7.2f} ms  recall@10 "
          f"{_recall(index_found, truth):.4f}  ({index_ms / numpy_ms:.2f}x numpy)")  # fmt: skip

    with scratch_dir("vector") as folder:
        client = kernel_ext.connect(f"sqlite:///{folder / 'store.db'}")
        try:
            _store_side(client, docs, vectors, queries, truth, numpy_ms)
        finally:
            client.close()


def _store_side(
    client: kernel_ext.Client,
    docs: list[dict[str, Any]],
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: list[list[int]],
    numpy_ms: float,
) -> None:
    client.set_schema(SCHEMA)
    for name, fn in {"insert": insert, "similar": similar, "nearest": nearest}.items():
        client.register(f"bench:{name}", fn)
    position: dict[str, int] = {}
    t0 = time.perf_counter()
    for start in range(0, N, BATCH):
        rows = [
            {"text": d["text"], "category": d["category"], "embedding": vectors[i].tolist()}
            for i, d in enumerate(docs[start : start + BATCH], start)
        ]
        for i, doc_id in enumerate(client.mutation("bench:insert", {"rows": rows}), start):
            position[doc_id] = i
    print(f"  store: {N:,} documents inserted in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    client.action("bench:similar", {"vector": queries[0].tolist()})
    print(f"  store: first search (builds the index) {time.perf_counter() - t0:.2f} s")
    action_ms, found = _p50_ms(
        lambda q: [
            position[r["_id"]] for r in client.action("bench:similar", {"vector": q.tolist()})
        ],
        queries,
    )
    recall = _recall(found, truth)
    print(f"  store action ctx.vector_search: p50 {action_ms:7.2f} ms  recall@10 {recall:.4f}  "
          f"({action_ms / numpy_ms:.2f}x numpy)")  # fmt: skip
    query_ms, found_q = _p50_ms(
        lambda q: [position[i] for i in client.query("bench:nearest", {"vector": q.tolist()})],
        queries,
    )
    print(f"  store query with_vector_index: p50 {query_ms:7.2f} ms  recall@10 "
          f"{_recall(found_q, truth):.4f}  ({query_ms / numpy_ms:.2f}x numpy)")  # fmt: skip
    target(
        "exact search p50", action_ms < EXACT_BOUND_MS, f"{action_ms:.1f} ms < {EXACT_BOUND_MS} ms"
    )
    target("recall@10", recall >= 0.95, f"{recall:.4f} >= 0.95")


if __name__ == "__main__":
    main()

"""Search scores are the same float on every backend, bit for bit: BM25 sums each document's
term scores in one canonical order (the query's terms, then its prefix's extensions), not in
the order a backend happens to hold them (a document's token order in memory, the query's
term order in SQLite), since float addition is not associative."""

from __future__ import annotations

from typing import Any

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, v
from kernel_ext.store.index_kinds import SearchIndexConfig
from kernel_ext.store.search import InvertedIndex, SearchFilterBuilder, compile_search, rank

SCHEMA = define_schema(
    {"messages": define_table({"body": v.string()}).search_index("s", search_field="body")}
)
# Found by search: the first document's three term scores sum to a different last bit in
# its token order (gamma, beta, alpha) than in the query's (alpha, beta, gamma).
BODIES = [
    "gamma delta beta gamma beta alpha beta",
    "beta gamma delta beta beta beta delta gamma",
    "delta beta alpha beta gamma",
    "alpha beta",
    "gamma delta alpha beta alpha alpha alpha",
    "alpha delta delta gamma",
]
TEXT = "alpha beta gamma"


@mutation
def add(ctx: Any, body: str) -> Any:
    return ctx.db.insert("messages", {"body": body})


def _pure(docs: list[dict[str, Any]], text: str) -> dict[str, float]:
    config = SearchIndexConfig("body", ())
    index = InvertedIndex(config, 0)
    index.load(docs)
    spec = compile_search("messages", "s", config, SearchFilterBuilder().search("body", text))
    return {e.doc_id: s for s, e in rank(spec, index.state(spec))}


def test_scores_are_bit_identical_to_the_pure_core_on_every_backend(store_url):
    client = kernel_ext.connect(store_url)
    try:
        client.register("sc:add", add)
        client.set_schema(SCHEMA)
        for body in BODIES:
            client.mutation("sc:add", body=body)
        store = client.backend.store

        def search(txn: Any) -> list[tuple[float, dict[str, Any]]]:
            return list(txn.search("messages", "s", lambda q: q.search("body", TEXT)))

        found, _, _ = store.read(search)
        expected = _pure([doc for _, doc in found], TEXT)
        got = {doc["_id"]: score for score, doc in found}
        assert got == expected  # exact floats, not approximately
    finally:
        client.close()

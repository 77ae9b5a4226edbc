"""Running a vector search in a transaction, and `with_vector_index` queries.

`vector_search(txn, table, index, opts)` returns `[(document, score)]`, best first, exactly as
of the transaction's snapshot (plus its own writes). Where the candidates come from:

- With an index (`txn.vectors`, the engine's `VectorIndexes`): the index's top rows, which
  may be a few commits ahead of the snapshot, and the ids written between the snapshot and
  the index (the index keeps their log) or by the transaction itself. Every candidate is read
  at the snapshot (or from the transaction's writes) and scored again in float64: a document
  that did not change in between has the same vector in the index and at the snapshot, so the
  index's top `limit + pending + changed` rows (and those within float32 error of the last:
  `VectorMatrix.top`) hold every unchanged document that can rank, and the changed ones are
  all read.
- Without one (or when the index cannot tell: the snapshot is older than its log), every
  document of the table at the snapshot (a scan).

The read set gets the search's filter keys (`vector.record_vector_read`) and the ids of
the documents returned (`by_id`), so a live query re-runs when a write can change its result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from kernel_ext.errors import QueryError
from kernel_ext.store.catalog import BY_CREATION_TIME, BY_ID, IndexInfo, TableInfo, id_key
from kernel_ext.store.index_kinds import VectorIndexConfig
from kernel_ext.store.keys import KEY_MAX
from kernel_ext.store.query import DocumentQuery
from kernel_ext.store.values import Value
from kernel_ext.store.vector import (
    VectorRequest,
    document_vector,
    parse_request,
    record_vector_read,
    vector_config,
)
from kernel_ext.store.vector_matrix import rescaled

if TYPE_CHECKING:
    from kernel_ext.store.transaction import Transaction

__all__ = ["VectorCandidates", "VectorHit", "VectorQuery", "rank", "vector_search"]

#: A result: the document and its cosine similarity with the query vector.
VectorHit = tuple[dict[str, Value], float]


class VectorCandidates(Protocol):
    """The engine's vector indexes, as a search in a transaction uses them."""

    def candidates(
        self, table: TableInfo, index: IndexInfo, request: VectorRequest, snapshot_ts: int, k: int
    ) -> tuple[list[str], set[str]] | None:
        """`(ids of the index's top k rows, ids written after snapshot_ts)` as the index
        knows them, or None if it cannot tell which ids changed since `snapshot_ts` (then
        the caller scans the table)."""


def vector_search(txn: Transaction, table: str, index: str, opts: Any) -> list[VectorHit]:
    """The documents most similar to `opts["vector"]` in vector index `index` of `table`, as
    `txn` sees them, best first (see the module docstring).

    Raises:
        QueryError: no such vector index, or a bad request (`vector.parse_request`).
    """
    if not isinstance(table, str) or table.startswith("_"):
        raise QueryError(f"Vector search reads user tables, not {table!r}")
    if txn.index_info(table, BY_CREATION_TIME) is None:  # (its creation is in the read set)
        raise QueryError(
            f"Vector search on {table}.{index}: there is no table {table!r}; declare it with "
            f'.vector_index("{index}", vector_field=..., dimensions=...) in the schema'
        )
    info = txn.catalog.table(table)
    assert info is not None
    index_info, config = vector_config(info, index)
    label = f"{table}.{index}"
    request = parse_request(label, config, opts)
    record_vector_read(txn.read_set, label, request)
    docs = _candidates(txn, info, index_info, request)
    hits = rank(docs, config, request)
    for doc, _ in hits:  # a write to a returned document changes the result
        txn.read_set.add_point(f"{table}.{BY_ID}", id_key(doc["_id"]))
    return hits


def _candidates(
    txn: Transaction, table: TableInfo, index: IndexInfo, request: VectorRequest
) -> Iterable[dict[str, Value]]:
    pending = txn._pending_docs(table.name)
    vectors: VectorCandidates | None = txn.vectors
    found = None
    if vectors is not None:
        found = vectors.candidates(
            table, index, request, txn.snapshot.ts, request.limit + len(pending)
        )
    if found is None:
        return _all_documents(txn, table, pending)
    top, changed = found
    docs: list[dict[str, Value]] = [d for d in pending.values() if d is not None]
    for doc_id in dict.fromkeys([*top, *changed]):
        if doc_id in pending:
            continue
        doc = txn.snapshot.get(table.number, id_key(doc_id))
        if doc is not None:
            docs.append(doc)
    return docs


def _all_documents(
    txn: Transaction, table: TableInfo, pending: dict[str, dict[str, Value] | None]
) -> Iterator[dict[str, Value]]:
    """Every document of the table as `txn` sees it (its writes over the snapshot)."""
    for _, doc in txn.snapshot.scan(table.number, None, b"", KEY_MAX, False):
        if doc["_id"] not in pending:
            yield doc
    for written in pending.values():
        if written is not None:
            yield written


def rank(
    docs: Iterable[dict[str, Value]], config: VectorIndexConfig, request: VectorRequest
) -> list[VectorHit]:
    """The best `request.limit` of `docs` that are in the index and pass the filter, by exact
    (float64) cosine similarity; ties: newer first, then smaller id."""
    kept: list[dict[str, Value]] = []
    vectors: list[list[float]] = []
    for doc in docs:
        vector = document_vector(doc, config)
        if vector is not None and request.passes(doc):
            kept.append(doc)
            vectors.append(vector)
    if not kept:
        return []
    scores = _cosines(np.asarray(vectors, dtype=np.float64), request.vector)
    order = sorted(
        range(len(kept)),
        key=lambda i: (-scores[i], -kept[i]["_creationTime"], kept[i]["_id"]),
    )
    return [(kept[i], scores[i]) for i in order[: request.limit]]


def _cosines(matrix: np.ndarray[Any, Any], query: tuple[float, ...]) -> list[float]:
    # Rescaled first (exactly), or 1e200s overflow to NaN scores and 1e-200s score 0.
    matrix, q = rescaled(matrix), rescaled(query)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(q))
    dots = matrix @ q
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    # Rounding may step past +-1 by an ulp: a cosine never does.
    return [float(s) for s in np.clip(scores, -1.0, 1.0)]


@dataclass(frozen=True)
class VectorQuery(DocumentQuery):
    """`db.query(table).with_vector_index(name, {"vector", "limit", "filter"})`: the
    documents most similar to the vector, best first, consumed like a query (`collect`,
    `take`, `first`, iteration). Reactive: see the module docstring."""

    _txn: Transaction
    table: str
    index: str
    opts: Any

    def _hits(self) -> list[VectorHit]:
        return vector_search(self._txn, self.table, self.index, self.opts)

    def __iter__(self) -> Iterator[dict[str, Value]]:
        """The documents, best first."""
        for doc, _ in self._hits():
            yield doc

    def with_scores(self) -> list[dict[str, Value]]:
        """`[{"_id", "_score"}]`, best first (what `ctx.vector_search` returns)."""
        return [{"_id": doc["_id"], "_score": score} for doc, score in self._hits()]

    def order(self, order: Literal["asc", "desc"]) -> VectorQuery:
        """Refused: vector results are in similarity order."""
        raise QueryError(
            "Vector search results are in similarity order (best first); order() cannot change it"
        )

    def filter(self, predicate: Any) -> VectorQuery:
        """Refused: filter in the search (`"filter"` on filter fields) or on the documents."""
        raise QueryError(
            'A vector query filters with its "filter" option (q.eq on the index\'s filter '
            "fields); filter the collected documents in Python for anything else"
        )

    def paginate(self, opts: Any) -> dict[str, Any]:
        """Refused: a vector search returns at most 256 documents, in one piece."""
        raise QueryError("Vector queries cannot be paginated: use limit (at most 256)")

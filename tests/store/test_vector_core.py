"""The pure core of vector search: requests and their errors, which documents are indexed,
the filter keys of reactivity, and the exact matrix against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from kernel_ext.errors import QueryError
from kernel_ext.store.catalog import IndexInfo, new_table_info
from kernel_ext.store.index_kinds import VectorIndexConfig
from kernel_ext.store.keys import encode_key
from kernel_ext.store.readset import ReadSet
from kernel_ext.store.vector import (
    DEFAULT_LIMIT,
    document_vector,
    parse_request,
    record_vector_read,
    vector_written_keys,
)
from kernel_ext.store.vector_matrix import VectorMatrix
from kernel_ext.store.vector_query import rank

CONFIG = VectorIndexConfig("emb", 3, ("tag", "user"))


def _table():
    table = new_table_info("items", 1, 1)
    table.search_indexes["by_emb"] = IndexInfo("by_emb", 2, CONFIG.fields, "vector", CONFIG)
    return table


def _doc(i: int, emb, tag="a", user="u", created=None):
    return {
        "_id": f"id{i:03}",
        "_creationTime": float(created or i),
        "emb": emb,
        "tag": tag,
        "user": user,
    }


def test_a_request_defaults_to_ten_results_and_checks_its_limit():
    assert parse_request("t.i", CONFIG, {"vector": [1, 2, 3]}).limit == DEFAULT_LIMIT
    assert parse_request("t.i", CONFIG, {"vector": [1, 2, 3], "limit": 256}).limit == 256
    assert parse_request("t.i", CONFIG, {"vector": [1, 2, 3], "limit": 1.0}).limit == 1
    for bad in (0, 257, -1, 2.5, "3", True):
        with pytest.raises(QueryError, match="between 1 and 256"):
            parse_request("t.i", CONFIG, {"vector": [1, 2, 3], "limit": bad})


def test_a_query_vector_of_the_wrong_length_or_kind_is_an_error():
    with pytest.raises(QueryError, match="has 2 dimensions, the index has 3"):
        parse_request("t.i", CONFIG, {"vector": [1.0, 2.0]})
    with pytest.raises(QueryError, match="list of numbers"):
        parse_request("t.i", CONFIG, {"vector": [1.0, "2", 3.0]})
    with pytest.raises(QueryError, match="list of numbers"):
        parse_request("t.i", CONFIG, {})
    with pytest.raises(QueryError, match="NaN or infinity"):
        parse_request("t.i", CONFIG, {"vector": [1.0, float("nan"), 3.0]})
    with pytest.raises(QueryError, match="Unknown vector search options"):
        parse_request("t.i", CONFIG, {"vector": [1, 2, 3], "k": 3})


def test_filters_are_an_or_of_eq_on_declared_fields():
    request = parse_request(
        "t.i",
        CONFIG,
        {"vector": [1, 2, 3], "filter": lambda q: q.eq("tag", "a") | q.or_(q.eq("user", "x"))},
    )
    assert request.clauses == (("tag", "a"), ("user", "x"))
    assert request.passes({"tag": "b", "user": "x"})
    assert not request.passes({"tag": "b", "user": "y"})
    assert not request.passes({"tag": 1, "user": "y"})
    with pytest.raises(QueryError, match=r"'body' is not a filter field.*\['tag', 'user'\]"):
        parse_request("t.i", CONFIG, {"vector": [1, 2, 3], "filter": lambda q: q.eq("body", 1)})
    with pytest.raises(QueryError, match="OR only"):
        parse_request(
            "t.i",
            CONFIG,
            {"vector": [1, 2, 3], "filter": lambda q: q.eq("tag", 1) & q.eq("user", 2)},
        )
    with pytest.raises(QueryError, match="at most 64"):
        parse_request(
            "t.i",
            CONFIG,
            {"vector": [1, 2, 3], "filter": lambda q: q.or_(*[q.eq("tag", i) for i in range(65)])},
        )
    with pytest.raises(QueryError, match=r"must return q.eq"):
        parse_request("t.i", CONFIG, {"vector": [1, 2, 3], "filter": lambda q: True})


def test_only_arrays_of_the_right_number_of_finite_numbers_are_indexed():
    assert document_vector({"emb": [1, 2.5, 3]}, CONFIG) == [1, 2.5, 3]
    for bad in (
        [1.0, 2.0],
        [1.0, 2.0, 3.0, 4.0],
        [1.0, "2", 3.0],
        [True, 1.0, 2.0],
        [1.0, float("inf"), 2.0],
        "abc",
        None,
    ):
        assert document_vector({"emb": bad}, CONFIG) is None
    assert document_vector({}, CONFIG) is None


def test_writes_that_keep_the_vector_and_filter_fields_write_no_filter_keys():
    table = _table()
    old = _doc(1, [1.0, 0.0, 0.0], tag="a")
    label = "items.by_emb"
    assert vector_written_keys(table, old, {**old, "other": 5}) == []
    assert vector_written_keys(table, {**old, "emb": [1.0]}, {**old, "emb": [2.0]}) == []
    inserted = vector_written_keys(table, None, old)
    assert inserted == [(label, encode_key(("tag", "a"))), (label, encode_key(("user", "u")))]
    retagged = vector_written_keys(table, old, {**old, "tag": "b"})
    assert (label, encode_key(("tag", "a"))) in retagged
    assert (label, encode_key(("tag", "b"))) in retagged
    left = vector_written_keys(table, old, {**old, "emb": [1.0, 2.0]})  # leaves the index
    assert left == inserted
    read = ReadSet()
    record_vector_read(
        read,
        label,
        parse_request(label, CONFIG, {"vector": [1, 2, 3], "filter": lambda q: q.eq("tag", "b")}),
    )
    assert read.overlaps(retagged) and not read.overlaps(inserted)
    unfiltered = ReadSet()
    record_vector_read(unfiltered, label, parse_request(label, CONFIG, {"vector": [1, 2, 3]}))
    assert unfiltered.overlaps(inserted) and not unfiltered.overlaps([("items.other", b"")])


def _cosines(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    return vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)


def test_the_matrix_finds_numpys_top_k_through_updates_and_deletes():
    rng = np.random.default_rng(7)
    matrix = VectorMatrix(16, ["tag"])
    vectors = {f"d{i}": rng.normal(size=16) for i in range(500)}
    tags = {doc_id: "ab"[i % 2] for i, doc_id in enumerate(vectors)}
    for doc_id, vector in vectors.items():
        matrix.upsert(doc_id, vector.tolist(), [tags[doc_id]])
    for i in range(0, 500, 3):  # deletes compact the rows
        matrix.remove(f"d{i}")
        del vectors[f"d{i}"]
    for i in range(1, 500, 7):
        if f"d{i}" in vectors:
            vectors[f"d{i}"] = rng.normal(size=16)
            matrix.upsert(f"d{i}", vectors[f"d{i}"].tolist(), [tags[f"d{i}"]])
    assert len(matrix) == len(vectors)
    ids = list(vectors)
    stacked = np.array([vectors[i] for i in ids])
    for _ in range(10):
        query = rng.normal(size=16)
        scores = _cosines(stacked, query)
        expected = {ids[i] for i in np.argsort(-scores)[:10]}
        assert set(matrix.top(query.tolist(), 10)) == expected
        b_only = [i for i in np.argsort(-scores) if tags[ids[i]] == "b"][:5]
        assert set(matrix.top(query.tolist(), 5, [("tag", "b")])) == {ids[i] for i in b_only}
    assert matrix.top([1.0] * 16, 5, [("tag", "zzz")]) == []
    for doc_id in list(vectors):
        matrix.remove(doc_id)
    assert len(matrix) == 0 and matrix.top([1.0] * 16, 3) == []


def test_rank_scores_exactly_and_breaks_ties_newest_first_then_by_id():
    request = parse_request("t.i", CONFIG, {"vector": [1, 0, 0], "limit": 4})
    docs = [
        _doc(1, [1.0, 0.0, 0.0], created=5),
        _doc(2, [2.0, 0.0, 0.0], created=9),  # the same direction: a tie, newer
        _doc(3, [0.0, 1.0, 0.0]),
        _doc(4, [1.0, 1.0, 0.0]),
        _doc(5, [0.0, 0.0, 0.0]),  # a zero vector scores 0
        _doc(6, [1.0, 0.0]),  # not indexed
        _doc(0, [3.0, 0.0, 0.0], created=9),  # tie with 2, same time: smaller id first
    ]
    hits = rank(docs, CONFIG, request)
    assert [d["_id"] for d, _ in hits] == ["id000", "id002", "id001", "id004"]
    assert [s for _, s in hits][:3] == [1.0, 1.0, 1.0]
    assert hits[3][1] == pytest.approx(1 / np.sqrt(2), rel=1e-15)

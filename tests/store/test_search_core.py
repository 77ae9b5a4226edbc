"""The pure full-text core: Convex's tokenizer, query compilation and its limits, BM25 numbers
checked by hand, prefix matches, ties, the in-memory index at earlier timestamps, and the
read-set rule of reactive searches."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_ext.errors import QueryError
from kernel_ext.store.index_kinds import SearchIndexConfig
from kernel_ext.store.search import (
    InvertedIndex,
    SearchFilterBuilder,
    compile_search,
    query_terms,
    rank,
    search_overlaps,
    search_read,
    search_written_keys,
    tokenize,
)
from kernel_ext.store.values import UNDEFINED

CONFIG = SearchIndexConfig("body", ("channel", "lang"))


def _doc(n: int, body: object, channel: str = "#a", **more: object) -> dict:
    return {
        "_id": f"id{n:03d}",
        "_creationTime": float(n),
        "body": body,
        "channel": channel,
        **more,
    }


def _spec(text: str, **eqs: object):
    q = SearchFilterBuilder().search("body", text)
    for f, x in eqs.items():
        q = q.eq(f, x)
    return compile_search("t", "s", CONFIG, q)


def _ranked(docs: list[dict], text: str, **eqs: object) -> list[tuple[str, float]]:
    index = InvertedIndex(CONFIG, 0)
    index.load(docs)
    spec = _spec(text, **eqs)
    return [(e.doc_id, s) for s, e in rank(spec, index.state(spec))]


def test_tokenizer_splits_on_non_alphanumerics_and_lowercases_without_folding():
    assert tokenize("Hello, World! l'été NAÏVE 123abc x_y") == [
        "hello",
        "world",
        "l",
        "été",
        "naïve",
        "123abc",
        "x",
        "y",
    ]
    assert tokenize("日本語 text") == ["日本語", "text"]
    assert tokenize("") == [] and tokenize(" ,;") == []


def test_tokenizer_keeps_combining_letters_in_words_and_lowercases_per_character():
    # Rust's char::is_alphanumeric (Tantivy's SimpleTokenizer) is Unicode Alphabetic or
    # numeric: vowel signs, Hebrew points and Arabic harakat belong to the word.
    assert tokenize("किताब हिंदी") == ["किताब", "हिंदी"]  # Hindi
    assert tokenize("עִבְרִית") == ["עִבְרִית"]  # Hebrew with points
    assert tokenize("كِتَاب") == ["كِتَاب"]  # Arabic with harakat
    assert tokenize("Ⓐbc ²½ 🙂ok e\u0301") == ["ⓐbc", "²½", "ok", "e"]
    # Tantivy's LowerCaser lowers each character alone: no word-final sigma.
    assert tokenize("ΟΔΟΣ Σ") == ["οδοσ", "σ"]  # noqa: RUF001 (Greek on purpose)
    assert tokenize("İstanbul") == ["i\u0307stanbul"]


def test_tokens_of_32_utf8_bytes_or_more_are_dropped():
    assert tokenize("a" * 31) == ["a" * 31]
    assert tokenize("a" * 32 + " ok") == ["ok"]
    assert tokenize("é" * 15 + "e") == ["é" * 15 + "e"]  # 31 bytes
    assert tokenize("é" * 16) == []  # 16 characters, 32 bytes


def test_at_most_16_query_terms():
    assert query_terms(" ".join(f"w{i}" for i in range(20))) == [f"w{i}" for i in range(16)]


def test_bm25_matches_a_hand_computation():
    docs = [_doc(1, "apple banana apple"), _doc(2, "banana cherry"), _doc(3, "cherry date fig")]
    got = dict(_ranked(docs, "apple banana"))
    n, avg = 3, (3 + 2 + 3) / 3

    def bm25(tf: int, df: int, length: int) -> float:
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * 2.2 * tf / (tf + 1.2 * (0.25 + 0.75 * length / avg))

    # "banana" is the last term: an exact match of it scores in full.
    assert got["id001"] == pytest.approx(bm25(2, 1, 3) + bm25(1, 2, 3))
    assert got["id002"] == pytest.approx(bm25(1, 2, 2))
    assert set(got) == {"id001", "id002"}


def test_last_term_is_a_prefix_and_a_prefix_match_scores_half():
    docs = [_doc(1, "hello"), _doc(2, "help"), _doc(3, "hel"), _doc(4, "other words")]
    got = dict(_ranked(docs, "hel"))
    assert set(got) == {"id001", "id002", "id003"}
    assert got["id001"] == pytest.approx(got["id002"])
    assert got["id003"] == pytest.approx(2 * got["id001"])
    # Not the earlier terms: "hel" only as an exact term there.
    assert dict(_ranked(docs, "hel other")).keys() == {"id003", "id004"}


def test_ties_come_newest_first_then_by_id():
    docs = [_doc(1, "same text"), _doc(2, "same text"), _doc(3, "same text")]
    assert [d for d, _ in _ranked(docs, "same")] == ["id003", "id002", "id001"]


def test_non_string_search_field_is_never_matched():
    docs = [_doc(1, 5), _doc(2, ["hello"]), _doc(3, "hello"), {"_id": "x", "_creationTime": 9.0}]
    assert [d for d, _ in _ranked(docs, "hello")] == ["id003"]


def test_filters_on_declared_fields_only_and_at_most_8():
    docs = [_doc(1, "hi", "#a"), _doc(2, "hi", "#b"), _doc(3, "hi", "#a", lang="fr")]
    assert [d for d, _ in _ranked(docs, "hi", channel="#a")] == ["id003", "id001"]
    assert [d for d, _ in _ranked(docs, "hi", lang=UNDEFINED)] == ["id002", "id001"]
    assert [d for d, _ in _ranked(docs, "hi", channel="#a", lang="fr")] == ["id003"]
    with pytest.raises(QueryError, match=r"cannot filter on 'user'.*'channel', 'lang'"):
        _spec("hi", user="u")
    q = SearchFilterBuilder().search("body", "hi")
    for _ in range(9):
        q = q.eq("channel", "#a")
    with pytest.raises(QueryError, match="at most 8 filter expressions"):
        compile_search("t", "s", CONFIG, q)
    with pytest.raises(QueryError, match="searches field 'body', not 'title'"):
        compile_search("t", "s", CONFIG, SearchFilterBuilder().search("title", "x"))


def test_an_index_answers_for_an_earlier_ts_as_a_fresh_one_would():
    index = InvertedIndex(CONFIG, 0)
    index.apply(1, "id001", _doc(1, "alpha beta"))
    index.apply(2, "id002", _doc(2, "beta gamma"))
    index.apply(3, "id001", _doc(1, "gamma only"))
    index.apply(4, "id002", None)
    spec = _spec("beta gam")
    at2 = index.state(spec, 2)
    fresh = InvertedIndex(CONFIG, 2)
    fresh.load([_doc(1, "alpha beta"), _doc(2, "beta gamma")])
    expected = fresh.state(spec, 2)
    assert (at2.count, at2.total, set(at2.entries)) == (
        expected.count,
        expected.total,
        {"id001", "id002"},
    )
    assert {t: n for t, n in at2.df.items() if n} == {t: n for t, n in expected.df.items() if n}
    assert set(index.state(spec).entries) == {"id001"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.none() | st.sampled_from(["a b", "b c", "ab ac", "c", ""])),
        max_size=12,
    ),
    st.integers(0, 12),
)
def test_state_at_any_ts_equals_an_index_built_at_that_ts(writes, at):
    index = InvertedIndex(CONFIG, 0)
    states: list[dict[str, dict]] = [{}]
    for ts, (n, body) in enumerate(writes, start=1):
        current = dict(states[-1])
        doc = None if body is None else _doc(n, body)
        if doc is None:
            current.pop(f"id{n:03d}", None)
        else:
            current[f"id{n:03d}"] = doc
        states.append(current)
        index.apply(ts, f"id{n:03d}", doc)
    at = min(at, len(writes))
    spec = _spec("b a")
    fresh = InvertedIndex(CONFIG, at)
    fresh.load(states[at].values())
    assert [(e.doc_id, round(s, 9)) for s, e in rank(spec, index.state(spec, at))] == [
        (e.doc_id, round(s, 9)) for s, e in rank(spec, fresh.state(spec, at))
    ]


def test_a_write_overlaps_a_search_only_if_it_passes_its_filters_and_has_a_term():
    keys = lambda old, new: [k for _, k in search_written_keys("t", [("s", CONFIG)], old, new)]  # noqa: E731
    read = search_read(_spec("rust pyth", channel="#a"))
    (hit,) = keys(None, _doc(1, "I like python", "#a"))
    assert search_overlaps(read, hit)  # prefix
    (exact,) = keys(None, _doc(1, "RUST", "#a"))
    assert search_overlaps(read, exact)
    (other_channel,) = keys(None, _doc(1, "python", "#b"))
    assert not search_overlaps(read, other_channel)
    (no_term,) = keys(None, _doc(1, "java", "#a"))
    assert not search_overlaps(read, no_term)
    assert not search_overlaps(read, keys(None, _doc(1, "rusty", "#a"))[0])  # not a prefix term
    # A patch away from the terms: its old version still matches.
    assert any(search_overlaps(read, k) for k in keys(_doc(1, "rust", "#a"), _doc(1, "go", "#a")))
    assert keys(None, _doc(1, 42)) == []

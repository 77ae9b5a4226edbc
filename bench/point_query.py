"""Indexed point query on a 1,000,000-document table.

Store: `client.query` of a query function doing
`ctx.db.query("items").with_index("by_key", lambda q: q.eq("key", k)).unique()` for random `k`,
on the cached 1,000,000-document store file.

Anchor, measured in the same run: raw `sqlite3` `SELECT body FROM items WHERE key=?` on an
equivalent table (same documents as orjson bodies, a unique index on `key`, primary key on
the id: two B-tree lookups like the store's index join) plus `orjson.loads` of the body.

Also shown, for diagnosis only: the statements the store issues for one such query (read
snapshot, index join, commit) replayed on the store file with plain sqlite3: the floor that
the store's storage layout allows. Both files are read once first so that the OS page cache
holds them (a warm-cache measurement on both sides).

Target: store latency at most 3x raw (p50 and mean).
"""

from __future__ import annotations

import random
import sqlite3
import time
from typing import Any, Final

import orjson

import kernel_ext
from bench._common import (
    ensure_dataset,
    fmt_latency,
    header,
    latency_stats,
    target,
    warm_page_cache,
)
from kernel_ext import query
from kernel_ext.store.codec import decode_document
from kernel_ext.store.keys import encode_key, prefix_end

DOCS: Final = 1_000_000
QUERIES: Final = 20_000  # per side, in interleaved chunks
CHUNK: Final = 1_000
WARMUP: Final = 2_000
TARGET_RATIO: Final = 3.0


@query
def by_key(ctx: Any, key: int) -> Any:
    """The item with that key, or None."""
    return ctx.db.query("items").with_index("by_key", lambda q: q.eq("key", key)).unique()


def main() -> None:
    header(
        f"Indexed point query on {DOCS:,} documents: {QUERIES:,} random keys per side, "
        f"interleaved in chunks of {CHUNK:,}"
    )
    store_path, raw_path = ensure_dataset(DOCS)
    warm_page_cache(store_path, raw_path)  # both sides measured with the files in the OS cache
    rng = random.Random(7)
    keys = [rng.randrange(DOCS) for _ in range(QUERIES + WARMUP)]

    # Raw anchor: an equivalent table with an index on key.
    raw = sqlite3.connect(f"file:{raw_path}?mode=ro", uri=True, check_same_thread=False)
    raw_stmt = "SELECT body FROM items WHERE key=?"

    def raw_get(k: int) -> Any:
        row = raw.execute(raw_stmt, (k,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    # The store's own statements replayed on its file (read-only; diagnosis only).
    floor = sqlite3.connect(
        f"file:{store_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    table_number, index_id = floor.execute(
        "SELECT t.number, i.index_id FROM tables t JOIN indexes i ON i.table_number=t.number "
        "WHERE t.name='items' AND i.name='by_key'"
    ).fetchone()
    floor_stmt = (
        "SELECT e.key, d.body FROM index_entries e JOIN documents d "
        "ON d.table_number=? AND d.id_key=e.id_key "
        "WHERE e.index_id=? AND e.key>=? AND e.key<? ORDER BY e.key ASC LIMIT ?"
    )

    def floor_get(k: int) -> Any:
        floor.execute("BEGIN")
        floor.execute("SELECT value FROM meta WHERE key='ts'").fetchone()
        lo = encode_key((k,))
        rows = floor.execute(floor_stmt, (table_number, index_id, lo, prefix_end(lo), 16))
        docs = [decode_document(body) for _, body in rows.fetchall()]
        floor.execute("COMMIT")
        return docs[0] if docs else None

    opened = time.perf_counter()
    client = kernel_ext.connect(store_path)
    client.backend.register("bench:by_key", by_key)
    print(f"  opened the store in {time.perf_counter() - opened:.3f} s")
    call = client.query

    def store_get(k: int) -> Any:
        return call("bench:by_key", {"key": k})

    try:
        sides = {"store": store_get, "raw": raw_get, "floor": floor_get}
        for k in keys[:WARMUP]:
            expected = raw_get(k)
            for name, get in sides.items():
                got = get(k)
                assert got is not None and got["key"] == k == expected["key"], (name, k, got)
        timings: dict[str, list[float]] = {name: [] for name in sides}
        clock = time.perf_counter
        measured = keys[WARMUP:]
        for start in range(0, QUERIES, CHUNK):
            chunk = measured[start : start + CHUNK]
            for name, get in sides.items():
                out = timings[name]
                for k in chunk:
                    t0 = clock()
                    get(k)
                    out.append(clock() - t0)
    finally:
        client.close()
        raw.close()
        floor.close()

    stats = {name: latency_stats(values) for name, values in timings.items()}
    print(f"  store  client.query      {fmt_latency(stats['store'])}")
    print(f"  raw    sqlite3 + orjson  {fmt_latency(stats['raw'])}")
    print(f"  (store's SQL replayed    {fmt_latency(stats['floor'])})")
    ratios = {m: stats["store"][m] / stats["raw"][m] for m in ("p50", "p99", "mean")}
    print(
        f"  ratio store/raw: p50 {ratios['p50']:.2f}x   p99 {ratios['p99']:.2f}x   "
        f"mean {ratios['mean']:.2f}x   (store/floor p50 "
        f"{stats['store']['p50'] / stats['floor']['p50']:.2f}x, floor/raw p50 "
        f"{stats['floor']['p50'] / stats['raw']['p50']:.2f}x)"
    )
    target(
        "store latency <= 3x raw (p50 and mean)",
        ratios["p50"] <= TARGET_RATIO and ratios["mean"] <= TARGET_RATIO,
        f"p50 {ratios['p50']:.2f}x, mean {ratios['mean']:.2f}x",
    )


if __name__ == "__main__":
    main()

"""Mutation throughput on PostgreSQL: single-document inserts and read-modify-write patches.

Store: `client.mutation(...)` through `kernel_ext.connect("postgresql://...")` on a fresh
database of a throwaway cluster (bench/_pg.py: durable settings unless `BENCH_PG_FAST=1`). One
commit per call: the cluster-wide commit lock (`FOR UPDATE` on the clock row) and a check that
no other process committed since, the document row, its index rows, the log entry, the clock,
a `NOTIFY`, `COMMIT`, in one query (one round trip; when another process did commit, the lock
and the commit log first, then the writes: two).

Anchor, measured in the same run on another database of the same cluster: raw psycopg 3 on one
connection doing the same rows in the store's table layout (`documents(table_number, id_key
bytea, body bytea)`, `index_entries(index_id, key bytea, id_key bytea)`), one transaction per
operation, one statement per round trip (`with conn.transaction()`; psycopg prepares the
statements after their fifth use):

- insert: INSERT the document row and its index row (`by_creation_time`);
- read-modify-write: SELECT the row by id, decode, modify, encode, UPDATE the row and its
  `by_value` index row.

For information, the same anchor pipelined (psycopg pipeline mode: the insert's four
statements in one round trip; the read-modify-write in two). Target: store/raw >= 0.5 for both
(raw = the plain anchor). Rounds alternate store / raw; the median round counts.
"""

from __future__ import annotations

import os
import random
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
import psycopg

from bench._common import header, target
from bench._pg import DURABLE, bench_cluster, settings_line
from bench.mutations import COUNTERS, StoreRunner
from kernel_ext.persistence.base import CommitRecord, IndexChange
from kernel_ext.persistence.postgres import PostgresPersistence

TARGET_RATIO: Final = 0.5
OPS: Final = 600 if DURABLE else 2_000  # operations per round
ROUNDS: Final = 5
WARMUP: Final = 100

_pack_d = struct.Struct(">d").pack
_pack_q = struct.Struct(">q").pack
_ITEMS, _COUNTERS, _BY_TIME, _BY_VALUE = 10, 11, 20, 21

_INSERT_DOC: Final = "INSERT INTO documents VALUES (%s, %s, %s)"
_INSERT_ENTRY: Final = "INSERT INTO index_entries VALUES (%s, %s, %s)"
_SELECT_DOC: Final = "SELECT body FROM documents WHERE table_number=%s AND id_key=%s"
_UPDATE_DOC: Final = "UPDATE documents SET body=%s WHERE table_number=%s AND id_key=%s"
_MOVE_ENTRY: Final = "UPDATE index_entries SET key=%s WHERE index_id=%s AND key=%s"


def seed_raw_counters(conn: psycopg.Connection[Any], n: int) -> list[bytes]:
    """Create the raw tables (if missing) and `n` counter rows with their index rows; returns
    their id keys."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS documents (table_number int NOT NULL, id_key bytea NOT "
        "NULL, body bytea NOT NULL, PRIMARY KEY (table_number, id_key))"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS index_entries (index_id int NOT NULL, key bytea NOT "
        "NULL, id_key bytea NOT NULL, PRIMARY KEY (index_id, key))"
    )
    ids, rows, entries = [], [], []
    for k in range(n):
        doc_id = os.urandom(21)
        body = orjson.dumps({"_id": doc_id.hex(), "key": k, "value": 0, "name": f"c-{k}"})
        rows.append((_COUNTERS, doc_id, body))
        entries.append((_BY_VALUE, _pack_q(0) + doc_id, doc_id))
        ids.append(doc_id)
    with conn.transaction():
        cur = conn.cursor()
        cur.executemany(_INSERT_DOC, rows)
        cur.executemany(_INSERT_ENTRY, entries)
    return ids


def raw_bump(conn: psycopg.Connection[Any], doc_id: bytes) -> None:
    """The anchor's read-modify-write of one counter: one transaction, one statement per round
    trip (SELECT, then UPDATE the row and its index row)."""
    with conn.transaction():
        row = conn.execute(_SELECT_DOC, (_COUNTERS, doc_id)).fetchone()
        _write_bump(conn, doc_id, row)


def _write_bump(conn: psycopg.Connection[Any], doc_id: bytes, row: Any) -> None:
    doc = orjson.loads(row[0])
    old = doc["value"]
    doc["value"] = old + 1
    conn.execute(_UPDATE_DOC, (orjson.dumps(doc), _COUNTERS, doc_id))
    conn.execute(_MOVE_ENTRY, (_pack_q(old + 1) + doc_id, _BY_VALUE, _pack_q(old) + doc_id))


class RawRunner:
    """The anchor: the same rows with psycopg 3, one transaction per operation."""

    def __init__(self, url: str, *, pipelined: bool) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.pipelined = pipelined
        self.ids = seed_raw_counters(self.conn, COUNTERS)
        self.next_key = 0

    def inserts(self, n: int) -> float:
        conn, execute = self.conn, self.conn.execute
        start = time.perf_counter()
        for k in range(self.next_key, self.next_key + n):
            doc_id = os.urandom(21)
            now = time.time() * 1000.0
            doc = {"_id": doc_id.hex(), "_creationTime": now, "key": k, "value": k % 1000}
            doc["name"] = f"item-{k:07d}"
            body = orjson.dumps(doc)
            if self.pipelined:
                with conn.pipeline(), conn.transaction():
                    execute(_INSERT_DOC, (_ITEMS, doc_id, body))
                    execute(_INSERT_ENTRY, (_BY_TIME, _pack_d(now) + doc_id, doc_id))
            else:
                with conn.transaction():
                    execute(_INSERT_DOC, (_ITEMS, doc_id, body))
                    execute(_INSERT_ENTRY, (_BY_TIME, _pack_d(now) + doc_id, doc_id))
        elapsed = time.perf_counter() - start
        self.next_key += n
        return elapsed

    def patches(self, n: int, picks: list[int]) -> float:
        conn, execute, ids = self.conn, self.conn.execute, self.ids
        start = time.perf_counter()
        for i in picks[:n]:
            doc_id = ids[i]
            if self.pipelined:
                with conn.pipeline(), conn.transaction():
                    # Fetching syncs the pipeline: BEGIN + SELECT in one round trip, the
                    # UPDATEs and COMMIT in a second one.
                    row = execute(_SELECT_DOC, (_COUNTERS, doc_id)).fetchone()
                    _write_bump(conn, doc_id, row)
            else:
                raw_bump(conn, doc_id)
        return time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


class SqlFloorRunner:
    """Diagnosis only: the persistence's commit of one insert (`commit_if_latest`: the lock, the
    clock check, the document row, its index row, the log entry, `NOTIFY`, `COMMIT` in one
    query), without the engine (no function, no validation, no log entry encoding)."""

    def __init__(self, url: str) -> None:
        self.persistence = PostgresPersistence(url)
        self.clock = self.persistence.last_ts()

    def inserts(self, n: int) -> float:
        commit = self.persistence.commit_if_latest
        body = b"c" * 300  # about what a one-document insert's log entry weighs
        start = time.perf_counter()
        for _ in range(n):
            doc_id = os.urandom(21)
            record = CommitRecord(
                _ITEMS,
                doc_id,
                {"_id": doc_id.hex(), "x": "x" * 100},
                (IndexChange(_BY_TIME, None, b"t" * 8 + doc_id),),
            )
            ts = commit(self.clock, [record], [], body)
            assert ts is not None, "nothing else commits to this database"
            self.clock = ts
        return time.perf_counter() - start

    def close(self) -> None:
        self.persistence.close()


def _rate(run: Callable[[int], float], n: int) -> float:
    return n / run(n)


def _measure(label: str, runs: dict[str, Callable[[int], float]]) -> dict[str, float]:
    for run in runs.values():
        run(WARMUP)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            rates[name].append(_rate(run, OPS))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    store = medians["store"]
    for name, rate in medians.items():
        ratio = "" if name == "store" else f"   store/{name} {store / rate:.3f}"
        print(
            f"  {label:<18} {name:<15} {rate:8,.0f} ops/s ({1e3 / rate:6.2f} ms/op)   "
            f"rounds {[round(r) for r in rates[name]]}{ratio}",
            flush=True,
        )
    return medians


def main() -> None:
    header(
        f"PostgreSQL mutation throughput: {ROUNDS} rounds x {OPS:,} ops each side, one "
        "transaction per op"
    )
    rng = random.Random(42)
    picks = [rng.randrange(COUNTERS) for _ in range(OPS)]
    with bench_cluster() as cluster:
        print(settings_line(cluster.url()), flush=True)
        store = StoreRunner(cluster.create_database("store"))
        raw = RawRunner(cluster.create_database("raw"), pipelined=False)
        piped = RawRunner(cluster.create_database("piped"), pipelined=True)
        floor = SqlFloorRunner(cluster.create_database("floor"))
        try:
            ins = _measure(
                "insert",
                {
                    "store": store.inserts,
                    "raw psycopg": raw.inserts,
                    "raw pipelined": piped.inserts,
                },
            )
            rmw = _measure(
                "read-modify-write",
                {
                    "store": lambda n: store.patches(n, picks),
                    "raw psycopg": lambda n: raw.patches(n, picks),
                    "raw pipelined": lambda n: piped.patches(n, picks),
                },
            )
            floor.inserts(WARMUP)
            rate = _rate(floor.inserts, OPS)
            print(
                f"  diagnosis: the persistence's commit of one insert, no engine: "
                f"{rate:8,.0f} ops/s ({1e3 / rate:6.2f} ms/op), one round",
                flush=True,
            )
        finally:
            store.close()
            raw.close()
            piped.close()
            floor.close()
    for label, medians in (("insert", ins), ("read-modify-write", rmw)):
        ratio = medians["store"] / medians["raw psycopg"]
        target(
            f"{label} store/raw psycopg >= {TARGET_RATIO}", ratio >= TARGET_RATIO, f"{ratio:.3f}"
        )


if __name__ == "__main__":
    main()

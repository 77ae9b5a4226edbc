"""Mutation throughput: single-document inserts and read-modify-write patches per second.

Store: `client.mutation(...)` through the public embedded client on a fresh SQLite file (one
commit per call: a `documents` row, one `index_entries` row and the commit timestamp).

Anchor, measured in the same run: raw `sqlite3` doing the same work on a fresh file with the
store's durability (WAL, `synchronous=NORMAL`, see `SqlitePersistence._connect`), one
transaction per operation:

- insert: INSERT a JSON body into a table plus a row into an index table;
- read-modify-write: SELECT a row by key, decode, modify, encode, UPDATE the row and its
  index row.

The tables have one index whose key each operation writes: `items` only its implicit
`by_creation_time` (an insert adds one entry), `counters` a `by_value` index (a patch of
`value` moves one entry). Target: store/raw >= 0.4 for both.
"""

from __future__ import annotations

import os
import random
import sqlite3
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson

import kernel_ext
from bench._common import header, scratch_dir, target
from kernel_ext import define_schema, define_table, mutation, v
from kernel_ext.persistence.sqlite import SqlitePersistence

TARGET_RATIO: Final = 0.4
OPS: Final = 5_000  # operations per round
ROUNDS: Final = 5  # alternating store / raw rounds; the median round counts
COUNTERS: Final = 1_000  # documents the read-modify-write picks from

SCHEMA: Final = define_schema(
    {
        "items": define_table({"key": v.int64(), "value": v.int64(), "name": v.string()}),
        "counters": define_table({"key": v.int64(), "value": v.int64(), "name": v.string()}).index(
            "by_value", ["value"]
        ),
    }
)


@mutation
def insert_item(ctx: Any, key: int, value: int, name: str) -> str:
    """Insert one document."""
    return ctx.db.insert("items", {"key": key, "value": value, "name": name})


@mutation
def bump(ctx: Any, id: str) -> None:
    """Read a document, increment its value, write it back."""
    doc = ctx.db.get(id)
    ctx.db.patch(id, {"value": doc["value"] + 1})


@mutation
def seed(ctx: Any, n: int) -> list[str]:
    """Insert `n` counters."""
    return [
        ctx.db.insert("counters", {"key": k, "value": 0, "name": f"counter-{k:05d}"})
        for k in range(n)
    ]


# -- store ---------------------------------------------------------------------------------


class StoreRunner:
    """The store side: a client of a fresh store (a file, or a PostgreSQL database's URL for
    bench/pg_mutations.py) with the benchmark functions."""

    def __init__(self, location: Path | str) -> None:
        self.client = kernel_ext.connect(location)
        self.client.backend.store.set_schema(SCHEMA)
        for name, fn in (("insert", insert_item), ("bump", bump), ("seed", seed)):
            self.client.backend.register(f"bench:{name}", fn)
        self.ids: list[str] = self.client.mutation("bench:seed", {"n": COUNTERS})
        self.next_key = 0

    def inserts(self, n: int) -> float:
        mutate = self.client.mutation
        start = time.perf_counter()
        for k in range(self.next_key, self.next_key + n):
            mutate("bench:insert", {"key": k, "value": k % 1000, "name": f"item-{k:07d}"})
        elapsed = time.perf_counter() - start
        self.next_key += n
        return elapsed

    def patches(self, n: int, picks: list[int]) -> float:
        mutate, ids = self.client.mutation, self.ids
        start = time.perf_counter()
        for i in picks[:n]:
            mutate("bench:bump", {"id": ids[i]})
        return time.perf_counter() - start

    def close(self) -> None:
        self.client.close()


# -- raw sqlite3 ----------------------------------------------------------------------------

_pack_d = struct.Struct(">d").pack
_pack_q = struct.Struct(">q").pack


class RawRunner:
    """The anchor: the same work in plain sqlite3, one transaction per operation."""

    def __init__(self, path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(
            """
            CREATE TABLE items (id BLOB PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
            CREATE TABLE items_by_time (key BLOB PRIMARY KEY, id BLOB NOT NULL) WITHOUT ROWID;
            CREATE TABLE counters (id BLOB PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
            CREATE TABLE counters_by_value (key BLOB PRIMARY KEY, id BLOB NOT NULL) WITHOUT ROWID;
            """
        )
        self.conn = conn
        self.ids: list[bytes] = []
        conn.execute("BEGIN")
        for k in range(COUNTERS):
            doc_id = os.urandom(16)
            body = orjson.dumps({"_id": doc_id.hex(), "key": k, "value": 0, "name": f"c-{k}"})
            conn.execute("INSERT INTO counters VALUES (?, ?)", (doc_id, body))
            conn.execute(
                "INSERT INTO counters_by_value VALUES (?, ?)", (_pack_q(0) + doc_id, doc_id)
            )
            self.ids.append(doc_id)
        conn.execute("COMMIT")
        self.next_key = 0

    def inserts(self, n: int) -> float:
        execute = self.conn.execute
        start = time.perf_counter()
        for k in range(self.next_key, self.next_key + n):
            doc_id = os.urandom(16)
            now = time.time() * 1000.0
            doc = {"_id": doc_id.hex(), "_creationTime": now, "key": k, "value": k % 1000}
            doc["name"] = f"item-{k:07d}"
            execute("BEGIN")
            execute("INSERT INTO items VALUES (?, ?)", (doc_id, orjson.dumps(doc)))
            execute("INSERT INTO items_by_time VALUES (?, ?)", (_pack_d(now) + doc_id, doc_id))
            execute("COMMIT")
        elapsed = time.perf_counter() - start
        self.next_key += n
        return elapsed

    def patches(self, n: int, picks: list[int]) -> float:
        execute, ids = self.conn.execute, self.ids
        start = time.perf_counter()
        for i in picks[:n]:
            doc_id = ids[i]
            execute("BEGIN")
            (body,) = execute("SELECT body FROM counters WHERE id=?", (doc_id,)).fetchone()
            doc = orjson.loads(body)
            old = doc["value"]
            doc["value"] = old + 1
            execute("UPDATE counters SET body=? WHERE id=?", (orjson.dumps(doc), doc_id))
            execute(
                "UPDATE counters_by_value SET key=? WHERE key=?",
                (_pack_q(old + 1) + doc_id, _pack_q(old) + doc_id),
            )
            execute("COMMIT")
        return time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


class SqlFloorRunner:
    """Diagnosis only: the statements the store issues for one insert mutation, replayed with
    plain sqlite3 on a store file: a read snapshot on a pooled connection (BEGIN, read the
    commit ts) and a writer transaction (documents row, index row, commit ts, COMMIT).
    `reader_open_at_commit` keeps the read transaction open until after the writer's COMMIT,
    as `Store.mutate` does (it closes the snapshot in a `finally` after `commit`)."""

    def __init__(self, path: Path, *, reader_open_at_commit: bool) -> None:
        SqlitePersistence(path).close()  # creates the store schema
        self.writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for conn in (self.writer, self.reader):
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        self.open_at_commit = reader_open_at_commit
        self.next_key = 0

    def inserts(self, n: int) -> float:
        w, r, open_at_commit = self.writer.execute, self.reader.execute, self.open_at_commit
        start = time.perf_counter()
        for k in range(self.next_key, self.next_key + n):
            r("BEGIN")
            r("SELECT value FROM meta WHERE key='ts'").fetchone()
            if not open_at_commit:
                r("COMMIT")
            id_key = os.urandom(21)
            now = time.time() * 1000.0
            doc = {"_id": id_key.hex(), "_creationTime": now, "key": k, "value": k % 1000}
            doc["name"] = f"item-{k:07d}"
            w("BEGIN")
            w(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?)",
                (9, id_key, b"\0" + orjson.dumps(doc)),
            )
            w("INSERT INTO index_entries VALUES (?, ?, ?)", (9, _pack_d(now) + id_key, id_key))
            w("UPDATE meta SET value=? WHERE key='ts'", (str(time.time_ns()),))
            w("COMMIT")
            if open_at_commit:
                r("COMMIT")
        elapsed = time.perf_counter() - start
        self.next_key += n
        return elapsed

    def wal_mib(self, path: Path) -> float:
        wal = Path(f"{path}-wal")
        return wal.stat().st_size / 2**20 if wal.exists() else 0.0

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


# -- driver -------------------------------------------------------------------------------


def _rate(run: Callable[[int], float], n: int) -> float:
    return n / run(n)


def _measure(
    label: str, store_run: Callable[[int], float], raw_run: Callable[[int], float]
) -> tuple[float, float]:
    store_run(500)  # warm-up: page cache, code paths
    raw_run(500)
    store_rates, raw_rates = [], []
    for _ in range(ROUNDS):
        store_rates.append(_rate(store_run, OPS))
        raw_rates.append(_rate(raw_run, OPS))
    store, raw = statistics.median(store_rates), statistics.median(raw_rates)
    print(
        f"  {label:<18} store {store:9,.0f} ops/s ({1e6 / store:6.1f} us/op)   "
        f"raw sqlite3 {raw:9,.0f} ops/s ({1e6 / raw:6.1f} us/op)   ratio store/raw "
        f"{store / raw:.3f}",
        flush=True,
    )
    print(
        "  " + " " * 18 + f" rounds store {[round(r) for r in store_rates]}  "
        f"raw {[round(r) for r in raw_rates]}",
        flush=True,
    )
    return store, raw


def main() -> None:
    header(
        f"Mutation throughput: {ROUNDS} rounds x {OPS:,} ops each side, one commit per op "
        "(WAL, synchronous=NORMAL)"
    )
    rng = random.Random(42)
    picks = [rng.randrange(COUNTERS) for _ in range(OPS)]
    with scratch_dir("mutations") as tmp:
        store = StoreRunner(tmp / "store.db")
        raw = RawRunner(tmp / "raw.db")
        try:
            ins_store, ins_raw = _measure("insert", store.inserts, raw.inserts)
            rmw_store, rmw_raw = _measure(
                "read-modify-write",
                lambda n: store.patches(n, picks),
                lambda n: raw.patches(n, picks),
            )
            store_wal = Path(f"{tmp / 'store.db'}-wal").stat().st_size / 2**20
            print(f"  store WAL file after the run: {store_wal:,.1f} MiB")
        finally:
            store.close()
            raw.close()
        print("  diagnosis: the store's SQL statements for an insert, replayed with sqlite3:")
        for open_at_commit in (True, False):
            path = tmp / f"floor-{open_at_commit}.db"
            floor = SqlFloorRunner(path, reader_open_at_commit=open_at_commit)
            try:
                floor.inserts(500)
                rate = _rate(floor.inserts, OPS)
                print(
                    f"    read snapshot {'open across' if open_at_commit else 'closed before'} "
                    f"the commit: {rate:9,.0f} ops/s ({1e6 / rate:6.1f} us/op), WAL "
                    f"{floor.wal_mib(path):,.1f} MiB after {OPS + 500:,} commits",
                    flush=True,
                )
            finally:
                floor.close()
    target(
        "insert store/raw >= 0.4",
        ins_store / ins_raw >= TARGET_RATIO,
        f"{ins_store / ins_raw:.3f}",
    )
    target(
        "read-modify-write store/raw >= 0.4",
        rmw_store / rmw_raw >= TARGET_RATIO,
        f"{rmw_store / rmw_raw:.3f}",
    )


if __name__ == "__main__":
    main()

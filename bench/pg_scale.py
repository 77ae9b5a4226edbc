"""Write scaling on PostgreSQL: aggregate mutation throughput of 1, 2 and 4 writer processes.

A throwaway cluster (bench/_pg.py, durable settings unless `BENCH_PG_FAST=1`). Each writer is
a process of its own (`python -m bench._pg_workers writer`) running read-modify-write
increments back to back for `SECONDS` after a common start time (`time.time()`, after every
writer warmed up); the aggregate is the sum of their commits over the window.

- store, disjoint: `client.mutation("bench:bump", {id})` through `kernel_ext.connect(url)`;
  each writer has its own `DOCS_PER_WRITER` documents (no conflicts). Every commit still takes
  the one cluster-wide commit lock (the clock row), so writers queue on it: this shows the
  lock's cost.
- store, contended: every writer bumps the same document (conflicts: optimistic retries, then
  a run under the lock). Checked: the document's final value equals the commits counted.
- anchor, raw psycopg, disjoint: the same read-modify-write of the raw tables of
  bench/pg_mutations.py (one transaction: SELECT, UPDATE row, UPDATE index row) with no
  global lock, 1, 2 and 4 processes, each on its own rows.

No target ratio (the issue asks to show the figures); the scaling factor (aggregate / 1
writer) and the store / raw ratio at each process count are printed.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Final

import psycopg

import kernel_ext
from bench._common import header
from bench._pg import bench_cluster, settings_line
from bench._pg_workers import register
from bench._server import LineProcess
from bench.pg_mutations import seed_raw_counters
from kernel_ext import mutation

WRITERS: Final = (1, 2, 4)
SECONDS: Final = 5.0
DOCS_PER_WRITER: Final = 50
TIMEOUT: Final = 60.0


@mutation
def seed(ctx: Any, n: int) -> list[str]:
    """Insert `n` counters."""
    return [ctx.db.insert("items", {"value": 0}) for _ in range(n)]


def run(url: str, mode: str, id_lists: list[list[str]]) -> tuple[float, list[int]]:
    """Start one writer per id list, run them for `SECONDS` together; returns `(aggregate
    commits/s, commits per writer)`."""
    procs = [
        LineProcess(
            [sys.executable, "-m", "bench._pg_workers", "writer", url, mode, ",".join(ids)],
            stdin=True,
        )
        for ids in id_lists
    ]
    try:
        for p in procs:
            p.expect("ready", TIMEOUT)
        start = time.time() + 0.5
        for p in procs:
            p.send("run", start, SECONDS)
        results = [p.expect("done", SECONDS + TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.stop()
    counts = [int(done) for done, _ in results]
    return sum(done / seconds for done, seconds in results), counts


def main() -> None:
    header(
        f"PostgreSQL write scaling: read-modify-write mutations, {SECONDS:g} s per run, "
        f"writers {list(WRITERS)} (one process each)"
    )
    with bench_cluster() as cluster:
        print(settings_line(cluster.url()), flush=True)
        url = cluster.create_database("store")
        client = kernel_ext.connect(url)
        try:
            register(client)
            client.backend.register("bench:seed", seed)
            ids: list[str] = client.mutation("bench:seed", {"n": DOCS_PER_WRITER * max(WRITERS)})
            hot: str = client.mutation("bench:seed", {"n": 1})[0]
        finally:
            client.close()
        raw_url = cluster.create_database("raw")
        with psycopg.connect(raw_url, autocommit=True) as conn:
            raw_ids = [k.hex() for k in seed_raw_counters(conn, DOCS_PER_WRITER * max(WRITERS))]

        def slices(all_ids: list[str], n: int) -> list[list[str]]:
            return [all_ids[i * DOCS_PER_WRITER : (i + 1) * DOCS_PER_WRITER] for i in range(n)]

        rows: dict[str, dict[int, float]] = {"store": {}, "contended": {}, "raw": {}}
        contended_total = 0
        for n in WRITERS:
            for label, mode, lists in (
                ("raw", "raw", slices(raw_ids, n)),
                ("store", "store", slices(ids, n)),
                ("contended", "store", [[hot]] * n),
            ):
                rate, counts = run(url if mode == "store" else raw_url, mode, lists)
                rows[label][n] = rate
                if label == "contended":
                    contended_total += sum(counts) + n  # + each writer's warm-up bump
                print(
                    f"  {label:<10} {n} writer(s): {rate:8,.0f} commits/s aggregate "
                    f"(per writer {[round(c / SECONDS) for c in counts]})",
                    flush=True,
                )
        check = kernel_ext.connect(url)
        try:
            register(check)
            final = check.query("bench:watch", {"id": hot, "slot": 0})
        finally:
            check.close()
    print(
        f"  contended document's final value {final} (commits counted {contended_total}): "
        f"{'OK' if final == contended_total else 'MISMATCH'}"
    )
    print("  summary (aggregate commits/s; x = relative to 1 writer of the same kind):")
    for label, title in (
        ("store", "store, disjoint documents"),
        ("contended", "store, one document"),
        ("raw", "raw psycopg, disjoint rows"),
    ):
        one = rows[label][1]
        cells = "   ".join(
            f"{n}: {rows[label][n]:7,.0f} ({rows[label][n] / one:.2f}x)" for n in WRITERS
        )
        print(f"    {title:<28} {cells}")
    ratios = "   ".join(f"{n}: {rows['store'][n] / rows['raw'][n]:.3f}" for n in WRITERS)
    print(f"    store / raw (disjoint)       {ratios}", flush=True)


if __name__ == "__main__":
    main()

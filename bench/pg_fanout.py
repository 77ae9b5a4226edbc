"""Fan-out across processes on PostgreSQL: a commit in one process reaches live subscriptions
in others.

A throwaway cluster (bench/_pg.py, durable settings unless `BENCH_PG_FAST=1`), one store
database, one document `{value}` in table `items`. This process (A) commits with
`client.mutation("bench:set_value", {id, value})`; subscriber processes
(`python -m bench._pg_workers subscriber`, each its own `kernel_ext.connect(url)`) hold live
subscriptions to `bench:watch {id, slot}` (distinct `slot`s, so every subscription is a live
query of its own) and record `time.time_ns()` when `on_change` delivers the new value. Clock:
CLOCK_REALTIME, shared by every process of the machine (and by PostgreSQL's
`clock_timestamp()`, which gives the commit ts).

1. One subscriber process B with one subscription; `PAIR_COMMITS` commits (after
   `PAIR_WARMUP`), one at a time, each waiting for B's delivery. Measured: from just before
   `mutation()` in A to `on_change` in B (call -> on_change), and from the commit's ts (the
   database clock when the commit wrote the clock row) to `on_change` (commit -> on_change).
   Target: call -> on_change p50 < 10 ms.
2. `PROCS` subscriber processes x `SUBS` subscriptions each; one mutation changes the document
   all of them read. Measured per process: from just before `mutation()` to the last of its
   `SUBS` deliveries; `FAN_WARMUP` + `FAN_ROUNDS` rounds, `FAN_GAP` s apart. Target: p99 over
   all (process, round) samples < 250 ms; the slowest process per round is printed too.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Final

import kernel_ext
from bench._common import fmt_latency, header, latency_stats, target
from bench._pg import bench_cluster, settings_line
from bench._pg_workers import register
from bench._server import LineProcess
from kernel_ext import mutation

PAIR_WARMUP: Final = 20
PAIR_COMMITS: Final = 300
PROCS: Final = 4
SUBS: Final = 1_000
FAN_WARMUP: Final = 3
FAN_ROUNDS: Final = 20
FAN_GAP: Final = 0.3
TARGET_P50_MS: Final = 10.0
TARGET_P99_MS: Final = 250.0
TIMEOUT: Final = 30.0  # seconds any single wait may take


@mutation
def seed(ctx: object) -> str:
    """The one watched document."""
    return ctx.db.insert("items", {"value": 0})  # type: ignore[attr-defined]


def _subscriber(url: str, doc_id: str, n: int, first_slot: int) -> LineProcess:
    argv = [sys.executable, "-m", "bench._pg_workers", "subscriber", url, doc_id]
    return LineProcess([*argv, str(n), str(first_slot)], stdin=True)


def _expect(proc: LineProcess, value: int) -> tuple[int, int]:
    """Ask `proc` to wait for `value`; returns `(first_ns, last_ns)` of its deliveries."""
    proc.send("expect", value, TIMEOUT)
    message = proc.messages.get(timeout=TIMEOUT + 10)
    if message[0] != "delivered":
        raise RuntimeError(f"pid {proc.pid}: {message} for value {value}: {proc.tail()}")
    return int(message[1]), int(message[2])


def pair(client: Any, url: str, doc_id: str, counter: list[int]) -> None:
    """Part 1: one commit in A -> one subscription in B."""
    b = _subscriber(url, doc_id, 1, 0)
    try:
        (ready_s,) = b.expect("ready", TIMEOUT)
        call, commit, duration = [], [], []
        store = client.backend.store
        for i in range(PAIR_WARMUP + PAIR_COMMITS):
            counter[0] += 1
            value = counter[0]
            t0 = time.time_ns()
            client.mutation("bench:set_value", {"id": doc_id, "value": value})
            t1 = time.time_ns()
            ts = store.ts  # only this process commits: the ts of that commit
            _, delivered = _expect(b, value)
            if i >= PAIR_WARMUP:
                call.append((delivered - t0) / 1e9)
                commit.append((delivered - ts) / 1e9)
                duration.append((t1 - t0) / 1e9)
        print(f"  1 -> 1: B subscribed in {ready_s * 1e3:.0f} ms; {PAIR_COMMITS} commits")
        stats = latency_stats(call)
        print(f"    call -> on_change (A's mutation() to B's callback)   {fmt_latency(stats)}")
        print(
            f"    commit ts -> on_change (database clock to callback)  "
            f"{fmt_latency(latency_stats(commit))}"
        )
        print(
            f"    A's mutation() duration                               "
            f"{fmt_latency(latency_stats(duration))}",
            flush=True,
        )
        target(
            f"commit in A -> on_change in B p50 < {TARGET_P50_MS:g} ms",
            stats["p50"] / 1e3 < TARGET_P50_MS,
            f"p50 {stats['p50'] / 1e3:.2f} ms, p99 {stats['p99'] / 1e3:.2f} ms",
        )
    finally:
        b.stop()


def fanout(client: Any, url: str, doc_id: str, counter: list[int]) -> None:
    """Part 2: one commit -> PROCS processes x SUBS subscriptions."""
    started = time.perf_counter()
    procs = [_subscriber(url, doc_id, SUBS, p * SUBS) for p in range(PROCS)]
    try:
        ready = [p.expect("ready", 120.0)[0] for p in procs]
        print(
            f"  {PROCS} processes x {SUBS:,} subscriptions: all first results after "
            f"{time.perf_counter() - started:.1f} s (per process {min(ready):.1f}-"
            f"{max(ready):.1f} s after its start)",
            flush=True,
        )
        samples, slowest, spread = [], [], []
        for i in range(FAN_WARMUP + FAN_ROUNDS):
            time.sleep(FAN_GAP)
            counter[0] += 1
            value = counter[0]
            t0 = time.time_ns()
            client.mutation("bench:set_value", {"id": doc_id, "value": value})
            done = [_expect(p, value) for p in procs]
            if i >= FAN_WARMUP:
                lasts = [(last - t0) / 1e9 for _, last in done]
                samples.extend(lasts)
                slowest.append(max(lasts))
                spread.extend((last - first) / 1e9 for first, last in done)
        stats = latency_stats(samples)
        print(f"    call -> all {SUBS:,} delivered, per process       {fmt_latency(stats)}")
        print(
            f"    call -> every process delivered, per round  {fmt_latency(latency_stats(slowest))}"
        )
        print(
            f"    first -> last delivery within a process      "
            f"{fmt_latency(latency_stats(spread))}",
            flush=True,
        )
        target(
            f"{PROCS} x {SUBS:,} subscriptions p99 < {TARGET_P99_MS:g} ms",
            stats["p99"] / 1e3 < TARGET_P99_MS,
            f"p99 {stats['p99'] / 1e3:.1f} ms (p50 {stats['p50'] / 1e3:.1f} ms; slowest "
            f"round {max(slowest) * 1e3:.1f} ms)",
        )
    finally:
        for p in procs:
            p.stop()


def main() -> None:
    header("PostgreSQL fan-out: commit in one process -> on_change in others")
    with bench_cluster() as cluster:
        print(settings_line(cluster.url()), flush=True)
        url = cluster.create_database("store")
        client = kernel_ext.connect(url)
        try:
            register(client)
            client.backend.register("bench:seed", seed)
            doc_id = client.mutation("bench:seed", {})
            counter = [0]
            pair(client, url, doc_id, counter)
            fanout(client, url, doc_id, counter)
        finally:
            client.close()


if __name__ == "__main__":
    main()

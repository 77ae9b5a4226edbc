"""Sustained load: 8 official-client processes issuing mutations and queries for 60 s.

Server: `python -m kernel_ext serve` on 127.0.0.1 (a free port, a fresh store file, the
functions of `bench/server_app/`, 1,000 `items` documents). Clients: 8 processes, each one
official Python `ConvexClient` (one connection) alternating `client.mutation("items:put",
{key, value})` and `client.query("items:get", {key})` on random keys (50/50), each call
waiting for its answer before the next; every answer is checked (a mutation returns the value
it wrote, a query the document of its key). A wrong answer or an exception is an error.

First a 5 s warm-up of the same load (threads, caches and connections reach their steady
state), then the measured 60 s. The server's RSS (VmRSS of /proc/PID/status) is read right
after it starts, at the end of the warm-up ("before"), every 10 s, at the end of the 60 s
("after", clients still connected) and after the clients have disconnected.

Targets: 0 errors; RSS growth over the measured 60 s (after / before - 1) at most 10%.
Throughput and latencies are for information (an absolute figure, so there is no anchor); the
server's CPU time shows how close to saturated it was.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

from bench._common import header, latency_stats, scratch_dir, target
from bench._server import LineProcess, ServerProcess, server_line, worker

CLIENTS: Final = 8
KEYS: Final = 1_000
WARMUP_SECONDS: Final = 5.0
SECONDS: Final = 60.0
SAMPLE_EVERY: Final = 10.0
MAX_GROWTH: Final = 0.10


def _run(clients: list[LineProcess], seconds: float, record: bool) -> list[dict[str, Any]]:
    for c in clients:
        c.send("run", seconds, record)
    return [c.expect("result", seconds + 60)[0] for c in clients]


def main() -> None:
    header(f"server_load: {CLIENTS} client processes, mutations + queries 50/50 for {SECONDS} s")
    with scratch_dir("server-load") as tmp:
        server = ServerProcess(tmp / "store.db")
        clients: list[LineProcess] = []
        try:
            print(server_line(server), flush=True)
            rss_start = server.rss_kib()
            server.call("mutation", "items:seed", {"n": KEYS})
            clients = [worker("load", server.url, i, KEYS) for i in range(CLIENTS)]
            for c in clients:
                c.expect("ready", 60)
            _run(clients, WARMUP_SECONDS, False)
            rss_before = server.rss_kib()
            cpu_before = server.cpu_seconds()

            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def sample() -> None:
                begin = time.monotonic()
                while not stop.wait(SAMPLE_EVERY):
                    samples.append((time.monotonic() - begin, server.rss_kib()))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            results = _run(clients, SECONDS, True)
            elapsed = time.perf_counter() - started
            stop.set()
            sampler.join()
            rss_after = server.rss_kib()
            cpu = server.cpu_seconds() - cpu_before
            for c in clients:
                c.stop()  # EOF on stdin: each client process exits
            time.sleep(1.0)
            rss_idle = server.rss_kib()
            problems = server.problems()
        finally:
            for c in clients:
                c.stop()
            server.stop()

    queries = sum(r["ops"]["query"] for r in results)
    mutations = sum(r["ops"]["mutation"] for r in results)
    errors = sum(r["errors"] for r in results)
    total = queries + mutations
    query_stats = latency_stats([x for r in results for x in r["latencies"]["query"]])
    mutation_stats = latency_stats([x for r in results for x in r["latencies"]["mutation"]])
    per_client = [(r["ops"]["query"] + r["ops"]["mutation"]) / r["seconds"] for r in results]
    print(
        f"  {total:,} operations in {elapsed:.1f} s: {total / elapsed:,.0f} ops/s "
        f"({mutations / elapsed:,.0f} mutations/s + {queries / elapsed:,.0f} queries/s); "
        f"per client {min(per_client):,.0f}-{max(per_client):,.0f} ops/s"
    )
    print(
        f"  latency query    p50 {query_stats['p50'] / 1000:7.2f} ms  "
        f"p99 {query_stats['p99'] / 1000:7.2f} ms  max {query_stats['max'] / 1000:7.2f} ms"
    )
    print(
        f"  latency mutation p50 {mutation_stats['p50'] / 1000:7.2f} ms  "
        f"p99 {mutation_stats['p99'] / 1000:7.2f} ms  max {mutation_stats['max'] / 1000:7.2f} ms"
    )
    print(f"  server CPU {cpu:.1f} s in {elapsed:.1f} s ({cpu / elapsed * 100:.0f}% of one core)")
    trend = ", ".join(f"{t:.0f}s {kib / 1024:.1f}" for t, kib in samples)
    print(
        f"  server RSS (MiB): at start {rss_start / 1024:.1f}, before (after warm-up) "
        f"{rss_before / 1024:.1f}, during [{trend}], after {rss_after / 1024:.1f}, "
        f"clients gone {rss_idle / 1024:.1f}"
    )
    growth = rss_after / rss_before - 1
    print(
        f"  growth over the 60 s: {growth * 100:+.1f}%  (from the server's start: "
        f"{(rss_after / rss_start - 1) * 100:+.1f}%)"
    )
    if errors:
        print(f"  error samples: {[s for r in results for s in r['error_samples']][:5]}")
    if problems:
        print(f"  server reported {len(problems)} problem lines, e.g. {problems[:3]}")
    target("errors == 0", errors == 0, f"{errors} errors in {total:,} operations")
    target(
        "RSS growth <= 10%",
        growth <= MAX_GROWTH,
        f"{rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB ({growth * 100:+.1f}%)",
    )


if __name__ == "__main__":
    main()

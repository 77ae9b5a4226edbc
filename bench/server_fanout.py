"""Fan-out: one mutation updating 1,000 subscriptions held by 100 WebSocket connections.

Server: `python -m kernel_ext serve` on 127.0.0.1 (a free port, a fresh store file, the
functions of `bench/server_app/`). Subscribers: 10 processes x 10 connections x 10
subscriptions, all through the **official Python client** (`convex` on PyPI): each connection
is one `ConvexClient`, and each subscription `items:watch {key: HOT, slot: n}` reads the same
document through the `by_key` index; `slot` (0..999) makes the 1,000 subscriptions distinct,
so the server runs 1,000 queries per change and sends each connection one Transition with 10
QueryUpdated. The processes await the subscriptions' async iterators on one asyncio loop each
(`await sub.__anext__()` does not hold the GIL, unlike the blocking `next()`), so one process
serves its 10 connections concurrently. A writer process (also the official client) runs the
mutation `items:put {key: HOT, value: r}`.

Each repetition: every subscriber process is told the value to expect and starts waiting; then
the writer records `time.monotonic()` (CLOCK_MONOTONIC, shared by all processes) just before
`client.mutation(...)`. A connection's latency is the time until all 10 of its subscriptions
have yielded the new value (the Python client delivers the Transition's results one by one).
Reported: p50 / p99 over every connection of every repetition, the median and worst time
until the last connection has it, and the writer's `mutation()` round trip.

Target: p99 under 250 ms. No anchor is needed for an absolute target; the writer's own
round trip (same run) shows how much of it is the mutation itself.
"""

from __future__ import annotations

import statistics
import time
from typing import Final

from bench._common import header, percentile, scratch_dir, target
from bench._server import LineProcess, ServerProcess, server_line, worker

TARGET_P99_MS: Final = 250.0
PROCESSES: Final = 10
CONNECTIONS: Final = 10  # per process
SUBSCRIPTIONS: Final = 10  # per connection
HOT: Final = 0.0  # the key of the document every subscription reads
WARMUP: Final = 3
REPETITIONS: Final = 20
GAP: Final = 0.3  # seconds of quiet before each mutation
TIMEOUT: Final = 30.0


def main() -> None:
    header("server_fanout: 1 mutation -> 1,000 subscriptions on 100 connections")
    with scratch_dir("server-fanout") as tmp:
        server = ServerProcess(tmp / "store.db")
        subscribers: list[LineProcess] = []
        writer = None
        try:
            print(server_line(server), flush=True)
            server.call("mutation", "items:put", {"key": HOT, "value": 0.0})
            rss_idle = server.rss_kib()
            started = time.perf_counter()
            per_process = CONNECTIONS * SUBSCRIPTIONS
            for p in range(PROCESSES):
                subscribers.append(
                    worker("fanout", CONNECTIONS, SUBSCRIPTIONS, p * per_process, HOT, server.url)
                )
            setup = [s.expect("ready", 120) for s in subscribers]
            for _seconds, value, count in setup:
                assert value == 0.0 and count == per_process, (value, count)
            subscribed = time.perf_counter() - started
            writer = worker("writer", server.url)
            writer.expect("ready", 60)
            print(
                f"  {PROCESSES} processes x {CONNECTIONS} connections x {SUBSCRIPTIONS} "
                f"subscriptions subscribed with first values in {subscribed:.1f} s "
                f"(slowest process {max(s[0] for s in setup):.1f} s); server RSS "
                f"{rss_idle / 1024:.1f} -> {server.rss_kib() / 1024:.1f} MiB",
                flush=True,
            )

            latencies: list[float] = []  # ms, every connection of every measured repetition
            last: list[float] = []  # ms, the slowest connection of each repetition
            mutation_rt: list[float] = []  # ms, the writer's mutation() call
            missing = 0
            cpu_before = server.cpu_seconds()
            for r in range(1, WARMUP + REPETITIONS + 1):
                value = float(r)
                for s in subscribers:
                    s.send("expect", value, TIMEOUT)
                for s in subscribers:
                    s.expect("armed", TIMEOUT)
                time.sleep(GAP)
                writer.send("put", HOT, value)
                sent, returned, result = writer.expect("done", TIMEOUT)
                assert result == value, result
                times: list[float] = []
                for s in subscribers:
                    got_value, got = s.expect("got", TIMEOUT + 5)
                    assert got_value == value
                    if got is None:
                        missing += CONNECTIONS
                    else:
                        times += got
                if r <= WARMUP:
                    continue
                rep = [(t - sent) * 1000 for t in times]
                latencies += rep
                if rep:
                    last.append(max(rep))
                mutation_rt.append((returned - sent) * 1000)
            cpu = server.cpu_seconds() - cpu_before
            problems = server.problems()
        finally:
            if writer is not None:
                writer.stop()
            for s in subscribers:
                s.stop()  # EOF on stdin: each subscriber process exits
            server.stop()

    latencies.sort()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"  {REPETITIONS} repetitions after {WARMUP} warm-up ones, {len(latencies)} connection "
        f"latencies, {missing} connections timed out; server CPU {cpu:.2f} s in total "
        f"({cpu / (WARMUP + REPETITIONS) * 1000:.0f} ms per repetition, including its gap)"
    )
    print(
        f"  mutation sent -> connection has the new value: p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
        f"min {latencies[0]:.1f} ms  max {latencies[-1]:.1f} ms"
    )
    print(
        f"  mutation sent -> last of 100 connections: median {statistics.median(last):.1f} ms  "
        f"worst {max(last):.1f} ms"
    )
    print(
        f"  writer's client.mutation() round trip: median {statistics.median(mutation_rt):.1f} ms"
        f"  worst {max(mutation_rt):.1f} ms"
    )
    if problems:
        print(f"  server reported {len(problems)} problem lines, e.g. {problems[:3]}")
    target(
        "fan-out p99 < 250 ms",
        p99 < TARGET_P99_MS and missing == 0,
        f"p99 {p99:.1f} ms over {len(latencies)} connection updates"
        + (f", {missing} missing" if missing else ""),
    )


if __name__ == "__main__":
    main()

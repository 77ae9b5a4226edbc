"""Round trip through the server with the official Python client, against a raw WebSocket echo.

Server: `python -m kernel_ext serve` on 127.0.0.1 (a free port, a fresh store file under
`bench/.data/tmp/`, the functions of `bench/server_app/`, 1,000 `items` documents). Client: the
official `convex` package (PyPI, a Rust extension) in its own process, timing
`client.query("items:get", {"key": k})` (an indexed point read of a random key) and
`client.mutation("items:put", {"key": k, "value": n})` (an indexed read and a patch). The
official client's `query()` is a subscription: ModifyQuerySet Add -> Transition with the value
(the call returns here) -> ModifyQuerySet Remove -> Transition with QueryRemoved (PROTOCOL.md §0);
`mutation()` returns on the first Transition after its MutationResponse (§2.5).

Anchor, measured in the same run: a `websockets` echo server in another subprocess and a
`websockets` sync client in the client's process, sending a JSON text frame shaped like the
Transition that answers such a query (~300 bytes, `json.dumps` / `json.loads` included) and
waiting for the echo. The three kinds run in interleaved rounds so that the machine's load
affects them alike.

Target: query p50 at most 5x the echo p50. Mutation figures are for information.
"""

from __future__ import annotations

import time
from typing import Final

from bench._common import header, latency_stats, scratch_dir, target
from bench._server import ServerProcess, server_line, worker

TARGET_RATIO: Final = 5.0
KEYS: Final = 1_000
ROUNDS: Final = 8
QUERIES_PER_ROUND: Final = 250  # 2,000 queries and 2,000 echoes
MUTATIONS_PER_ROUND: Final = 125  # 1,000 mutations
WARMUP: Final = 200


def _fmt_ms(stats: dict[str, float]) -> str:
    return (
        f"p50 {stats['p50'] / 1000:7.3f} ms  p99 {stats['p99'] / 1000:7.3f} ms  "
        f"mean {stats['mean'] / 1000:7.3f} ms  max {stats['max'] / 1000:7.3f} ms  "
        f"(n={int(stats['n'])})"
    )


def main() -> None:
    header("server_roundtrip: official Python client round trips vs a raw websockets echo")
    with scratch_dir("server-roundtrip") as tmp:
        server = ServerProcess(tmp / "store.db")
        echo = worker("echo")
        client = None
        try:
            print(server_line(server), flush=True)
            server.call("mutation", "items:seed", {"n": KEYS})
            (echo_port,) = echo.expect("ready", 30)
            started = time.perf_counter()
            client = worker(
                "roundtrip",
                server.url,
                f"ws://127.0.0.1:{echo_port}",
                ROUNDS,
                QUERIES_PER_ROUND,
                MUTATIONS_PER_ROUND,
                WARMUP,
            )
            (result,) = client.expect("result", 240)
            elapsed = time.perf_counter() - started
            problems = server.problems()
        finally:
            if client is not None:
                client.stop()
            echo.stop()
            server.stop()

    query = latency_stats(result["query"])
    mutation = latency_stats(result["mutation"])
    anchor = latency_stats(result["echo"])
    print(
        f"  {ROUNDS} interleaved rounds of {QUERIES_PER_ROUND} echoes, {QUERIES_PER_ROUND} "
        f"queries, {MUTATIONS_PER_ROUND} mutations after {WARMUP} warm-up calls each "
        f"({elapsed:.1f} s); echo frame {result['payload_bytes']} bytes"
    )
    print(f"  echo (anchor)      {_fmt_ms(anchor)}")
    print(f"  client.query()     {_fmt_ms(query)}")
    print(f"  client.mutation()  {_fmt_ms(mutation)}")
    ratio50 = query["p50"] / anchor["p50"]
    ratio99 = query["p99"] / anchor["p99"]
    print(
        f"  query / echo: p50 {ratio50:.2f}x  p99 {ratio99:.2f}x;  mutation / echo: "
        f"p50 {mutation['p50'] / anchor['p50']:.2f}x  p99 {mutation['p99'] / anchor['p99']:.2f}x"
    )
    if problems:
        print(f"  server reported {len(problems)} problem lines, e.g. {problems[:3]}")
    target(
        "query p50 <= 5x echo p50",
        ratio50 <= TARGET_RATIO,
        f"{query['p50'] / 1000:.3f} ms vs {anchor['p50'] / 1000:.3f} ms = {ratio50:.2f}x",
    )


if __name__ == "__main__":
    main()

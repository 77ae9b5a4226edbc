"""Client-side worker processes of the server benchmarks: `python -m bench._server_workers ROLE`.

Each worker prints JSON lines `[label, ...]` on stdout and, where it takes commands, reads JSON
lines `[command, ...]` from stdin. Times are `time.monotonic()` seconds (CLOCK_MONOTONIC, the
same clock in every process of this machine) or durations from `time.perf_counter()`.

Roles:

- `echo`: a `websockets` echo server on 127.0.0.1 (the round-trip anchor).
- `roundtrip URL ECHO_URL ROUNDS QUERIES MUTATIONS WARMUP`: official client `query()` /
  `mutation()` round trips alternating with `websockets` echo round trips of a similar frame.
- `fanout CONNECTIONS SUBSCRIPTIONS FIRST_SLOT KEY URL`: official clients, each connection
  subscribed to SUBSCRIPTIONS distinct `items:watch` queries of one document; reports when
  every connection has seen the value it is told to expect.
- `writer URL`: official client running the mutations the fan-out measures.
- `load URL INDEX KEYS`: official client issuing mutations and queries (50/50) for a while.

Only the standard library, `websockets` and `convex` are imported: workers start fast and
never load the server's code.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any


def emit(label: str, *items: Any) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(json.dumps([label, *items]) + "\n")
    sys.stdout.flush()


def commands() -> Any:
    """The JSON commands arriving on stdin (ends at EOF)."""
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


# -- echo server ------------------------------------------------------------------------------


def echo_server() -> None:
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            emit("ready", port)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)  # until stdin closes

    asyncio.run(main())


# -- round trips ------------------------------------------------------------------------------


def echo_frame(i: int) -> dict[str, Any]:
    """A Transition like the one answering `client.query("items:get", ...)`, as the echo's
    payload (a similar JSON text frame)."""
    return {
        "type": "Transition",
        "startVersion": {"querySet": 2 * i, "identity": 0, "ts": "AAAAAAAAAAA="},
        "endVersion": {"querySet": 2 * i + 1, "identity": 0, "ts": "fzb93hPI6hg="},
        "modifications": [
            {
                "type": "QueryUpdated",
                "queryId": i,
                "value": {"key": float(i % 1000), "name": f"item-{i % 1000:05d}", "value": 0.0},
                "logLines": [],
                "journal": None,
            }
        ],
    }


def roundtrip(
    url: str, echo_url: str, rounds: int, queries: int, mutations: int, warmup: int
) -> None:
    from convex import ConvexClient
    from websockets.sync.client import connect

    client = ConvexClient(url)
    ws = connect(echo_url, compression=None, max_size=None, legacy=True)
    rng = random.Random(7)
    counter = 0

    def run_queries(n: int) -> list[float]:
        out = []
        for _ in range(n):
            key = float(rng.randrange(1000))
            start = time.perf_counter()
            value = client.query("items:get", {"key": key})
            out.append(time.perf_counter() - start)
            if value["key"] != key:
                raise RuntimeError(f"items:get({key}) returned {value}")
        return out

    def run_mutations(n: int) -> list[float]:
        nonlocal counter
        out = []
        for _ in range(n):
            counter += 1
            key = float(rng.randrange(1000))
            start = time.perf_counter()
            value = client.mutation("items:put", {"key": key, "value": float(counter)})
            out.append(time.perf_counter() - start)
            if value != counter:
                raise RuntimeError(f"items:put returned {value}, expected {counter}")
        return out

    def run_echo(n: int) -> list[float]:
        out = []
        for i in range(n):
            frame = echo_frame(i)
            start = time.perf_counter()
            ws.send(json.dumps(frame))
            back = json.loads(ws.recv(timeout=30))
            out.append(time.perf_counter() - start)
            if back["modifications"][0]["queryId"] != i:
                raise RuntimeError("the echo returned another frame")
        return out

    run_queries(warmup)
    run_mutations(warmup // 2)
    run_echo(warmup)
    results: dict[str, list[float]] = {"query": [], "mutation": [], "echo": []}
    for _ in range(rounds):  # interleaved, so that the machine's load affects all alike
        results["echo"] += run_echo(queries)
        results["query"] += run_queries(queries)
        results["mutation"] += run_mutations(mutations)
    ws.close()
    emit("result", {**results, "payload_bytes": len(json.dumps(echo_frame(1)).encode())})


# -- fan-out ----------------------------------------------------------------------------------


def fanout(connections: int, subscriptions: int, first_slot: int, key: float, url: str) -> None:
    from convex import ConvexClient

    async def main() -> None:
        started = time.perf_counter()
        clients = [ConvexClient(url) for _ in range(connections)]
        subs = [
            [
                client.subscribe(
                    "items:watch", {"key": key, "slot": float(first_slot + c * subscriptions + s)}
                )
                for s in range(subscriptions)
            ]
            for c, client in enumerate(clients)
        ]
        first = await asyncio.gather(*(sub.__anext__() for row in subs for sub in row))
        emit("ready", time.perf_counter() - started, first[0]["value"], len(first))

        async def seen(sub: Any, value: float) -> float:
            while True:
                result = await sub.__anext__()
                if result["value"] == value:
                    return time.monotonic()

        async def connection_sees(row: list[Any], value: float) -> float:
            times = await asyncio.gather(*(seen(sub, value) for sub in row))
            return max(times)  # every subscription of this connection has the value

        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                break
            command = json.loads(line)
            if command[0] != "expect":
                break
            value, timeout = float(command[1]), float(command[2])
            waiting = asyncio.gather(*(connection_sees(row, value) for row in subs))
            await asyncio.sleep(0)  # the tasks are awaiting their next values
            emit("armed", value)
            try:
                times = await asyncio.wait_for(waiting, timeout)
            except TimeoutError:
                emit("got", value, None)
                continue
            emit("got", value, times)
        for row in subs:
            for sub in row:
                sub.unsubscribe()

    asyncio.run(main())
    os._exit(0)  # the clients' background threads need not wind down


def writer(url: str) -> None:
    from convex import ConvexClient

    client = ConvexClient(url)
    client.query("items:get", {"key": 0.0})
    emit("ready")
    for command in commands():
        if command[0] != "put":
            break
        key, value = float(command[1]), float(command[2])
        start = time.monotonic()
        result = client.mutation("items:put", {"key": key, "value": value})
        emit("done", start, time.monotonic(), result)
    os._exit(0)


# -- sustained load ---------------------------------------------------------------------------


def load(url: str, index: int, keys: int) -> None:
    from convex import ConvexClient

    client = ConvexClient(url)
    rng = random.Random(index)
    client.query("items:get", {"key": 0.0})
    emit("ready")
    counter = 0
    for command in commands():
        if command[0] != "run":
            break
        seconds, record = float(command[1]), bool(command[2])
        ops = {"query": 0, "mutation": 0}
        errors: list[str] = []
        latencies: dict[str, list[float]] = {"query": [], "mutation": []}
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            counter += 1
            key = float(rng.randrange(keys))
            kind = "mutation" if counter % 2 else "query"
            begin = time.perf_counter()
            try:
                if kind == "mutation":
                    value = float(index * 10_000_000 + counter)
                    result = client.mutation("items:put", {"key": key, "value": value})
                    ok = result == value
                else:
                    result = client.query("items:get", {"key": key})
                    ok = isinstance(result, dict) and result.get("key") == key
            except Exception as exc:
                errors.append(f"{kind}: {exc!r}"[:300])
                continue
            elapsed = time.perf_counter() - begin
            if not ok:
                errors.append(f"{kind}({key}) returned {result!r}"[:300])
                continue
            ops[kind] += 1
            if record:
                latencies[kind].append(round(elapsed, 6))
        emit(
            "result",
            {
                "ops": ops,
                "errors": len(errors),
                "error_samples": errors[:5],
                "seconds": time.monotonic() - started,
                "latencies": latencies,
            },
        )
    os._exit(0)


def main(argv: list[str]) -> None:
    role, args = argv[0], argv[1:]
    if role == "echo":
        echo_server()
    elif role == "roundtrip":
        roundtrip(args[0], args[1], *map(int, args[2:6]))
    elif role == "fanout":
        fanout(int(args[0]), int(args[1]), int(args[2]), float(args[3]), args[4])
    elif role == "writer":
        writer(args[0])
    elif role == "load":
        load(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

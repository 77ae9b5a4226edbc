"""Worker processes of the PostgreSQL benchmarks: `python -m bench._pg_workers ROLE ARGS...`.

Each worker prints JSON lines `[label, ...]` on stdout and reads JSON commands `[command, ...]`
from stdin (it exits at EOF); see `bench._server.LineProcess`. Times are `time.time_ns()`
(CLOCK_REALTIME: the same clock in every process of this machine, and the clock PostgreSQL's
`clock_timestamp()` reads, which gives the commit ts).

Roles:

- `subscriber URL DOC_ID N FIRST_SLOT`: `kernel_ext.connect(URL)`, N live subscriptions to
  `bench:watch {id: DOC_ID, slot: FIRST_SLOT + i}` (distinct arguments, so N distinct live
  queries, all reading the one document). Emits `["ready", seconds to get all first values]`;
  on `["expect", value, timeout]` it waits until all N have delivered `value` through
  `on_change` and emits `["delivered", first_ns, last_ns]` (or `["timeout", how many]`).
- `writer URL MODE IDS`: MODE `store` (`client.mutation("bench:bump", {id})`, a read-modify-
  write of one document, round robin over the comma-separated ids) or `raw` (psycopg 3, the
  same read-modify-write of the raw tables of bench/pg_mutations.py, hex id keys). Emits
  `["ready"]`; on `["run", start_wall_s, seconds]` it waits for the start time, runs until the
  end time and emits `["done", commits, seconds]`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import psycopg

import kernel_ext
from bench.pg_mutations import raw_bump
from kernel_ext import mutation, query


def emit(label: str, *items: Any) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(json.dumps([label, *items]) + "\n")
    sys.stdout.flush()


def commands() -> Any:
    """The JSON commands arriving on stdin (ends at EOF)."""
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


@query
def watch(ctx: Any, id: str, slot: int) -> Any:
    """The document's `value` (`slot` only makes the subscriptions distinct)."""
    doc = ctx.db.get(id)
    return None if doc is None else doc["value"]


@mutation
def set_value(ctx: Any, id: str, value: int) -> None:
    """Set one document's value."""
    ctx.db.patch(id, {"value": value})


@mutation
def bump(ctx: Any, id: str) -> None:
    """Read a document, increment its value, write it back."""
    doc = ctx.db.get(id)
    ctx.db.patch(id, {"value": doc["value"] + 1})


def register(client: Any) -> None:
    """The benchmark functions, on an embedded client."""
    for name, fn in (("watch", watch), ("set_value", set_value), ("bump", bump)):
        client.backend.register(f"bench:{name}", fn)


# -- subscriber -----------------------------------------------------------------------------


class Deliveries:
    """How many subscriptions delivered each value, and when the first and last did."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen: dict[Any, list[int]] = {}  # value -> [count, first_ns, last_ns]

    def on_change(self, value: Any) -> None:
        now = time.time_ns()
        with self.cond:
            entry = self.seen.get(value)
            if entry is None:
                self.seen[value] = [1, now, now]
            else:
                entry[0] += 1
                entry[2] = now
            self.cond.notify_all()

    def wait(self, value: Any, n: int, timeout: float) -> list[int] | None:
        with self.cond:
            done = self.cond.wait_for(lambda: self.seen.get(value, [0])[0] >= n, timeout)
            return self.seen.pop(value) if done else None


def subscriber(url: str, doc_id: str, n: str, first_slot: str) -> None:
    count = int(n)
    client = kernel_ext.connect(url)
    register(client)
    deliveries = Deliveries()
    started = time.perf_counter()
    subs = [
        client.subscribe("bench:watch", {"id": doc_id, "slot": int(first_slot) + i})
        for i in range(count)
    ]
    for sub in subs:
        _ = sub.value  # blocks for the first result
    for sub in subs:
        sub.on_change(deliveries.on_change)
    emit("ready", time.perf_counter() - started)
    for command in commands():
        if command[0] == "expect":
            _, value, timeout = command
            got = deliveries.wait(value, count, timeout)
            if got is None:
                emit("timeout", deliveries.seen.get(value, [0])[0])
            else:
                emit("delivered", got[1], got[2])
    for sub in subs:
        sub.close()
    client.close()


# -- writer ---------------------------------------------------------------------------------


def writer(url: str, mode: str, ids_arg: str) -> None:
    ids = ids_arg.split(",")
    if mode == "store":
        client = kernel_ext.connect(url)
        register(client)
        mutate = client.mutation

        def one(i: int) -> None:
            mutate("bench:bump", {"id": ids[i % len(ids)]})

        close = client.close
    else:
        conn = psycopg.connect(url, autocommit=True)
        keys = [bytes.fromhex(i) for i in ids]

        def one(i: int) -> None:
            raw_bump(conn, keys[i % len(keys)])

        close = conn.close
    one(0)  # warm-up: connections, prepared statements
    emit("ready")
    for command in commands():
        if command[0] == "run":
            _, start_wall, seconds = command
            time.sleep(max(0.0, start_wall - time.time()))
            begin = time.perf_counter()
            end = begin + seconds
            done = 0
            while time.perf_counter() < end:
                one(done)
                done += 1
            emit("done", done, time.perf_counter() - begin)
    close()


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    {"subscriber": subscriber, "writer": writer}[role](*args)

"""Invalidation: with many live subscriptions, a commit re-runs only the affected one.

A store file holds 10,000 items with a `by_key` index. N subscriptions (`client.subscribe`)
each watch one key (`with_index("by_key", eq key).unique()`: a one-document result, a
distinct index range). Each mutation (50 warm-up, then 500 measured) patches an unindexed
field of the document of one randomly chosen watched key. For every mutation the benchmark
asserts that exactly one query execution happened and exactly one `on_change` callback fired
(on the right subscription), and measures:

- commit -> callback: from the commit's publication (a store commit listener, called right
  after SQLite committed) to the `on_change` callback starting on the client's callback thread;
- call -> callback: from just before `client.mutation` to that callback.

Run with N = 10,000 and with N = 10 (the anchor) on identical data. Targets: p50
latency(10,000) / latency(10) <= 1.5 and p50 commit -> callback under 200 us. Also reported:
the time to create the 10,000 subscriptions and to get all their first results.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any, Final

import kernel_ext
from bench._common import (
    ITEMS_SCHEMA,
    fmt_latency,
    header,
    item_fields,
    latency_stats,
    scratch_dir,
    target,
)
from kernel_ext import mutation, query

DOCS: Final = 10_000
MANY: Final = 10_000
FEW: Final = 10
MUTATIONS: Final = 500
WARMUP: Final = 50
TARGET_RATIO: Final = 1.5
TARGET_P50_US: Final = 200.0

_executions = [0]  # query executions (the handler runs once per live-query execution)


@query
def by_key(ctx: Any, key: int) -> Any:
    """The item with that key (one document)."""
    _executions[0] += 1
    return ctx.db.query("items").with_index("by_key", lambda q: q.eq("key", key)).unique()


@mutation
def set_value(ctx: Any, id: str, value: int) -> None:
    """Change one item's (unindexed) value."""
    ctx.db.patch(id, {"value": value})


@mutation
def seed(ctx: Any, start: int, stop: int) -> list[str]:
    """Insert items start..stop-1."""
    return [ctx.db.insert("items", item_fields(k)) for k in range(start, stop)]


def _run(path: Path, n_subs: int) -> dict[str, Any]:
    """Subscribe to `n_subs` keys, then time `MUTATIONS` single-subscription invalidations."""
    client = kernel_ext.connect(path)
    try:
        client.backend.store.set_schema(ITEMS_SCHEMA)
        for name, fn in (("by_key", by_key), ("set_value", set_value), ("seed", seed)):
            client.backend.register(f"bench:{name}", fn)
        ids: list[str] = []
        for start in range(0, DOCS, 5_000):
            ids += client.mutation("bench:seed", {"start": start, "stop": start + 5_000})

        rng = random.Random(n_subs)
        watched = sorted(rng.sample(range(DOCS), n_subs))
        t0 = time.perf_counter()
        subs = [client.subscribe("bench:by_key", {"key": k}) for k in watched]
        created = time.perf_counter() - t0
        for sub, k in zip(subs, watched, strict=True):
            assert sub.result(timeout=300).value["key"] == k
        ready = time.perf_counter() - t0
        live = len(client.backend.subscriptions)
        assert live == n_subs, (live, n_subs)

        clock = time.perf_counter
        fired = threading.Event()
        deliveries: list[tuple[int, float]] = []  # (subscription position, time)

        def make_callback(position: int) -> Any:
            def on_change(_value: Any) -> None:
                deliveries.append((position, clock()))
                fired.set()

            return on_change

        for position, sub in enumerate(subs):
            sub.on_change(make_callback(position))
        commit_times: list[float] = []
        client.backend.store.add_listener(lambda _commit: commit_times.append(clock()))

        call_to_cb, commit_to_cb, call_to_return = [], [], []
        for m in range(WARMUP + MUTATIONS):
            position = rng.randrange(n_subs)
            doc_id = ids[watched[position]]
            fired.clear()
            executions_before, delivered_before = _executions[0], len(deliveries)
            t_call = clock()
            client.mutation("bench:set_value", {"id": doc_id, "value": 1_000_000 + m})
            t_return = clock()
            assert fired.wait(10), "no callback within 10 s"
            # Every callback of this commit's round was queued before client.mutation returned;
            # run an empty task through the (single, in-order) callback thread to drain them.
            client._dispatcher.submit(lambda: None).result(timeout=10)
            new = deliveries[delivered_before:]
            executions = _executions[0] - executions_before
            assert len(new) == 1 and new[0][0] == position, (m, new, position)
            assert executions == 1, (m, executions)
            if m >= WARMUP:
                t_cb, t_commit = new[0][1], commit_times[-1]
                call_to_cb.append(t_cb - t_call)
                commit_to_cb.append(t_cb - t_commit)
                call_to_return.append(t_return - t_call)
        for sub in subs:
            sub.close()
    finally:
        client.close()
    return {
        "created": created,
        "ready": ready,
        "commit_to_cb": latency_stats(commit_to_cb),
        "call_to_cb": latency_stats(call_to_cb),
        "call_to_return": latency_stats(call_to_return),
        "deliveries": len(deliveries),
    }


def main() -> None:
    header(
        f"Invalidation: {MUTATIONS} single-document mutations, each affecting 1 of N live "
        f"one-document subscriptions ({DOCS:,} documents)"
    )
    results = {}
    for n_subs in (FEW, MANY):
        with scratch_dir(f"invalidation-{n_subs}") as tmp:
            results[n_subs] = r = _run(tmp / "store.db", n_subs)
        print(
            f"  N={n_subs:>6,}: created {n_subs:,} subscriptions in {r['created']:.3f} s, all "
            f"first results in {r['ready']:.3f} s "
            f"({r['ready'] / n_subs * 1e6:.0f} us per subscription)"
        )
        print(
            f"    verified: every one of {WARMUP + MUTATIONS} mutations ran exactly 1 query "
            f"execution and fired exactly 1 on_change (total callbacks {r['deliveries']})"
        )
        print(f"    commit -> callback   {fmt_latency(r['commit_to_cb'])}")
        print(f"    call   -> callback   {fmt_latency(r['call_to_cb'])}")
        print(f"    client.mutation      {fmt_latency(r['call_to_return'])}")
    many, few = results[MANY], results[FEW]
    ratio = {
        name: many[name]["p50"] / few[name]["p50"]
        for name in ("commit_to_cb", "call_to_cb", "call_to_return")
    }
    p99_ratio = many["commit_to_cb"]["p99"] / few["commit_to_cb"]["p99"]
    print(
        f"  ratio latency({MANY:,}) / latency({FEW}) at p50: commit->callback "
        f"{ratio['commit_to_cb']:.2f}, call->callback {ratio['call_to_cb']:.2f}, "
        f"client.mutation {ratio['call_to_return']:.2f}; commit->callback at p99 {p99_ratio:.2f}"
    )
    target(
        f"p50 commit->callback latency({MANY:,})/latency({FEW}) <= {TARGET_RATIO}",
        ratio["commit_to_cb"] <= TARGET_RATIO,
        f"{ratio['commit_to_cb']:.2f}",
    )
    p50 = many["commit_to_cb"]["p50"]
    target(
        f"p50 commit->callback with {MANY:,} subscriptions < {TARGET_P50_US:.0f} us",
        p50 < TARGET_P50_US,
        f"{p50:.1f} us (call->callback p50 {many['call_to_cb']['p50']:.1f} us)",
    )


if __name__ == "__main__":
    main()

"""Live views: a one-document patch reaches a maintained view in the same time at any size.

Query `live_view` returns its query, `ctx.db.query("items").with_index("by_x").order("desc")`,
so a live subscription to it keeps a view (kernel_ext/store/views.py) updated from each
commit's changed documents. Its consumed twin `consumed` returns the same query's `.collect()`
and is re-run on every commit that touches it.

Stores: SQLite files (`kernel_ext.connect(path)`) of 1,000 and 1,000,000 documents (table
`items`: `x` int64 indexed by `by_x`, `g`, `v`; see bench/_live.py), built once with
`client.import_dataframe` and copied fresh for each run.

Each commit is `client.mutation("bench:move", {id, x, v})`: a patch of one random document
that gives it a new `x` (so it moves to a random position of the view) and a new `v`.
Measured per commit, with `time.perf_counter`: commit -> on_change, from the store's commit
listener (called right after SQLite committed) to the start of the subscription's `on_change`
callback; also call -> on_change (from just before `client.mutation`) and the duration of
`client.mutation` (which returns once the live queries reflect the commit). Every commit is
checked: exactly one commit and one `on_change`, whose value holds `N` rows with the patched
document at its expected position (tracked with a sorted list of the `x` values).

1. The views over 1,000 and 1,000,000 documents are open at once (two clients) and changed in
   turn, `WARMUP` + `COMMITS` commits each.
2. The view over 1,000,000 documents is closed and its consumed twin opened on the same store;
   its first value must equal the view's last one. `TWIN_WARMUP` + `TWIN_COMMITS` commits.

Targets: p50 commit -> on_change of the 1,000,000-document view / of the 1,000-document one
<= 1.5; the consumed twin's p50 / the view's p50 (both at 1,000,000) >= 100; the view's p50
(1,000,000) < 2 ms.
"""

from __future__ import annotations

import bisect
import gc
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import kernel_ext
from bench._common import header, scratch_dir, target
from bench._live import Probe, Sample, copy_dataset, report
from kernel_ext import mutation, query

SMALL: Final = 1_000
LARGE: Final = 1_000_000
WARMUP: Final = 30
COMMITS: Final = 300
TWIN_WARMUP: Final = 1
TWIN_COMMITS: Final = 8
TARGET_RATIO: Final = 1.5
TARGET_SPEEDUP: Final = 100.0
TARGET_P50_MS: Final = 2.0


@query
def live_view(ctx: Any) -> Any:
    """Every item, by `x` descending, as a maintained view (the query is returned)."""
    return ctx.db.query("items").with_index("by_x").order("desc")


@query
def consumed(ctx: Any) -> Any:
    """The same rows, consumed: re-run on every commit that touches them."""
    return ctx.db.query("items").with_index("by_x").order("desc").collect()


@mutation
def move(ctx: Any, id: str, x: int, v: float) -> None:
    """Give one item a new `x` (its position in the view) and `v`."""
    ctx.db.patch(id, {"x": x, "v": v})


_FUNCTIONS: Final = {"bench:live_view": live_view, "bench:consumed": consumed, "bench:move": move}


class Mover:
    """Picks one-document patches for a store and checks the values they produce.

    Tracks the sorted `x` values, so the position of the moved document in the
    descending view is known without running a query.
    """

    def __init__(self, value: Sequence[Any], seed: int) -> None:
        self.n = len(value)
        self.rng = random.Random(seed)
        self.xs = sorted(doc["x"] for doc in value)
        self.x_of = {doc["_id"]: doc["x"] for doc in value}
        self.ids = list(self.x_of)
        self.taken = set(self.xs)

    def next_args(self) -> dict[str, Any]:
        """A patch of a random document to an unused odd `x` (a random position)."""
        doc_id = self.rng.choice(self.ids)
        x = 2 * self.rng.randrange(self.n) + 1
        while x in self.taken:
            x = 2 * self.rng.randrange(self.n) + 1
        old = self.x_of[doc_id]
        del self.xs[bisect.bisect_left(self.xs, old)]
        self.taken.discard(old)
        bisect.insort(self.xs, x)
        self.taken.add(x)
        self.x_of[doc_id] = x
        return {"id": doc_id, "x": x, "v": self.rng.random()}

    def check(self, value: Sequence[Any], args: dict[str, Any]) -> None:
        """`value` is the descending view after the patch `args`."""
        assert len(value) == self.n, (len(value), self.n)
        position = self.n - 1 - bisect.bisect_left(self.xs, args["x"])
        row = value[position]
        assert row["_id"] == args["id"] and row["x"] == args["x"], (position, row, args)


def _open(path: Path) -> Any:
    client = kernel_ext.connect(path)
    for name, function in _FUNCTIONS.items():
        client.register(name, function)
    return client


def _subscribe(client: Any, ref: str) -> tuple[Any, float]:
    """A subscription to `ref` and the seconds its first value took."""
    started = time.perf_counter()
    sub = client.subscribe(ref)
    sub.result(timeout=600)
    return sub, time.perf_counter() - started


def _views(
    small: Any, large: Any
) -> tuple[dict[int, list[Sample]], dict[int, Any], dict[int, Mover]]:
    """Phase 1: both views open, changed in turn; the samples per size (after the warm-up),
    the subscriptions and their movers."""
    probes, movers, subs = {}, {}, {}
    for n, client in ((SMALL, small), (LARGE, large)):
        sub, first = _subscribe(client, "bench:live_view")
        value = sub.value
        print(
            f"  view over {n:>9,} documents: first value in {first:7.3f} s "
            f"({type(value).__name__} of {len(value):,} rows)",
            flush=True,
        )
        subs[n], probes[n], movers[n] = sub, Probe(client, sub), Mover(value, n)
    # The movers' million-entry containers are new: one collection now moves them out of the
    # young generation, whose collections would otherwise scan them during the commits.
    gc.collect()
    samples: dict[int, list[Sample]] = {SMALL: [], LARGE: []}
    for m in range(WARMUP + COMMITS):
        for n in (SMALL, LARGE):
            args = movers[n].next_args()
            sample, value = probes[n].commit("bench:move", args)
            movers[n].check(value, args)
            if m >= WARMUP:
                samples[n].append(sample)
    return samples, subs, movers


def _twin(large: Any, view_value: Sequence[Any], mover: Mover) -> list[Sample]:
    """Phase 2: the consumed twin on the large store."""
    sub, first = _subscribe(large, "bench:consumed")
    print(f"  consumed twin over {LARGE:,} documents: first value in {first:7.3f} s", flush=True)
    assert view_value == sub.value, "the view's last value differs from a fresh run"
    print("    verified: the view's last value equals the consumed twin's first value")
    probe = Probe(large, sub)
    samples = []
    for m in range(TWIN_WARMUP + TWIN_COMMITS):
        args = mover.next_args()
        sample, value = probe.commit("bench:move", args)
        mover.check(value, args)
        if m >= TWIN_WARMUP:
            samples.append(sample)
    sub.close()
    return samples


def main() -> None:
    header(
        f"Live views: commit -> on_change for a one-document patch, maintained view "
        f"(returned query, by_x desc) over {SMALL:,} vs {LARGE:,} documents, and the consumed "
        f"twin (.collect(), re-run per commit) at {LARGE:,}; SQLite file stores"
    )
    with scratch_dir("live_views") as tmp:
        small, large = _open(copy_dataset(SMALL, tmp)), _open(copy_dataset(LARGE, tmp))
        try:
            samples, views, movers = _views(small, large)
            last = views[LARGE].value
            views[LARGE].close()  # the twin alone on the large store
            twin = _twin(large, last, movers[LARGE])
        finally:
            small.close()
            large.close()
    print(
        f"  verified: every commit made exactly 1 commit and 1 on_change whose value had the "
        f"moved document at its new position ({WARMUP + COMMITS} commits per view, "
        f"{TWIN_WARMUP + TWIN_COMMITS} on the twin; the first {WARMUP} / {TWIN_WARMUP} not "
        f"counted)"
    )
    few = report(f"view over {SMALL:,} documents", samples[SMALL])
    many = report(f"view over {LARGE:,} documents", samples[LARGE])
    rerun = report(f"consumed twin over {LARGE:,} documents (re-run per commit)", twin)
    ratio = many["commit"].p50 / few["commit"].p50
    speedup = rerun["commit"].p50 / many["commit"].p50
    print(
        f"  ratios at p50, commit -> on_change: view {LARGE:,} / view {SMALL:,} = {ratio:.2f} "
        f"(p95 {many['commit'].p95 / few['commit'].p95:.2f}); twin / view at {LARGE:,} = "
        f"{speedup:,.0f}x (call -> on_change {rerun['call'].p50 / many['call'].p50:,.0f}x)"
    )
    target(
        f"p50 commit->on_change view({LARGE:,}) / view({SMALL:,}) <= {TARGET_RATIO}",
        ratio <= TARGET_RATIO,
        f"{ratio:.2f}",
    )
    target(
        f"p50 commit->on_change consumed twin / view at {LARGE:,} >= {TARGET_SPEEDUP:.0f}x",
        speedup >= TARGET_SPEEDUP,
        f"{speedup:,.0f}x ({rerun['commit'].p50:,.1f} ms / {many['commit'].p50:.3f} ms)",
    )
    target(
        f"p50 commit->on_change view over {LARGE:,} documents < {TARGET_P50_MS:g} ms",
        many["commit"].p50 < TARGET_P50_MS,
        f"{many['commit'].p50:.3f} ms (call->on_change p50 {many['call'].p50:.3f} ms)",
    )


if __name__ == "__main__":
    main()

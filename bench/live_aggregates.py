"""Live aggregates: a one-document patch updates a group_by over 1,000,000 documents.

Query `summary` returns `ctx.db.query("items").group_by("g").agg(n=("_id", "count"),
total=("v", "sum"), mean=("v", "mean"), low=("v", "min"), high=("v", "max"))` (20 groups of
about 50,000 documents), so a live subscription to it keeps per-group accumulators
(kernel_ext/store/views.py) updated from each commit's changed documents.

Store: the SQLite file (`kernel_ext.connect(path)`) of 1,000,000 documents of bench/_live.py
(built once with `client.import_dataframe`, copied fresh for each run).

Each commit is `client.mutation("bench:regroup", {id, g, v})`: a patch of one random document
that gives it a random group and a new `v` (so up to two groups change). Measured per commit
with `time.perf_counter`: commit -> on_change, from the store's commit listener (called right
after SQLite committed) to the start of the `on_change` callback; also call -> on_change (from
just before `client.mutation`) and the duration of `client.mutation`. Every commit is checked:
exactly one commit and one `on_change`, whose value has every group's expected count.

Anchor, same run: `df.groupby("g").agg(...)` of the same five outputs with pandas on the same
data (`client.table_df("items")` read before the commits: 1,000,000 rows), `PANDAS_ROUNDS`
times; the ratio is pandas p50 / live p50. After the commits the live value is compared with
pandas on the patched frame (counts, min and max exact; sums and means within 1e-9 relative).

Target: p50 commit -> on_change < 2 ms.
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections import Counter
from typing import Any, Final

import kernel_ext
from bench._common import header, scratch_dir, target
from bench._live import GROUPS, Probe, Sample, Stats, copy_dataset, report, timed
from kernel_ext import mutation, query

DOCS: Final = 1_000_000
WARMUP: Final = 30
COMMITS: Final = 500
PANDAS_ROUNDS: Final = 20
TARGET_P50_MS: Final = 2.0
OUTPUTS: Final = ("n", "total", "mean", "low", "high")


@query
def summary(ctx: Any) -> Any:
    """Count, sum, mean, min and max of `v` per group `g`, as a maintained aggregate."""
    return (
        ctx.db.query("items")
        .group_by("g")
        .agg(
            n=("_id", "count"),
            total=("v", "sum"),
            mean=("v", "mean"),
            low=("v", "min"),
            high=("v", "max"),
        )
    )


@mutation
def regroup(ctx: Any, id: str, g: str, v: float) -> None:
    """Move one item to group `g` with value `v`."""
    ctx.db.patch(id, {"g": g, "v": v})


def _pandas_groupby(df: Any) -> Any:
    return df.groupby("g").agg(
        n=("v", "size"), total=("v", "sum"), mean=("v", "mean"), low=("v", "min"), high=("v", "max")
    )


def _check_counts(value: Any, counts: Counter[str]) -> None:
    got = {row["g"]: row["n"] for row in value}
    assert got == {g: n for g, n in counts.items() if n}, (got, counts)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def _compare(value: Any, expected: Any) -> None:
    """The live value equals pandas' result on the same data (see the module docstring)."""
    rows = list(value)
    assert [row["g"] for row in rows] == list(expected.index), "groups differ"
    for row in rows:
        want = expected.loc[row["g"]]
        assert row["n"] == want["n"] and row["low"] == want["low"], (row, want)
        assert row["high"] == want["high"], (row, want)
        assert _close(row["total"], want["total"]) and _close(row["mean"], want["mean"]), (
            row,
            want,
        )


def _commits(client: Any, sub: Any, df: Any) -> list[Sample]:
    """`WARMUP` + `COMMITS` one-document patches; patches `df` alike (outside the timing)."""
    rng = random.Random(DOCS)
    groups = [f"g{k:02d}" for k in range(GROUPS)]
    counts: Counter[str] = Counter(df["g"])
    _check_counts(sub.value, counts)
    probe = Probe(client, sub)
    gc.collect()  # the frame's and the build's new objects out of the young generation
    g_col, v_col = df.columns.get_loc("g"), df.columns.get_loc("v")
    samples = []
    for m in range(WARMUP + COMMITS):
        row = rng.randrange(len(df))
        args = {"id": df.index[row], "g": rng.choice(groups), "v": rng.gauss(100.0, 15.0)}
        sample, value = probe.commit("bench:regroup", args)
        counts[df.iat[row, g_col]] -= 1
        counts[args["g"]] += 1
        df.iat[row, g_col], df.iat[row, v_col] = args["g"], args["v"]
        _check_counts(value, counts)
        if m >= WARMUP:
            samples.append(sample)
    return samples


def main() -> None:
    header(
        f"Live aggregates: commit -> on_change for a one-document patch, group_by over "
        f"{DOCS:,} documents ({GROUPS} groups; count/sum/mean/min/max), vs a pandas groupby "
        f"recompute of the same data; SQLite file store"
    )
    with scratch_dir("live_aggregates") as tmp:
        client = kernel_ext.connect(copy_dataset(DOCS, tmp))
        try:
            client.register("bench:summary", summary)
            client.register("bench:regroup", regroup)
            started = time.perf_counter()
            df = client.table_df("items")[["g", "v"]]
            print(
                f"  client.table_df('items'): {time.perf_counter() - started:.2f} s "
                f"(dtypes: g {df['g'].dtype}, v {df['v'].dtype})"
            )
            pandas = Stats.of(timed(lambda: _pandas_groupby(df), PANDAS_ROUNDS))
            started = time.perf_counter()
            sub = client.subscribe("bench:summary")
            sub.result(timeout=600)
            first = time.perf_counter() - started
            print(
                f"  live aggregate: first value in {first:.2f} s "
                f"({type(sub.value).__name__} of {len(sub.value)} groups)"
            )
            _compare(sub.value, _pandas_groupby(df))
            samples = _commits(client, sub, df)
            _compare(sub.value, _pandas_groupby(df))
            sub.close()
        finally:
            client.close()
    print(
        f"  verified: {WARMUP + COMMITS} commits (the first {WARMUP} not counted), each made "
        f"exactly 1 commit and 1 on_change with every group's expected count; the first and "
        f"the last value equal pandas' groupby of the same data"
    )
    live = report(f"live group_by over {DOCS:,} documents", samples)
    print(f"  anchor: pandas df.groupby('g').agg(5 outputs) of {DOCS:,} rows")
    print(f"    recompute            {pandas}")
    print(
        f"  ratio pandas recompute p50 / live commit -> on_change p50: "
        f"{pandas.p50 / live['commit'].p50:,.0f}x "
        f"(/ call -> on_change p50: {pandas.p50 / live['call'].p50:,.0f}x)"
    )
    target(
        f"p50 commit->on_change, group_by over {DOCS:,} documents < {TARGET_P50_MS:g} ms",
        live["commit"].p50 < TARGET_P50_MS,
        f"{live['commit'].p50:.3f} ms (call->on_change p50 {live['call'].p50:.3f} ms)",
    )


if __name__ == "__main__":
    main()

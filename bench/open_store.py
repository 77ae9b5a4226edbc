"""Opening a 1,000,000-document store: time and memory, compared with a 1,000-document one.

Each measurement runs in a fresh subprocess (`python -m bench.open_store --child PATH`), so
that nothing allocated earlier pollutes it. The child imports everything first, then reads its
RSS (`VmRSS` in /proc/self/status), times `kernel_ext.connect(path)` plus registering and
running a first trivial query (`ctx.db.query("items").first()`), and reads its RSS again. Both
store files are read once beforehand so that the OS page cache holds them (the same warm-cache
condition for both sizes). Each size is measured `RUNS` times, alternating; medians count.

Targets for 1,000,000 documents: open + first query under 0.5 s and RSS growth under 100 MB;
the ratio to the 1,000-document store shows whether either grows with the store's size.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import kernel_ext
from bench._common import ensure_dataset, header, rss_kib, target, warm_page_cache
from kernel_ext import query

BIG: Final = 1_000_000
SMALL: Final = 1_000
RUNS: Final = 5
TARGET_SECONDS: Final = 0.5
TARGET_MB: Final = 100.0
_ROOT: Final = Path(__file__).resolve().parent.parent


@query
def first(ctx: Any) -> Any:
    """The oldest item."""
    return ctx.db.query("items").first()


def child(path: str) -> None:
    """Measure one open in this (fresh) process and print the figures as JSON."""
    before = rss_kib()
    t0 = time.perf_counter()
    client = kernel_ext.connect(path)
    t1 = time.perf_counter()
    client.backend.register("bench:first", first)
    doc = client.query("bench:first")
    t2 = time.perf_counter()
    after = rss_kib()
    assert doc is not None and doc["key"] == 0, doc
    client.close()
    print(
        json.dumps(
            {
                "connect_s": t1 - t0,
                "open_s": t2 - t0,
                "query_s": t2 - t1,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "rss_growth_kib": after - before,
            }
        )
    )


def _measure(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.open_store", "--child", str(path)],
        cwd=_ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    header(
        f"Opening a store: {BIG:,} vs {SMALL:,} documents, {RUNS} fresh subprocesses each "
        "(connect + first query; RSS growth)"
    )
    big, _ = ensure_dataset(BIG)
    small, _ = ensure_dataset(SMALL)
    warm_page_cache(big, small)
    print(
        f"  files: {big.name} {big.stat().st_size / 2**20:,.0f} MiB, "
        f"{small.name} {small.stat().st_size / 2**20:,.1f} MiB"
    )
    runs: dict[int, list[dict[str, Any]]] = {BIG: [], SMALL: []}
    for _ in range(RUNS):
        runs[SMALL].append(_measure(small))
        runs[BIG].append(_measure(big))
    med: dict[int, dict[str, float]] = {}
    for n, results in runs.items():
        med[n] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        m = med[n]
        print(
            f"  {n:>9,} docs: open+first query {m['open_s'] * 1e3:7.1f} ms (connect "
            f"{m['connect_s'] * 1e3:6.1f} ms, first query {m['query_s'] * 1e3:6.1f} ms)   "
            f"RSS {m['rss_before_kib'] / 1024:6.1f} -> {m['rss_after_kib'] / 1024:6.1f} MiB, "
            f"growth {m['rss_growth_kib'] / 1024:6.2f} MiB   "
            f"(runs: {[round(r['open_s'] * 1e3, 1) for r in results]} ms)"
        )
    time_ratio = med[BIG]["open_s"] / med[SMALL]["open_s"]
    mem_ratio = med[BIG]["rss_growth_kib"] / max(med[SMALL]["rss_growth_kib"], 1)
    print(
        f"  ratio {BIG:,} / {SMALL:,} docs: open time {time_ratio:.2f}x, RSS growth "
        f"{mem_ratio:.2f}x"
    )
    open_s, growth_mb = med[BIG]["open_s"], med[BIG]["rss_growth_kib"] / 1024
    target(
        f"open {BIG:,}-doc store + first query < {TARGET_SECONDS} s",
        open_s < TARGET_SECONDS,
        f"{open_s * 1e3:.1f} ms",
    )
    target(
        f"RSS growth opening {BIG:,}-doc store < {TARGET_MB:.0f} MB",
        growth_mb < TARGET_MB,
        f"{growth_mb:.2f} MiB",
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()

"""Served live views: a one-document patch reaches the remote client's `on_change` in the same
time over 1,000 and 1,000,000 documents (result diffs, `kernel_ext.sync.messages`).

Server: `python -m kernel_ext serve` on 127.0.0.1 over a fresh copy of the `live_views` data
set (bench/_live.py: table `items`, `x` int64 indexed by `by_x`), serving query `live_view`
(it returns `ctx.db.query("items").with_index("by_x").order("desc")`, a maintained view) and
mutation `move` (patch one document's `x` and `v`). Client: the project's remote client
(`kernel_ext.connect(url)`) in this process, subscribed to `live_view`; it asked for result
diffs, so after the first (whole) value each commit reaches it as the changed rows.

Per commit (a random document moved to a random position): call -> on_change, from just
before `client.mutation` to the start of the subscription's `on_change` callback, and the
bytes the client received for it. Every commit is checked: one `on_change` with `N` rows.
The stores are served one after the other, `WARMUP` + `COMMITS` commits each.

Target: p50 call -> on_change over 1,000,000 documents / over 1,000 <= 1.5.
"""

from __future__ import annotations

import random
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Final

import kernel_ext
from bench._common import fmt_latency, header, latency_stats, scratch_dir, target
from bench._live import copy_dataset
from bench._server import SERVER_COMMAND, LineProcess

SIZES: Final = (1_000, 1_000_000)
WARMUP: Final = 20
COMMITS: Final = 200
TARGET_RATIO: Final = 1.5

_SCHEMA: Final = """
from kernel_ext import define_schema, define_table, v

schema = define_schema(
    {
        "items": define_table({"x": v.int64(), "g": v.string(), "v": v.float64()}).index(
            "by_x", ["x"]
        )
    }
)
"""

_FUNCTIONS: Final = """
from kernel_ext import mutation, query


@query
def live_view(ctx):
    return ctx.db.query("items").with_index("by_x").order("desc")


@mutation
def move(ctx, id, x, v):
    ctx.db.patch(id, {"x": x, "v": v})
"""


def _serve(db: Path, app: Path) -> tuple[LineProcess, str]:
    """Start the server; returns it and its URL."""
    server = LineProcess(
        [*SERVER_COMMAND, "serve", "--functions", str(app), "--db", str(db), "--port", "0"]
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in list(server.output):
            if line.startswith("Serving "):
                return server, line.split()[1]
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"the server did not start: {server.tail()}")


def _run(n: int, folder: Path) -> dict[str, Any]:
    """Serve the `n`-document store and time `WARMUP` + `COMMITS` commits."""
    app = folder / "app"
    app.mkdir()
    (app / "schema.py").write_text(textwrap.dedent(_SCHEMA))
    (app / "bench.py").write_text(textwrap.dedent(_FUNCTIONS))
    server, url = _serve(copy_dataset(n, folder), app)
    try:
        with kernel_ext.connect(url) as client:
            started = time.perf_counter()
            sub = client.subscribe("bench:live_view")
            result = sub.result(timeout=600)
            if result.error is not None:
                raise RuntimeError(f"the view failed: {result.error}")
            first = result.value
            loaded = time.perf_counter() - started
            ids = [row["_id"] for row in first[:: max(1, n // 1000)]]
            fired = threading.Event()
            seen: list[tuple[float, int]] = []

            def on_change(value: Any) -> None:
                seen.append((time.perf_counter(), len(value)))
                fired.set()

            sub.on_change(on_change)
            rng = random.Random(n)
            times, sizes = [], []
            for i in range(WARMUP + COMMITS):
                fired.clear()
                before = client.wire_stats()["bytes"]
                called = time.perf_counter()
                # an odd x: a new, unique position (the data set's are even)
                client.mutation("bench:move", id=rng.choice(ids), x=2 * i + 1, v=rng.random())
                if not fired.wait(30):
                    raise RuntimeError("no on_change within 30 s")
                at, rows = seen[-1]
                if rows != n:
                    raise RuntimeError(f"on_change got {rows} rows, expected {n}")
                if i >= WARMUP:
                    times.append(at - called)
                    sizes.append(client.wire_stats()["bytes"] - before)
            stats = client.wire_stats()
    finally:
        server.stop()
    return {"loaded": loaded, "times": times, "bytes": sizes, "stats": stats}


def main() -> None:
    header("served_views: commit -> remote on_change of a served maintained view (diffs)")
    results = {}
    with scratch_dir("served-views") as tmp:
        for n in SIZES:
            folder = tmp / str(n)
            folder.mkdir()
            results[n] = _run(n, folder)
            r = results[n]
            stats = latency_stats(r["times"])
            print(
                f"  {n:>9,} docs: first value in {r['loaded']:.1f} s; call -> on_change "
                f"{fmt_latency(stats)}; {sorted(r['bytes'])[len(r['bytes']) // 2]} bytes per "
                f"commit (p50); QueryUpdated {r['stats'].get('QueryUpdated', 0)}, QueryDiff "
                f"{r['stats'].get('QueryDiff', 0)}",
                flush=True,
            )
    small, large = (latency_stats(results[n]["times"])["p50"] for n in SIZES)
    ratio = large / small
    target(
        "p50 call -> on_change, 1,000,000 / 1,000 documents",
        ratio <= TARGET_RATIO,
        f"{ratio:.2f} (target <= {TARGET_RATIO})",
    )


if __name__ == "__main__":
    main()

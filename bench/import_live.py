"""`import_dataframe` with a live table open: the import must not wait for live re-runs.

Store: `client.import_dataframe("rows", frame)` of 50,000 rows (4 columns, batches of 1,000)
through the public embedded client on a fresh SQLite file, while one live subscription to a
query that `collect()`s the whole table is open (what a LiveTable of the table holds).

Anchor, measured in the same run: the same import on a fresh file without live tables.

Each side runs `ROUNDS` times, alternating; the median counts. Target: with/without <= 3
(before coalescing, every batch waited for the live query to re-run over the whole table).
The live query's re-runs are counted, to show how the batches were coalesced.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Final

import kernel_ext
from bench._common import header, scratch_dir, target
from kernel_ext import query

TARGET_RATIO: Final = 3.0
ROWS: Final = 50_000
BATCH: Final = 1_000
ROUNDS: Final = 3

_runs = [0]


@query
def whole_table(ctx: Any) -> list[dict[str, Any]]:
    """Every row, as a LiveTable of the table subscribes to."""
    _runs[0] += 1
    return ctx.db.query("rows").collect()


def _frame() -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "n": range(ROWS),
            "x": [i * 0.5 for i in range(ROWS)],
            "name": [f"row-{i:06d}" for i in range(ROWS)],
            "even": [i % 2 == 0 for i in range(ROWS)],
        }
    )


def _import(path: Path, frame: Any, *, live: bool) -> tuple[float, int]:
    """Seconds to import `frame` into a fresh store (with or without the live query open),
    and the live query's re-runs during the import."""
    client = kernel_ext.connect(path)
    try:
        client.register("bench:whole_table", whole_table)
        sub = client.subscribe("bench:whole_table") if live else None
        if sub is not None:
            sub.result(timeout=60)
        runs_before = _runs[0]
        start = time.perf_counter()
        client.import_dataframe("rows", frame, batch_size=BATCH, progress=False)
        elapsed = time.perf_counter() - start
        if sub is not None:
            assert len(sub.value) == ROWS, "the live query does not reflect the import"
            sub.close()
        return elapsed, _runs[0] - runs_before
    finally:
        client.close()


def main() -> None:
    header(
        f"import_dataframe of {ROWS:,} rows (batches of {BATCH:,}) with one live collect() "
        f"of the table open, vs without; {ROUNDS} rounds each, median"
    )
    frame = _frame()
    without: list[float] = []
    with_live: list[float] = []
    reruns: list[int] = []
    with scratch_dir("import_live") as tmp:
        for round_ in range(ROUNDS):
            without.append(_import(tmp / f"plain-{round_}.db", frame, live=False)[0])
            elapsed, runs = _import(tmp / f"live-{round_}.db", frame, live=True)
            with_live.append(elapsed)
            reruns.append(runs)
    plain, live = statistics.median(without), statistics.median(with_live)
    print(
        f"  without live tables (anchor): {plain:6.2f} s  ({ROWS / plain:9,.0f} rows/s)  "
        f"rounds {', '.join(f'{s:.2f}' for s in without)}"
    )
    print(
        f"  with one live collect() open: {live:6.2f} s  ({ROWS / live:9,.0f} rows/s)  "
        f"rounds {', '.join(f'{s:.2f}' for s in with_live)}"
    )
    print(
        f"  live re-runs during the import: {', '.join(map(str, reruns))} "
        f"(for {ROWS // BATCH} batches)"
    )
    target(
        f"with live / without <= {TARGET_RATIO:g}",
        live / plain <= TARGET_RATIO,
        f"{live / plain:.2f}",
    )


if __name__ == "__main__":
    main()

"""Shared helpers for the benchmarks: statistics, reporting, machine facts and data sets.

The 1,000,000-document data sets are built once under `bench/.data/` (gitignored) by writing
SQLite directly through the project's persistence layer in large commits, and rebuilt when a
file or its completion marker is missing.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import orjson
from tqdm import tqdm

from kernel_ext import define_schema, define_table, v
from kernel_ext.engine.store import Store
from kernel_ext.persistence.sqlite import CommitRecord, IndexChange, SqlitePersistence
from kernel_ext.store.ids import new_id
from kernel_ext.store.keys import encode_key

DATA_DIR: Final = Path(__file__).resolve().parent / ".data"
_DATASET_FORMAT: Final = 1
_BATCH: Final = 50_000

#: The indexed table of the point-query and open-store benchmarks.
ITEMS_SCHEMA: Final = define_schema(
    {
        "items": define_table(
            {"key": v.int64(), "value": v.int64(), "name": v.string(), "tags": v.array(v.string())}
        ).index("by_key", ["key"])
    }
)


# -- statistics and reporting ----------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0-100) of already sorted values (nearest rank)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99, mean and max of latencies given in seconds, returned in microseconds."""
    us = sorted(s * 1e6 for s in seconds)
    return {
        "p50": percentile(us, 50),
        "p99": percentile(us, 99),
        "mean": statistics.fmean(us),
        "max": us[-1],
        "n": float(len(us)),
    }


def fmt_latency(stats: dict[str, float]) -> str:
    """`p50 .. us  p99 .. us  mean .. us  max .. us  (n=..)`."""
    return (
        f"p50 {stats['p50']:8.1f} us  p99 {stats['p99']:8.1f} us  "
        f"mean {stats['mean']:8.1f} us  max {stats['max']:8.1f} us  (n={int(stats['n'])})"
    )


def target(label: str, ok: bool, detail: str) -> bool:
    """Print one target line; returns `ok`."""
    print(f"  TARGET {'MET   ' if ok else 'MISSED'} {label}: {detail}", flush=True)
    return ok


def header(title: str) -> None:
    """Print the benchmark title and the machine it runs on (after collecting the garbage
    that earlier benchmarks of the same process left)."""
    gc.collect()
    info = machine_info()
    print(f"{title}", flush=True)
    print(
        f"  machine: {info['nproc']} cores, {info['cpu']}, {info['ram_gib']:.1f} GiB RAM, "
        f"Python {info['python']}, SQLite {info['sqlite']}, load average "
        f"{os.getloadavg()[0]:.2f} (other processes skew results)",
        flush=True,
    )


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, RAM, Python and SQLite versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = math.nan
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / (1024 * 1024)
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def rss_kib() -> int:
    """The current resident set size of this process in KiB (from /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def warm_page_cache(*paths: Path) -> None:
    """Read files once so that the OS page cache holds them (warm-cache measurements)."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 23):
                pass


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A fresh directory under bench/.data/tmp, removed afterwards."""
    path = DATA_DIR / "tmp" / f"{name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- data sets -------------------------------------------------------------------------------


def item_fields(k: int) -> dict[str, Any]:
    """The user fields of item `k` (about 100 bytes stored)."""
    return {"key": k, "value": k * 7 % 1000, "name": f"item-{k:07d}", "tags": ["bench", "item"]}


def dataset_paths(n_docs: int) -> tuple[Path, Path]:
    """`(store file, raw sqlite file)` of the `n_docs` data set (not necessarily built)."""
    return DATA_DIR / f"store-{n_docs}.db", DATA_DIR / f"raw-{n_docs}.db"


def cached_build(
    files: Sequence[Path], name: str, expected: dict[str, Any], build: Callable[[], None]
) -> None:
    """Make sure `files` hold what `build()` writes: nothing happens when they all exist and
    the completion marker `DATA_DIR/<name>.json` holds `expected`; otherwise `build()` runs
    (it removes what it replaces) and the marker is written once it returned, so a build
    cut short is done again next time. Prints how long a build took."""
    marker = DATA_DIR / f"{name}.json"
    try:
        if json.loads(marker.read_text()) == expected and all(f.exists() for f in files):
            return
    except (OSError, ValueError):
        pass
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    build()
    marker.write_text(json.dumps(expected))
    print(f"  built {name} in {time.perf_counter() - started:.1f} s", flush=True)


def ensure_dataset(n_docs: int) -> tuple[Path, Path]:
    """Build the data set of `n_docs` items (store file and equivalent raw SQLite file) if a
    file or its completion marker is missing; returns `(store file, raw file)`."""
    store_path, raw_path = dataset_paths(n_docs)
    cached_build(
        (store_path, raw_path),
        f"dataset-{n_docs}",
        {"format": _DATASET_FORMAT, "docs": n_docs},
        lambda: _build(n_docs, store_path, raw_path),
    )
    return store_path, raw_path


def remove_db(path: Path) -> None:
    """Remove an SQLite store file and its companions (WAL, shared memory, lock)."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _build(n_docs: int, store_path: Path, raw_path: Path) -> None:
    tmp_store = store_path.with_name(store_path.name + ".building")
    tmp_raw = raw_path.with_name(raw_path.name + ".building")
    for path in (store_path, raw_path, tmp_store, tmp_raw):
        remove_db(path)

    persistence = SqlitePersistence(tmp_store)
    # A large page cache keeps the random-id B-tree inserts of the build in memory.
    persistence._writer.execute("PRAGMA cache_size=-524288")
    store = Store(persistence)
    store.set_schema(ITEMS_SCHEMA)  # creates the table and builds its (empty) by_key index
    info = store.catalog.table("items")
    assert info is not None
    indexes = [i for i in info.indexes.values() if i.index_id is not None]

    raw = sqlite3.connect(tmp_raw, isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    raw.execute("PRAGMA cache_size=-524288")
    raw.execute(
        "CREATE TABLE items (id TEXT PRIMARY KEY, key INTEGER NOT NULL, body BLOB NOT NULL) "
        "WITHOUT ROWID"
    )
    raw.execute("CREATE UNIQUE INDEX items_by_key ON items (key)")

    creation = time.time() * 1000.0
    ts = store.ts
    with tqdm(total=n_docs, desc=f"build {n_docs:,} docs", unit="doc", mininterval=1.0) as bar:
        for start in range(0, n_docs, _BATCH):
            records: list[CommitRecord] = []
            rows: list[tuple[str, int, bytes]] = []
            for k in range(start, min(start + _BATCH, n_docs)):
                creation = math.nextafter(creation, math.inf)
                doc_id = new_id(info.number)
                doc = {"_id": doc_id, "_creationTime": creation, **item_fields(k)}
                changes = tuple(IndexChange(i.index_id, None, i.key_of(doc)) for i in indexes)
                records.append(CommitRecord(info.number, encode_key((doc_id,)), doc, changes))
                rows.append((doc_id, k, orjson.dumps(doc)))
            records.sort(key=lambda r: r.id_key)  # fewer page splits in the random-id B-tree
            ts = max(ts + 1, time.time_ns())
            persistence.write_commit(ts, records)
            raw.execute("BEGIN")
            raw.executemany("INSERT INTO items VALUES (?, ?, ?)", sorted(rows))
            raw.execute("COMMIT")
            bar.update(len(records))
    store.close()
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    remove_db(store_path)
    tmp_store.rename(store_path)
    Path(f"{tmp_store}.lock").unlink(missing_ok=True)
    tmp_raw.rename(raw_path)

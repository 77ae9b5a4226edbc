"""Shared helpers of the PostgreSQL benchmarks: a throwaway cluster with durable settings.

`bench_cluster()` starts a fresh PostgreSQL cluster with the test suite's `PgCluster`
(tests/pg_cluster.py: Debian's binaries, initdb under a temp dir as the `postgres` user, a free
loopback port) and stops it at the end. The test cluster runs without durability (fsync,
synchronous_commit and full_page_writes off); unless `BENCH_PG_FAST=1` is set, the benchmark
switches them back on with `ALTER SYSTEM` + `pg_reload_conf()` (all three take effect without a
restart), so a commit waits for its WAL flush as on a real server. The store and its raw
psycopg anchor always run on the same cluster with the same settings.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import psycopg

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pg_cluster import PgCluster  # noqa: E402

__all__ = ["DURABLE", "REPORTED", "bench_cluster", "settings_line"]

#: Whether commits are durable (fsync on, synchronous_commit on); `BENCH_PG_FAST=1`: off.
DURABLE: Final = os.environ.get("BENCH_PG_FAST", "") not in ("1", "true", "yes")
_DURABLE_SETTINGS: Final = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
#: The server settings printed in each benchmark's header.
REPORTED: Final = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
)


@contextlib.contextmanager
def bench_cluster() -> Iterator[PgCluster]:
    """A started throwaway cluster (durable unless `BENCH_PG_FAST=1`), stopped and removed
    afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        cluster = PgCluster(Path(tmp))
        try:
            cluster.start()
            if DURABLE:
                with psycopg.connect(cluster.url(), autocommit=True, connect_timeout=10) as conn:
                    for name, value in _DURABLE_SETTINGS.items():
                        conn.execute(f"ALTER SYSTEM SET {name} = {value}")
                    conn.execute("SELECT pg_reload_conf()")
                _wait_for_settings(cluster.url())
            yield cluster
        finally:
            cluster.stop()


def _wait_for_settings(url: str, timeout: float = 10.0) -> None:
    """Wait (bounded) until a new connection sees the durable settings (a reload is
    asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = settings(url)
        if all(shown[name] == value for name, value in _DURABLE_SETTINGS.items()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not take the durable settings: {shown}")
        time.sleep(0.05)


def settings(url: str) -> dict[str, Any]:
    """The `REPORTED` server settings, as `SHOW` gives them."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in REPORTED}  # type: ignore[index]


def settings_line(url: str) -> str:
    """`PostgreSQL 15.x: fsync on, ...` for a benchmark's header."""
    shown = settings(url)
    rest = ", ".join(f"{name} {shown[name]}" for name in REPORTED[1:])
    return f"  PostgreSQL {shown['server_version']} on 127.0.0.1 (throwaway cluster): {rest}"

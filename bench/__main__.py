"""Run every benchmark: `python -m bench` (or `make bench`); `python -m bench NAME` runs one."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "mutations",
    "import_live",
    "point_query",
    "invalidation",
    "open_store",
    "live_views",
    "live_aggregates",
    "widget_bytes",
    "widget_latency",
    "chart_latency",
    "server_roundtrip",
    "server_fanout",
    "server_load",
    "served_views",
    "pg_mutations",
    "pg_fanout",
    "pg_scale",
    "search",
    "storage",
    "vector",
]


def main(argv: list[str]) -> None:
    names = argv or BENCHMARKS
    for name in names:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {BENCHMARKS}")
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])

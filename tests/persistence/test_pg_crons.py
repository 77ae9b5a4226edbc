"""Crons on a PostgreSQL store shared by two processes: each due time runs once.

The processes are tests/pg_workers.py (`repl`), both loading tests/fixtures/cron_app, whose
cron "tick" runs `ticks:record` every second.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_workers import Worker
from polling import wait_for

APP = Path(__file__).parent.parent / "fixtures" / "cron_app"
#: Seconds a worker may take to start (import, connect, load the functions), under load too.
START_S = 30.0


@pytest.fixture
def workers(pg_url: str) -> Iterator[list[Worker]]:
    """Two `repl` workers on one fresh database, started; killed at the end."""
    started = [Worker("repl", pg_url, APP), Worker("repl", pg_url, APP)]
    try:
        for worker in started:
            worker.wait_event(lambda e: e["event"] == "ready", START_S)
        yield started
    finally:
        for worker in started:
            worker.kill()


def _query(worker: Worker, ref: str, /, **args: Any) -> Any:
    return worker.send("query", ref=ref, args=args)["value"]


def test_two_processes_run_each_due_time_of_a_cron_once(workers: list[Worker]) -> None:
    a, b = workers

    def ticks() -> list[dict[str, Any]]:
        return [r for r in _query(a, "ticks:runs") if r["args"] == {"tag": "tick"}]

    done = wait_for(
        lambda: len(t := [r for r in ticks() if r["state"] == "success"]) >= 6 and t, 40
    )
    times = [r["scheduledTime"] for r in ticks()]
    assert len(times) == len(set(times)), times  # one job per due time, from either process
    # Each job ran once: as many recorded runs as finished jobs (seen from the other process).
    wait_for(lambda: len(_query(b, "ticks:all")) >= len(done), 20)
    finished = [r for r in ticks() if r["state"] == "success"]
    recorded = [t for t in _query(b, "ticks:all") if t["tag"] == "tick"]
    assert len(recorded) == len(finished)

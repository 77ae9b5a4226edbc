"""Crons (`crons.py`): definitions, due times, durable runs at most once per due time."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for

import kernel_ext
from kernel_ext import cron_jobs
from kernel_ext.errors import ArgumentError, UnknownFunction, ValidationError, WrongFunctionKind
from kernel_ext.functions.cron_service import CRON_JOBS
from kernel_ext.functions.crons import first_due, next_cron_time, next_due

APP = Path(__file__).parent.parent / "fixtures" / "cron_app"
MINUTE = 60_000.0


def _ms(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp() * 1000.0


def _app(tmp_path: Path, crons: str, name: str = "app") -> Path:
    """The fixture app with another crons.py (None: without one)."""
    folder = tmp_path / name
    shutil.copytree(APP, folder, ignore=shutil.ignore_patterns("__pycache__", "crons.py"))
    if crons is not None:
        (folder / "crons.py").write_text("from kernel_ext import api, cron_jobs\n\n" + crons)
    return folder


def _cron_docs(client: Any) -> dict[str, dict[str, Any]]:
    docs = client.backend.store.read(lambda txn: txn.query(CRON_JOBS, system=True).collect())[0]
    return {doc["name"]: doc for doc in docs}


def _settled(client: Any, now: float) -> bool:
    """Every cron is due after `now` and no run of it is pending or running."""
    docs = _cron_docs(client).values()
    states = {run["state"] for run in client.query("ticks:runs")}
    return all(d["nextRun"] > now for d in docs) and not states & {"pending", "inProgress"}


# -- due times (pure) ---------------------------------------------------------------------


def test_cron_expression_due_times_are_utc_and_strictly_later():
    after = _ms(2024, 1, 1, 12, 3, 10)  # a Monday
    times = [after]
    for _ in range(3):
        times.append(next_cron_time("*/5 * * * *", times[-1]))
    assert times[1:] == [_ms(2024, 1, 1, 12, 5), _ms(2024, 1, 1, 12, 10), _ms(2024, 1, 1, 12, 15)]
    # Weekdays at 09:00: Friday's run, then Monday's.
    friday = _ms(2024, 1, 5, 9, 0)
    assert next_cron_time("0 9 * * 1-5", friday) == _ms(2024, 1, 8, 9, 0)
    # Day of month and day of week both restricted: either one matches (as cron does).
    assert next_cron_time("0 0 1 * 1", after) == _ms(2024, 1, 8, 0, 0)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"type": "hourly", "minuteUTC": 7}, _ms(2024, 1, 31, 13, 7)),
        ({"type": "daily", "hourUTC": 9, "minuteUTC": 30}, _ms(2024, 2, 1, 9, 30)),
        (
            {"type": "weekly", "dayOfWeek": "monday", "hourUTC": 8, "minuteUTC": 0},
            _ms(2024, 2, 5, 8, 0),
        ),
        ({"type": "monthly", "day": 31, "hourUTC": 16, "minuteUTC": 0}, _ms(2024, 1, 31, 16, 0)),
        ({"type": "cron", "cron": "15 7 * * *"}, _ms(2024, 2, 1, 7, 15)),
    ],
)
def test_calendar_schedules_first_and_next_due(schedule, expected):
    now = _ms(2024, 1, 31, 12, 40)
    assert first_due(schedule, now) == expected
    if schedule["type"] == "monthly":  # February and April have no 31st
        march = next_due(schedule, expected, expected)
        assert (march, next_due(schedule, march, march)) == (
            _ms(2024, 3, 31, 16, 0),
            _ms(2024, 5, 31, 16, 0),
        )


def test_interval_runs_at_once_then_keeps_its_cadence_and_skips_missed_runs():
    schedule = {"type": "interval", "minutes": 1}
    start = _ms(2024, 1, 1, 0, 0)
    assert first_due(schedule, start) == start  # Convex: the first run when deployed
    assert next_due(schedule, start, start + 10) == start + MINUTE
    # Ten minutes late (a store closed meanwhile): one run now, the next on the cadence.
    assert next_due(schedule, start + MINUTE, start + 10.5 * MINUTE) == start + 11 * MINUTE
    assert next_due(schedule, start + MINUTE, start + 11 * MINUTE) == start + 12 * MINUTE
    # A calendar schedule late by hours: its first time after now.
    daily = {"type": "daily", "hourUTC": 0, "minuteUTC": 0}
    assert next_due(daily, start, start + 50 * 60 * MINUTE) == _ms(2024, 1, 4, 0, 0)


# -- definitions ----------------------------------------------------------------------------


def test_definitions_follow_convex_rules():
    crons = cron_jobs()
    crons.interval("clear presence", {"seconds": 30}, "presence:clear")
    with pytest.raises(ValidationError, match="'clear presence' is used twice"):
        crons.daily("clear presence", {"hourUTC": 1, "minuteUTC": 0}, "presence:clear")
    with pytest.raises(ValidationError, match="Invalid cron name"):
        crons.interval("a:b", {"seconds": 1}, "m:f")
    with pytest.raises(ValidationError, match="exactly one of seconds, minutes or hours"):
        crons.interval("two", {"seconds": 1, "minutes": 1}, "m:f")
    with pytest.raises(ValidationError, match="whole number > 0"):
        crons.interval("zero", {"seconds": 0}, "m:f")
    with pytest.raises(ValidationError, match="5 fields"):
        crons.cron("four", "* * * *", "m:f")
    with pytest.raises(ValidationError, match="not a valid cron expression"):
        crons.cron("bad", "61 * * * *", "m:f")
    with pytest.raises(ValidationError, match='like "monday"'):
        crons.weekly("w", {"dayOfWeek": "mon", "hourUTC": 1, "minuteUTC": 0}, "m:f")
    with pytest.raises(ValidationError, match="Day of month"):
        crons.monthly("m", {"day": 32, "hourUTC": 1, "minuteUTC": 0}, "m:f")
    with pytest.raises(ValidationError, match="missing"):
        crons.daily("d", {"hourUTC": 1}, "m:f")
    with pytest.raises(ValidationError, match="must be a dict"):
        crons.hourly("h", {"minuteUTC": 5}, "m:f", [1])
    assert [job.name for job in crons] == ["clear presence"]


@pytest.mark.parametrize(
    ("line", "error", "match"),
    [
        (
            'crons.interval("q", {"seconds": 1}, api.ticks.count, {"tag": "x"})',
            WrongFunctionKind,
            "a query: a cron runs a mutation or an action",
        ),
        ('crons.interval("u", {"seconds": 1}, "ticks:nothing")', UnknownFunction, "not defined"),
        (
            'crons.interval("a", {"seconds": 1}, api.ticks.record, {"tag": 1})',
            ArgumentError,
            "validator",
        ),
    ],
)
def test_a_bad_cron_fails_the_load_and_defines_nothing(tmp_path, line, error, match):
    with kernel_ext.connect("memory") as client:
        with pytest.raises(error, match=match):
            client.load_functions(_app(tmp_path, f"crons = cron_jobs()\n{line}\n"))
        assert _cron_docs(client) == {}


# -- running --------------------------------------------------------------------------------


def test_an_unexpected_error_in_the_cron_thread_is_logged_and_the_crons_go_on(caplog):
    failures = iter([RuntimeError("a bug")])

    def clock() -> float:
        if threading.current_thread().name == "convex-crons":
            for failure in failures:  # the thread's first call only
                raise failure
        return time.time() * 1000.0

    with kernel_ext.connect("memory") as client:
        client.backend.crons.clock = clock
        client.load_functions(APP)
        wait_for(lambda: client.query("ticks:count", tag="tick") >= 1, timeout=20)
    assert "the crons could not be read or scheduled" in caplog.text


def test_a_short_interval_fires_repeatedly_into_the_scheduled_history(store_url):
    with kernel_ext.connect(store_url) as client:
        client.load_functions(APP)
        wait_for(lambda: client.query("ticks:count", tag="tick") >= 3, timeout=20)
        runs = [r for r in client.query("ticks:runs") if r["args"] == {"tag": "tick"}]
        assert all(r["name"] == "ticks:record" for r in runs)
        assert [r["state"] for r in runs[:3]] == ["success"] * 3
        times = [r["scheduledTime"] for r in runs]
        seconds = [(b - a) / 1000 for a, b in itertools.pairwise(times)]
        # Each due time once (a run due while the previous one still runs is skipped).
        assert seconds and all(s >= 1 and abs(s - round(s)) < 1e-6 for s in seconds)


@pytest.mark.parametrize(
    "schedule", ['interval("late", {"minutes": 1},', 'cron("late", "* * * * *",']
)
def test_a_restart_after_missed_runs_runs_once_not_in_a_burst(
    durable_store_url, tmp_path, schedule
):
    store_url = durable_store_url
    folder = _app(
        tmp_path, f'crons = cron_jobs()\ncrons.{schedule} api.ticks.record, {{"tag": "late"}})\n'
    )
    start = time.time() * 1000.0 - 10 * MINUTE  # a session ten minutes ago
    with kernel_ext.connect(store_url) as client:
        client.backend.crons.clock = lambda: start
        client.load_functions(folder)
        wait_for(lambda: _settled(client, start), timeout=20)
        # A minute later: the next run is due (jobs due in the past run at once).
        client.backend.crons.clock = lambda: start + 1.05 * MINUTE
        client.backend.crons.wake()
        wait_for(lambda: client.query("ticks:count", tag="late") >= 1, timeout=20)
        wait_for(lambda: _settled(client, start + 1.05 * MINUTE), timeout=20)
        before = client.query("ticks:count", tag="late")
    # Reopened ten minutes later (the real clock): about nine due times were missed.
    reopened = time.time() * 1000.0
    with kernel_ext.connect(store_url) as client:
        client.load_functions(folder)
        wait_for(lambda: client.query("ticks:count", tag="late") > before, timeout=20)
        now = time.time() * 1000.0
        wait_for(lambda: _settled(client, now), timeout=20)
        # The run and the move of the cron's next run are one commit: with the next run in
        # the future, every run due up to now is in the history.
        late = [r for r in client.query("ticks:runs") if r["args"] == {"tag": "late"}]
        assert client.query("ticks:count", tag="late") == len(late)
        missed = [r for r in late[before:] if r["scheduledTime"] < reopened]
        assert len(missed) == 1, late  # one run for the missed ones, not a burst
        assert _cron_docs(client)["late"]["nextRun"] <= now + MINUTE


def test_a_new_crons_py_replaces_the_set_and_removed_crons_stop(tmp_path):
    first = _app(
        tmp_path,
        'crons = cron_jobs()\ncrons.interval("a", {"seconds": 1}, '
        'api.ticks.record, {"tag": "a"})\ncrons.daily("b", {"hourUTC": 3, '
        '"minuteUTC": 0}, api.ticks.record, {"tag": "b"})\n',
        "first",
    )
    second = _app(
        tmp_path,
        'crons = cron_jobs()\ncrons.interval("b", {"seconds": 1}, '
        'api.ticks.record, {"tag": "b"})\n',
        "second",
    )
    without = _app(tmp_path, None, "without")
    with kernel_ext.connect(f"sqlite:///{tmp_path / 'store.db'}") as client:
        client.load_functions(first)
        assert set(_cron_docs(client)) == {"a", "b"}
        wait_for(lambda: client.query("ticks:count", tag="a") >= 1)
        client.load_functions(second)
        docs = _cron_docs(client)
        assert set(docs) == {"b"} and docs["b"]["schedule"] == {"type": "interval", "seconds": 1}
        # Every run of "a" was scheduled before "a" was deleted (a run needs its document):
        # two later runs of "b" show time passing, and "a" ran no more meanwhile.
        runs_of_a = len([r for r in client.query("ticks:runs") if r["args"] == {"tag": "a"}])
        wait_for(lambda: client.query("ticks:count", tag="b") >= 2, timeout=20)
        wait_for(lambda: client.query("ticks:count", tag="a") == runs_of_a)
        assert (
            len([r for r in client.query("ticks:runs") if r["args"] == {"tag": "a"}]) == runs_of_a
        )
        client.load_functions(without)  # a folder without crons.py keeps the crons there are
        assert set(_cron_docs(client)) == {"b"}


def test_describe_functions_lists_the_crons(tmp_path):
    with kernel_ext.connect("memory") as client:
        client.load_functions(APP)
        crons = [f for f in client.describe_functions() if f["kind"] == "cron"]
        assert [(c["path"], c["function"], c["schedule"]) for c in crons] == [
            ("every five minutes", "ticks:record_from_action", "*/5 * * * * (UTC)"),
            ("tick", "ticks:record", "every 1 second"),
        ]
        assert crons[0]["nextRun"] % (5 * MINUTE) == 0
        assert "tick" not in client.functions()  # functions() lists functions only

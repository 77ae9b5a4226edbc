"""Cron jobs: what `crons.py` of a functions folder defines, and when each run is due.

    crons = cron_jobs()
    crons.interval("clear presence", {"seconds": 30}, api.presence.clear)
    crons.cron("digest", "*/5 * * * *", internal.mail.digest, {"limit": 10})
    crons.daily("report", {"hourUTC": 9, "minuteUTC": 30}, api.reports.make)

Convex's rules: a cron's name is unique (ASCII letters, digits, spaces, `_`, `-`, `'`), its
function is a mutation or an action (checked when the folder loads, with its arguments), times
are UTC, cron expressions have the standard 5 fields (minute, hour, day of month, month, day of
week; Sunday is 0; day of month and day of week restricted both: either matches). An interval's
first run is when it is first deployed; a calendar schedule's is its first time after that.

This module is pure (definitions and time arithmetic, in ms since the epoch);
`functions.cron_service` keeps the crons durable and runs them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from croniter import CroniterError, croniter

from kernel_ext.errors import ValidationError
from kernel_ext.store.values import Value, normalize

__all__ = [
    "DAYS_OF_WEEK",
    "CronJob",
    "CronJobs",
    "cron_expression",
    "cron_jobs",
    "describe_schedule",
    "first_due",
    "next_cron_time",
    "next_due",
]

#: `weekly(..., {"dayOfWeek": ...})` names, in cron's order (Sunday is 0).
DAYS_OF_WEEK: Final = (
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
)
_NAME: Final = re.compile(r"[A-Za-z0-9_ '-]+")
_UNIT_MS: Final = {"seconds": 1000, "minutes": 60_000, "hours": 3_600_000}


@dataclass(frozen=True)
class CronJob:
    """One cron: its `schedule` (Convex's JSON form: `{"type": "interval", "seconds": 30}`,
    `{"type": "cron", "cron": "*/5 * * * *"}`, `{"type": "daily", "hourUTC": 9, ...}`), the
    function `ref` it runs (a path, `api` reference or function, resolved on load) and
    `args`."""

    name: str
    schedule: dict[str, Value]
    ref: Any
    args: dict[str, Value]


class CronJobs:
    """The crons of a functions folder (`crons = cron_jobs()` in its `crons.py`)."""

    def __init__(self) -> None:
        self._jobs: dict[str, CronJob] = {}

    def __iter__(self) -> Iterator[CronJob]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def __repr__(self) -> str:
        return f"<cron jobs {sorted(self._jobs)}>"

    def interval(self, name: str, schedule: Mapping[str, Any], ref: Any, args: Any = None) -> None:
        """Run `ref(args)` every `{"seconds": n}`, `{"minutes": n}` or `{"hours": n}` (a whole
        number > 0), the first time when the cron is first deployed.

        Raises:
            ValidationError: a bad name (or one used already), schedule or args.
        """
        options = _options("interval", schedule, set(_UNIT_MS), required=set())
        if len(options) != 1:
            raise ValidationError(
                "crons.interval(): give exactly one of seconds, minutes or hours, e.g. "
                f'{{"minutes": 5}}; got {dict(schedule)!r}'
            )
        ((unit, n),) = options.items()
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValidationError(f"crons.interval(): {unit} must be a whole number > 0, got {n!r}")
        self._add(name, {"type": "interval", unit: n}, ref, args)

    def cron(self, name: str, expression: str, ref: Any, args: Any = None) -> None:
        """Run `ref(args)` at the times of a 5-field cron expression, in UTC
        (`"15 7 * * *"`: every day at 07:15 UTC).

        Raises:
            ValidationError: a bad name (or one used already), expression or args.
        """
        if not isinstance(expression, str) or len(expression.split()) != 5:
            raise ValidationError(
                "crons.cron(): a cron expression has 5 fields (minute hour day-of-month month "
                f'day-of-week), e.g. "*/5 * * * *"; got {expression!r}'
            )
        expression = " ".join(expression.split())
        try:
            next_cron_time(expression, 0.0)
        except (CroniterError, ValueError) as exc:
            raise ValidationError(
                f"crons.cron(): {expression!r} is not a valid cron expression ({exc})"
            ) from None
        self._add(name, {"type": "cron", "cron": expression}, ref, args)

    def hourly(self, name: str, schedule: Mapping[str, Any], ref: Any, args: Any = None) -> None:
        """Run `ref(args)` every hour at `{"minuteUTC": 0..59}`."""
        options = _options("hourly", schedule, {"minuteUTC"})
        self._add(name, {"type": "hourly", "minuteUTC": _minute(options)}, ref, args)

    def daily(self, name: str, schedule: Mapping[str, Any], ref: Any, args: Any = None) -> None:
        """Run `ref(args)` every day at `{"hourUTC": 0..23, "minuteUTC": 0..59}`."""
        options = _options("daily", schedule, {"hourUTC", "minuteUTC"})
        spec: dict[str, Value] = {"type": "daily", "hourUTC": _hour(options)}
        self._add(name, {**spec, "minuteUTC": _minute(options)}, ref, args)

    def weekly(self, name: str, schedule: Mapping[str, Any], ref: Any, args: Any = None) -> None:
        """Run `ref(args)` every week at `{"dayOfWeek": "monday", "hourUTC", "minuteUTC"}`."""
        options = _options("weekly", schedule, {"dayOfWeek", "hourUTC", "minuteUTC"})
        day = options["dayOfWeek"]
        if day not in DAYS_OF_WEEK:
            raise ValidationError(f'Day of week must be a string like "monday", got {day!r}')
        spec: dict[str, Value] = {"type": "weekly", "dayOfWeek": day, "hourUTC": _hour(options)}
        self._add(name, {**spec, "minuteUTC": _minute(options)}, ref, args)

    def monthly(self, name: str, schedule: Mapping[str, Any], ref: Any, args: Any = None) -> None:
        """Run `ref(args)` every month at `{"day": 1..31, "hourUTC", "minuteUTC"}` (a month
        without that day is skipped)."""
        options = _options("monthly", schedule, {"day", "hourUTC", "minuteUTC"})
        day = _whole(options, "day", 1, 31, "Day of month")
        spec: dict[str, Value] = {"type": "monthly", "day": day, "hourUTC": _hour(options)}
        self._add(name, {**spec, "minuteUTC": _minute(options)}, ref, args)

    def _add(self, name: str, schedule: dict[str, Value], ref: Any, args: Any) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationError(
                f"Invalid cron name {name!r}: use ASCII letters, digits, spaces, underscores, "
                "dashes and apostrophes"
            )
        if name in self._jobs:
            raise ValidationError(
                f"Cron name {name!r} is used twice in crons.py: give each cron its own name"
            )
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise ValidationError(
                f"Cron {name!r}: the arguments must be a dict (or None), got {args!r}"
            )
        values = normalize(dict(args))
        assert isinstance(values, dict)
        self._jobs[name] = CronJob(name, schedule, ref, values)


def cron_jobs() -> CronJobs:
    """A new, empty set of cron jobs: `crons = cron_jobs()` in `crons.py`."""
    return CronJobs()


def _options(
    method: str, schedule: Any, allowed: set[str], *, required: set[str] | None = None
) -> dict[str, Any]:
    if not isinstance(schedule, Mapping):
        raise ValidationError(
            f"crons.{method}(): the schedule is a dict with {sorted(allowed)}, got {schedule!r}"
        )
    given = {key: value for key, value in schedule.items() if value is not None}
    unknown = set(given) - allowed
    missing = (allowed if required is None else required) - set(given)
    if unknown or missing:
        raise ValidationError(
            f"crons.{method}(): the schedule takes {sorted(allowed)}; "
            + (f"unknown {sorted(unknown)}" if unknown else f"missing {sorted(missing)}")
        )
    return {key: _integral(value) for key, value in given.items()}


def _integral(value: Any) -> Any:
    """A float with a whole value as an int (JavaScript's numbers are floats)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _whole(options: dict[str, Any], key: str, low: int, high: int, what: str) -> int:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{what} ({key}) must be a whole number from {low} to {high}")
    return value


def _hour(options: dict[str, Any]) -> int:
    return _whole(options, "hourUTC", 0, 23, "Hour of day")


def _minute(options: dict[str, Any]) -> int:
    return _whole(options, "minuteUTC", 0, 59, "Minute of hour")


# -- when runs are due ------------------------------------------------------------------------


def cron_expression(schedule: Mapping[str, Value]) -> str | None:
    """The 5-field cron expression of a calendar schedule; None for an interval."""
    kind = schedule["type"]
    minute, hour = schedule.get("minuteUTC"), schedule.get("hourUTC")
    if kind == "cron":
        return str(schedule["cron"])
    if kind == "hourly":
        return f"{minute} * * * *"
    if kind == "daily":
        return f"{minute} {hour} * * *"
    if kind == "weekly":
        return f"{minute} {hour} * * {DAYS_OF_WEEK.index(str(schedule['dayOfWeek']))}"
    if kind == "monthly":
        return f"{minute} {hour} {schedule['day']} * *"
    return None


def _interval_ms(schedule: Mapping[str, Value]) -> int:
    for unit, ms in _UNIT_MS.items():
        n = schedule.get(unit)
        if isinstance(n, int):
            return n * ms
    raise ValidationError(f"Not an interval schedule: {dict(schedule)!r}")


def next_cron_time(expression: str, after_ms: float) -> float:
    """The first time (ms) strictly after `after_ms` that `expression` matches, in UTC.

    Raises:
        CroniterError: the expression is invalid or matches no time.
    """
    start = dt.datetime.fromtimestamp(after_ms / 1000.0, tz=dt.UTC)
    when = croniter(expression, start).get_next(dt.datetime)
    assert isinstance(when, dt.datetime)
    return when.timestamp() * 1000.0


def first_due(schedule: Mapping[str, Value], now_ms: float) -> float:
    """When a cron defined at `now_ms` first runs: an interval at once, a calendar schedule
    at its first time after now."""
    expression = cron_expression(schedule)
    if expression is None:
        return now_ms
    return next_cron_time(expression, now_ms)


def next_due(schedule: Mapping[str, Value], due_ms: float, now_ms: float) -> float:
    """The run after the one due at `due_ms`, as computed at `now_ms`: always later than
    both. Runs missed meanwhile (the store was closed) are skipped, not made up: an interval
    keeps its cadence (`due + k * period`, the first such time after now), a calendar
    schedule takes its first time after now."""
    expression = cron_expression(schedule)
    if expression is not None:
        return next_cron_time(expression, max(due_ms, now_ms))
    period = _interval_ms(schedule)
    following = due_ms + period
    if following <= now_ms:
        following = due_ms + period * (math.floor((now_ms - due_ms) / period) + 1)
    return following


def describe_schedule(schedule: Mapping[str, Value]) -> str:
    """A schedule for people: `"every 30 seconds"`, `"daily at 09:30 UTC"`, `"*/5 * * * *
    (UTC)"`."""
    kind = schedule["type"]
    at = f"{schedule.get('hourUTC', 0):02}:{schedule.get('minuteUTC', 0):02} UTC"
    if kind == "interval":
        unit = next(u for u in _UNIT_MS if u in schedule)
        n = schedule[unit]
        return f"every {n} {unit.rstrip('s') if n == 1 else unit}"
    if kind == "hourly":
        return f"hourly at minute {schedule['minuteUTC']} UTC"
    if kind == "daily":
        return f"daily at {at}"
    if kind == "weekly":
        return f"weekly on {schedule['dayOfWeek']} at {at}"
    if kind == "monthly":
        return f"monthly on day {schedule['day']} at {at}"
    return f"{schedule['cron']} (UTC)"

"""Time limits of function executions, and containment of what user code may raise.

A served store gives each query and mutation a time limit (`serve --function-time-limit`,
default `DEFAULT_TIME_LIMIT`). Two mechanisms stop a function that runs past it:

- A deadline checked at every `ctx.db` call (`check_deadline`): a handler that keeps reading
  or writing stops at its next call.
- An asynchronous exception (`TimeLimitInterrupt`, injected with
  `PyThreadState_SetAsyncExc` by one watchdog thread) for pure-Python loops that never call
  `ctx.db`; it is injected again every `REINJECT_INTERVAL` while the handler swallows it, or
  when it landed in a callback, where Python drops it (`_drop_lost_interrupts`).

What cannot be stopped: a handler blocked in C (`time.sleep`, a socket read, a long regex
or numpy call) notices the exception only once that call returns. Its worker thread stays
busy until then, but its outcome is fixed at the deadline: it fails, and a mutation commits
nothing.

The asynchronous exception is armed only while the handler itself runs (`run_armed`), never
while the engine validates or commits, and a pending one is cleared when the handler ends, so
the engine's own code is never interrupted.

`contained` turns every `BaseException` a handler raised (`SystemExit`, `KeyboardInterrupt`,
`GeneratorExit`, ...) into a `FunctionAborted` for that call, except a `KeyboardInterrupt` on
the main thread: that is Ctrl-C in a notebook (or a terminal), which must interrupt the caller.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from kernel_ext.errors import FunctionAborted, FunctionTimeout

__all__ = [
    "DEFAULT_TIME_LIMIT",
    "REINJECT_INTERVAL",
    "TimeLimitInterrupt",
    "check_deadline",
    "contained",
    "run_armed",
    "time_limit",
]

#: Seconds a query or mutation of a served store may run (Convex: 1 s of user code).
DEFAULT_TIME_LIMIT: Final = 10.0
#: Seconds between injections while a handler swallows the interrupt.
REINJECT_INTERVAL: Final = 0.5


class TimeLimitInterrupt(BaseException):
    """Injected into a handler's thread when its time is up. A `BaseException`, so that a
    handler's `except Exception` does not swallow it; `run_armed` turns it into
    `FunctionTimeout`."""


@dataclass
class _Limit:
    """The time limit of the function call running on one thread."""

    what: str  # "mutation notebook:f"
    seconds: float
    deadline: float  # time.monotonic()
    thread_id: int = field(default_factory=threading.get_ident)
    armed: bool = False  # the handler runs: the watchdog may inject
    injected: bool = False  # an interrupt was injected (maybe still pending)
    next_injection: float = 0.0

    def error(self) -> FunctionTimeout:
        return FunctionTimeout(
            f"{self.what} ran longer than its time limit of {self.seconds:g} s and was "
            "stopped (a mutation commits nothing). Make it do less per call (an index range, "
            ".take(n), .paginate()), or raise the server's limit (serve "
            "--function-time-limit SECONDS)."
        )


class _Local(threading.local):
    """The time limit of the call running on each thread (None: none). A class attribute
    default instead of `getattr(..., None)`: this is read at every `ctx.db` call."""

    limit: _Limit | None = None


_local = _Local()


def _current() -> _Limit | None:
    return _local.limit


@contextmanager
def time_limit(what: str, seconds: float | None) -> Iterator[None]:
    """Give the function call made inside the block (on this thread) `seconds` to run; None
    or 0 (no limit), or a limit already running on this thread (a nested call), leaves
    things as they are."""
    if not seconds or _current() is not None:
        yield
        return
    _local.limit = _Limit(what, seconds, time.monotonic() + seconds)
    try:
        yield
    finally:
        _local.limit = None


def check_deadline() -> None:
    """Raise `FunctionTimeout` if this thread's function call is past its time limit (called
    at every `ctx.db` call and before a handler starts).

    Raises:
        FunctionTimeout: the time is up.
    """
    limit = _local.limit
    if limit is not None and time.monotonic() > limit.deadline:
        raise limit.error()


def run_armed(handler: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run `handler()` with the watchdog armed (if this thread's call has a time limit).

    Returns `(result, None)` or `(None, what it raised)`; an interrupt becomes
    `FunctionTimeout`. When this returns, no interrupt is pending on this thread.
    """
    limit = _current()
    if limit is None or limit.armed:  # no limit, or a nested call of an armed handler
        try:
            return handler(), None
        except BaseException as exc:  # the caller decides what to contain
            return None, exc
    check_deadline()
    result: Any = None
    error: BaseException | None = None
    armed = started = False
    # The interrupt may fire at any call or loop iteration from the moment `arm` marks the
    # limit armed (still inside `arm`: leaving its lock is such a point) until `disarm` has
    # run under the watchdog's lock: every such point is inside this try, and disarming is
    # idempotent. An interrupt that fires while arming means the time is up: the handler
    # does not start.
    while True:
        try:
            if not armed:
                armed = True
                _WATCHDOG.arm(limit)
            if not started and error is None:
                started = True
                result = handler()
            _WATCHDOG.disarm(limit)
            break
        except BaseException as exc:
            result, error = None, exc
    if (
        limit.injected
        or isinstance(error, TimeLimitInterrupt)
        or time.monotonic() > limit.deadline  # finished late, before the watchdog woke
    ):
        return None, limit.error()
    return result, error


def contained(error: BaseException, what: str) -> BaseException:
    """What a caller is given for `error`, raised by the handler of `what` ("mutation m:f"):
    an `Exception` as it is; any other `BaseException` as `FunctionAborted`, except a
    `KeyboardInterrupt` on the main thread (Ctrl-C must interrupt the caller)."""
    if isinstance(error, Exception):
        return error
    if isinstance(error, KeyboardInterrupt) and threading.current_thread() is _MAIN:
        return error
    aborted = FunctionAborted(
        f"{what} raised {type(error).__name__}"
        + (f"({error})" if str(error) else "")
        + ": a function may not stop the process or its worker thread; it failed instead "
        "(a mutation commits nothing). Raise an Exception (or ConvexError) to fail a call."
    )
    aborted.__cause__ = error
    return aborted


_MAIN: Final = threading.main_thread()


def _set_async_exc(thread_id: int, exception: type[BaseException] | None) -> None:
    """Make `exception` pending on that thread (None: clear a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exception is None else ctypes.py_object(exception)
    )


class _Watchdog:
    """One thread that interrupts armed handlers past their deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._armed: dict[int, _Limit] = {}  # thread id -> its limit
        self._thread: threading.Thread | None = None
        # When the watchdog wakes up next (None: only when notified). A limit due later
        # needs no wake-up: arming is on the path of every served query execution, and a
        # thread switch per execution would cost more than the query.
        self._wakes_at: float | None = None

    def arm(self, limit: _Limit) -> None:
        with self._lock:
            limit.armed = True
            limit.next_injection = limit.deadline
            self._armed[limit.thread_id] = limit
            if self._thread is None:
                _drop_lost_interrupts()
                self._thread = threading.Thread(
                    target=self._run, name="convex-time-limits", daemon=True
                )
                self._thread.start()
            if self._wakes_at is None or limit.next_injection < self._wakes_at:
                self._wakes_at = limit.next_injection
                self._wake.notify()

    def disarm(self, limit: _Limit) -> None:
        """Stop watching `limit`'s thread (call on it) and clear an interrupt still pending."""
        with self._lock:
            if self._armed.get(limit.thread_id) is limit:
                del self._armed[limit.thread_id]
            if limit.injected:
                # NULL clears this thread's pending asynchronous exception, if any.
                _set_async_exc(limit.thread_id, None)
            limit.armed = False

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for limit in list(self._armed.values()):
                    if now >= limit.next_injection:
                        _set_async_exc(limit.thread_id, TimeLimitInterrupt)
                        limit.injected = True
                        limit.next_injection = now + REINJECT_INTERVAL
                wake = min((x.next_injection for x in self._armed.values()), default=None)
                self._wakes_at = wake
                self._wake.wait(None if wake is None else max(0.0, wake - time.monotonic()))


def _drop_lost_interrupts() -> None:
    """An interrupt that lands in a callback Python runs on the handler's thread (a weakref
    or finalizer callback) cannot propagate: Python reports it as "unraisable" and drops it.
    The watchdog injects it again `REINJECT_INTERVAL` later, so such a report says nothing
    worth printing: filter it out of `sys.unraisablehook` (installed once, before the first
    interrupt can be sent; every other report goes to the hook that was there)."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, TimeLimitInterrupt):
            previous(unraisable)

    sys.unraisablehook = hook


_WATCHDOG: Final = _Watchdog()

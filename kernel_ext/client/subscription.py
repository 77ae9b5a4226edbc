"""`Subscription`: the live result of a query, as a value, a DataFrame, callbacks or a stream."""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from kernel_ext.engine.subscriptions import QueryResult
from kernel_ext.errors import TransactionClosed
from kernel_ext.store.views import ResultDiff, rows_of

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CallbackHandle", "Subscription"]

_CLOSED = object()


class CallbackHandle:
    """Returned by `on_change`; `remove()` stops the callbacks."""

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove = remove

    def remove(self) -> None:
        """Stop calling the callback; idempotent."""
        self._remove()


def _reporting_errors(callback: Callable[[Any], None], value: Any) -> None:
    # The executor would keep the exception in a Future nobody reads: print it instead.
    try:
        callback(value)
    except Exception:
        traceback.print_exc()


def _in_context_of_caller(callback: Callable[[Any], None]) -> Callable[[Any], None]:
    """`callback`, to be run in a copy of the current `contextvars` context. ipykernel keeps
    the executing cell's message header in a context variable: output of the callback then
    goes to the cell that registered it."""
    context = contextvars.copy_context()

    def run(value: Any) -> None:
        # A fresh copy per call: one Context cannot be entered by two threads at once.
        context.copy().run(_reporting_errors, callback, value)

    return run


class Subscription:
    """A live query. Created by `client.subscribe(ref, args)`.

    `value` blocks for the first result, then always returns the latest; `on_change`
    callbacks run on the client's callback thread, in order, one result at a time.

    Args:
        subscribe: starts the subscription: `subscribe(on_result) -> unsubscribe`.
        dispatcher: runs the callbacks (a single-threaded executor keeps them in order).
        description: the function path, for messages.
        column_kinds: returns the column kinds `import_dataframe` recorded (by table
            number), so `df` gives imported columns their dtype back.
    """

    def __init__(
        self,
        subscribe: Callable[[Callable[[QueryResult], None]], Callable[[], None]],
        dispatcher: Executor,
        description: str,
        *,
        column_kinds: Callable[[], dict[int, dict[str, dict[str, Any]]]] | None = None,
    ) -> None:
        self._subscribe = subscribe
        self._column_kinds = column_kinds
        self._dispatcher = dispatcher
        self.description = description
        self._cond = threading.Condition()
        self._result: QueryResult | None = None
        self._had_result = False  # on_change fires for results after the first one
        self._callbacks: list[Callable[[Any], None]] = []
        self._result_callbacks: list[Callable[[QueryResult], None]] = []
        self._diff_callbacks: list[Callable[[ResultDiff], None]] = []
        # The latest successful result: a diff applies to it (`on_diff`).
        self._diff_base: QueryResult | None = None
        # Restarted: the next result comes from another live query, whose diffs do not
        # start from `_diff_base` even when their ts says so; it replaces every row.
        self._resync = False
        self._streams: list[queue.SimpleQueue[Any]] = []
        self._closed = False
        self._generation = 0  # results of an earlier subscription (before restart) are stale
        self._unsubscribe = subscribe(self._receiver())

    def __repr__(self) -> str:
        state = "closed" if self._closed else "live"
        return f"<Subscription {self.description} ({state})>"

    # -- results -------------------------------------------------------------------------

    def _receiver(self) -> Callable[[QueryResult], None]:
        generation = self._generation
        return lambda result: self._on_result(result, generation)

    def _on_result(self, result: QueryResult, generation: int) -> None:
        with self._cond:
            if self._closed or generation != self._generation:
                return
            had_result, self._had_result = self._had_result, True
            self._result = result
            self._cond.notify_all()
            callbacks = list(self._callbacks) if had_result and result.error is None else []
            result_callbacks = list(self._result_callbacks)
            if result.error is None and not self._diff_callbacks:
                self._diff_base = result  # (a diff is made only for someone: it may be O(n))
            elif result.error is None:
                # Submitted under the lock: `on_diff` registering meanwhile queues its first
                # diff before or after this one, never across it.
                diff = self._diff_from_base(result)
                for diff_callback in self._diff_callbacks:
                    self._dispatcher.submit(diff_callback, diff)
            for stream in self._streams:
                stream.put(result)
        for callback in callbacks:
            self._dispatcher.submit(callback, result.value)
        for result_callback in result_callbacks:
            self._dispatcher.submit(result_callback, result)

    def _diff_from_base(self, result: QueryResult) -> ResultDiff:
        """The diff from the latest successful value to `result`'s (call with the lock held):
        the view's own when it starts from that value, else one replacing every row."""
        base, self._diff_base = self._diff_base, result
        resync, self._resync = self._resync, False
        if (
            not resync
            and result.diff is not None
            and base is not None
            and result.diff.base_ts == base.ts
        ):
            return result.diff
        previous = 0 if base is None else len(rows_of(base.value))
        return ResultDiff.replacing(previous, result.value, result.ts)

    def result(self, timeout: float | None = None) -> QueryResult:
        """The latest result (value or error), waiting up to `timeout` s for the first.

        Raises:
            TimeoutError: no result within `timeout`.
            TransactionClosed: the subscription is closed.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._result is not None or self._closed, timeout):
                raise TimeoutError(f"No result for {self.description} within {timeout} s")
            if self._result is None:
                raise TransactionClosed(f"The subscription to {self.description} is closed")
            return self._result

    @property
    def value(self) -> Any:
        """The latest result (blocks for the first); raises the query's error if it failed."""
        result = self.result()
        if result.error is not None:
            raise result.error
        return result.value

    @property
    def error(self) -> BaseException | None:
        """The query's current error, or None (also None before the first result)."""
        with self._cond:
            return None if self._result is None else self._result.error

    @property
    def log_lines(self) -> tuple[str, ...]:
        """What the query printed (`print()`, `logging`) in its latest run, as log lines like
        `[LOG] 'text'`; empty before the first result."""
        with self._cond:
            return () if self._result is None else self._result.log_lines

    @property
    def df(self) -> pd.DataFrame:
        """The latest result as a pandas DataFrame (one row per document, `_id` as index).
        `_creationTime` is a UTC datetime column; columns that `import_dataframe` brought in
        get their dtype back (datetimes with their zone, `Int64`, categoricals)."""
        from kernel_ext.client.dataframe import to_dataframe

        value = self.value
        return to_dataframe(value, self._column_kinds)

    def on_change(self, callback: Callable[[Any], None]) -> CallbackHandle:
        """Call `callback(new_value)` for each later successful result.

        The callback runs on a background thread (the client's callback thread, one result at
        a time, in order), not on the thread that registered it: it must not block for long,
        and what it shares with other code needs a lock. It runs in a copy of the
        registering code's context (`contextvars`), so in a Jupyter kernel what it prints or
        displays lands under the cell that called `on_change`, not under whichever cell
        runs at that moment (nor in the log console). An exception it raises is printed
        (with its traceback, to stderr: under that same cell) and does not stop later calls.
        """
        wrapped = _in_context_of_caller(callback)
        with self._cond:
            self._callbacks.append(wrapped)

        def remove() -> None:
            with self._cond, contextlib.suppress(ValueError):
                self._callbacks.remove(wrapped)

        return CallbackHandle(remove)

    def on_result(self, callback: Callable[[QueryResult], None]) -> CallbackHandle:
        """Call `callback(result)` for every result, errors included, starting with the
        current one (for widgets that show loading and error states). Like `on_change`, on
        the callback thread, in the registering code's context."""
        wrapped = _in_context_of_caller(callback)
        with self._cond:
            self._result_callbacks.append(wrapped)
            current = self._result
        if current is not None:
            self._dispatcher.submit(wrapped, current)

        def remove() -> None:
            with self._cond, contextlib.suppress(ValueError):
                self._result_callbacks.remove(wrapped)

        return CallbackHandle(remove)

    def on_diff(self, callback: Callable[[ResultDiff], None]) -> CallbackHandle:
        """Call `callback(diff)` for each successful result, with how it changed the value
        (`ResultDiff`: `ts`, `removed` positions of the previous value, `inserted` and
        `updated` `(position, row)` of the new one; `diff.apply_to(rows)` applies it to a
        list). The first call replaces everything: it inserts every row of the current value.

        A subscription maintained incrementally (a query function that returns its query or
        aggregate, see the README) delivers only the rows that changed; any other delivers
        one diff replacing every row. Like `on_change`, on the callback thread, in order, in
        the registering code's context."""
        wrapped = _in_context_of_caller(callback)
        with self._cond:
            self._diff_callbacks.append(wrapped)
            current = self._diff_base
            if current is not None:
                self._dispatcher.submit(wrapped, ResultDiff.replacing(0, current.value, current.ts))

        def remove() -> None:
            with self._cond, contextlib.suppress(ValueError):
                self._diff_callbacks.remove(wrapped)

        return CallbackHandle(remove)

    def __iter__(self) -> Iterator[Any]:
        """The current value, then each new one, until the subscription is closed; raises
        the query's error if a result is an error."""
        stream: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._cond:
            if self._closed:
                return
            self._streams.append(stream)
            if self._result is not None:
                stream.put(self._result)
        try:
            while True:
                item = stream.get()
                if item is _CLOSED:
                    return
                if item.error is not None:
                    raise item.error
                yield item.value
        finally:
            with self._cond, contextlib.suppress(ValueError):
                self._streams.remove(stream)

    # -- lifecycle -----------------------------------------------------------------------

    def restart(self) -> None:
        """Re-subscribe (e.g. after the client's identity changed); `value` waits for the
        new result."""
        with self._cond:
            if self._closed:
                return
            self._result = None
            self._resync = True  # (the base stays: the rows `on_diff` consumers hold)
            self._generation += 1
        self._unsubscribe()
        self._unsubscribe = self._subscribe(self._receiver())

    def close(self) -> None:
        """Stop the subscription; idempotent. Iterators end."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            for stream in self._streams:
                stream.put(_CLOSED)
        self._unsubscribe()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The server's view of the engine: run functions and subscribe to queries, with results as
`Outcome`s (errors as data) and identities as `Identity`s.

`FunctionRunner` is what the HTTP API and the connection pump need; `BackendRunner` provides
it over a `Backend`. Calls block (SQLite, locks): transports run them on worker threads.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from kernel_ext.engine.logs import capture_logs
from kernel_ext.engine.subscriptions import NOT_SUBSCRIBED, QueryResult, Unsubscribe
from kernel_ext.functions import limits
from kernel_ext.functions.backend import Backend, call_time_limit
from kernel_ext.functions.registration import FunctionKind
from kernel_ext.store.transaction import Transaction
from kernel_ext.store.values import Value
from kernel_ext.sync.outcomes import Outcome, outcome_of_error
from kernel_ext.sync.protocol import Identity

__all__ = ["BackendRunner", "FunctionRunner", "ResultCallback"]

T = TypeVar("T")

#: Receives a subscribed query's outcome and the snapshot ts it was computed at.
ResultCallback = Callable[[Outcome, int], None]


class FunctionRunner(Protocol):
    """Running functions for remote callers."""

    def latest_ts(self) -> int:
        """The timestamp of the latest commit."""

    def when_processed(
        self, ts: int, callback: Callable[[], None], keys: Collection[Hashable] | None = None
    ) -> None:
        """Call `callback()` (from any thread, possibly before returning) once the live
        queries of `keys` (the `key`s of what `subscribe` returned; None: every live query)
        reflect the commits up to `ts` and their results have been handed to the
        subscribers' callbacks."""

    def call(
        self,
        kind: FunctionKind | None,
        path: str,
        args: Any,
        identity: Identity,
        *,
        receipt: str | None = None,
    ) -> tuple[Outcome, int | None]:
        """Run a function of that kind (any kind for None) in its own transaction; returns
        the outcome and, for a mutation, its commit ts (a query: its snapshot ts). A mutation
        with a `receipt` key runs at most once: re-sent, it gets its first result."""

    def query_batch(
        self, queries: Sequence[tuple[str, Any]], identity: Identity
    ) -> tuple[list[Outcome], int]:
        """Run several queries on one snapshot; returns their outcomes and its ts."""

    def subscribe(
        self, path: str, args: Any, identity: Identity, callback: ResultCallback
    ) -> Unsubscribe:
        """Call `callback` with the query's current result and each change (from any thread,
        possibly before returning); returns the unsubscribe function, whose `key` names the
        live query for `when_processed` (None: nothing was subscribed)."""


class BackendRunner:
    """`FunctionRunner` over a `Backend` (thread-safe, like the backend).

    Args:
        backend: the store and its functions.
        time_limit: seconds each query and mutation execution may run (None: no limit); one
            that runs out fails with `FunctionTimeout` (`functions.limits`).
    """

    def __init__(
        self, backend: Backend, *, time_limit: float | None = limits.DEFAULT_TIME_LIMIT
    ) -> None:
        self.backend = backend
        self.time_limit = time_limit
        backend.store.keep_history()  # for reads as of an earlier ts (`query_at`)

    def latest_ts(self) -> int:
        """The timestamp of the latest commit."""
        return self.backend.store.ts

    def when_processed(
        self, ts: int, callback: Callable[[], None], keys: Collection[Hashable] | None = None
    ) -> None:
        """Call `callback()` once the live queries of `keys` (None: every one) reflect
        commit `ts` (never blocks): a slow query of another client does not delay it."""
        self.backend.subscriptions.call_when_processed(ts, callback, keys)

    def call(
        self,
        kind: FunctionKind | None,
        path: str,
        args: Any,
        identity: Identity,
        *,
        receipt: str | None = None,
    ) -> tuple[Outcome, int | None]:
        """Run a function; its errors become failed outcomes, its output log lines. A
        mutation with a `receipt` key runs at most once (`functions.receipts`)."""
        result, error, lines = _captured(
            lambda: self.backend.call_with_ts(
                path,
                args,
                kind=kind,
                identity=identity.user,
                public_only=not identity.admin,
                time_limit=self.time_limit,
                receipt=receipt,
            )
        )
        if result is None:
            return _outcome(None, error, lines), None
        value, ts = result
        return Outcome.ok(value, lines), ts

    def query_batch(
        self, queries: Sequence[tuple[str, Any]], identity: Identity
    ) -> tuple[list[Outcome], int]:
        """Run every query on one snapshot (each may fail on its own)."""

        def run_all(txn: Transaction) -> list[Outcome]:
            return [self._query_in(txn, path, args, identity) for path, args in queries]

        try:
            outcomes, _, ts = self.backend.store.read(run_all)
        except Exception as exc:
            failure = outcome_of_error(exc)
            return [failure for _ in queries], self.latest_ts()
        return outcomes, ts

    def query_at(self, path: str, args: Any, identity: Identity, ts: int) -> Outcome:
        """Run a query as of commit `ts` (its errors become failed outcomes).

        Raises:
            HistoryUnavailable: that result cannot be known exactly.
        """
        return self.backend.store.read_as_of(
            ts, lambda txn: self._query_in(txn, path, args, identity)
        )

    def _query_in(self, txn: Transaction, path: str, args: Any, identity: Identity) -> Outcome:
        def run() -> Value:
            function = self.backend.registry.lookup(path, "query", public_only=not identity.admin)
            with call_time_limit(function, self.time_limit):
                return self.backend.invoke(function, args, txn, identity.user)

        return _outcome(*_captured(run))

    def subscribe(
        self, path: str, args: Any, identity: Identity, callback: ResultCallback
    ) -> Unsubscribe:
        """Subscribe; a query that cannot be subscribed (unknown, bad arguments) reports its
        failure through `callback` at once and returns a no-op unsubscribe."""

        def on_update(result: QueryResult) -> None:
            if result.error is None:  # no copy, no encoding: O(1) whatever the value's size
                outcome = Outcome.ok(result.value, result.log_lines, result.diff)
            else:
                outcome = _outcome(None, result.error, result.log_lines)
            callback(outcome, result.ts)

        try:
            return self.backend.subscribe(
                path,
                args,
                identity.user,
                on_update,
                public_only=not identity.admin,
                time_limit=self.time_limit,
            )
        except Exception as exc:
            callback(outcome_of_error(exc), self.latest_ts())
            return NOT_SUBSCRIBED


def _captured(
    run: Callable[[], T],
) -> tuple[T | None, BaseException | None, tuple[str, ...]]:
    """`run()` with its output captured as log lines: `(result, None, lines)`, or
    `(None, the exception it raised, lines)`. A `BaseException` that is not an `Exception`
    (`SystemExit`, ...) is an error of that call too (`limits.contained`): it must not stop a
    worker thread, let alone the server."""
    with capture_logs() as logs:
        try:
            return run(), None, logs.finish()
        except BaseException as exc:
            error = limits.contained(exc, "the function")
            if not isinstance(error, Exception):  # Ctrl-C on the main thread
                raise
            return None, error, logs.finish()


def _outcome(value: Value, error: BaseException | None, lines: tuple[str, ...]) -> Outcome:
    """What a client is told of one execution. `outcome_of_error` runs outside any capture:
    the server's own log records about a failure must never reach the caller's log lines."""
    if error is not None:
        return replace(outcome_of_error(error), log_lines=lines)
    return Outcome.ok(value, lines)

"""Live queries: run once, re-run when a commit writes into their read set, push changes.

Query executions for subscriptions happen in rounds, one round at a time. A round takes the
commits published since the last round, finds the live queries whose read sets contain a
written key (`SubscriptionIndex`, cost proportional to the matches), and re-runs those plus
newly subscribed ones together on a single snapshot, so every result of a round comes from one
timestamp. A result equal to the previous one is not delivered. Identical subscriptions (same
key) share one execution.

A worker thread runs the rounds, except that `wait_processed(ts)` (which blocks until every
live query reflects commit `ts`: the client calls it after a mutation so that its subscriptions
read its writes) runs a pending round itself if the worker has not started it yet: the caller
would wait for that round anyway, and waking the worker would add a thread hand-off to the
latency of every update.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kernel_ext.engine.logs import capture_logs
from kernel_ext.engine.store import Commit, Store
from kernel_ext.store.keys import encode_value
from kernel_ext.store.matching import SubscriptionIndex
from kernel_ext.store.readset import ReadSet
from kernel_ext.store.transaction import Transaction
from kernel_ext.store.values import Value

__all__ = ["LiveQuery", "QueryResult", "SubscriptionManager"]

_log = logging.getLogger(__name__)

Runner = Callable[[Transaction], Value]


@dataclass(frozen=True)
class QueryResult:
    """One result of a live query: a value, or the error it raised, at timestamp `ts`, with
    the log lines its execution printed (`engine.logs`)."""

    value: Value
    error: BaseException | None
    ts: int
    log_lines: tuple[str, ...] = ()

    def fingerprint(self) -> Any:
        """Equal for results a client should not be told about twice (value and log lines
        alike, as Convex compares them)."""
        return (self._value_fingerprint(), self.log_lines)

    def _value_fingerprint(self) -> Any:
        if self.error is not None:
            return (
                "error",
                type(self.error).__name__,
                str(self.error),
                repr(getattr(self.error, "data", None)),
            )
        # orjson (C) tells apart what a client can tell apart (1 and 1.0, true and 1, -0.0 and
        # 0.0), in a tenth of the time of the exact key encoding. It refuses bytes and writes
        # NaN and infinities as `null`: those (and null itself) take the exact encoding.
        try:
            data = orjson.dumps(self.value, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            data = b"null"
        if b"null" not in data:
            return ("json", data)
        try:
            return ("value", encode_value(self.value))
        except TypeError:
            return ("value", repr(self.value))


@dataclass(eq=False)
class LiveQuery:
    """A subscribed query execution shared by every subscriber with the same key."""

    key: Hashable
    runner: Runner
    subscribers: list[Callable[[QueryResult], None]] = field(default_factory=list)
    result: QueryResult | None = None
    fingerprint: Any = None
    #: The read set's intervals as last registered in the subscription index.
    intervals: dict[str, list[tuple[bytes, bytes]]] | None = None


class SubscriptionManager:
    """Keeps live queries up to date with commits (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the worker waits for commits here
        self._done = threading.Condition(self._lock)  # wait_processed waits here
        self._waiting = 0  # threads in wait_processed: a commit notifies only if there are any
        self._queries: dict[Hashable, LiveQuery] = {}
        self._index = SubscriptionIndex()
        self._commits: list[Commit] = []
        self._new: list[LiveQuery] = []
        self._processed_ts = store.ts
        # (ts, tie-breaker, callback) of `call_when_processed`, earliest ts first.
        self._when_processed: list[tuple[int, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._busy = False  # a round is running: later commits queue behind it
        self._closed = False
        store.add_listener(self._on_commit)
        self._thread = threading.Thread(target=self._run, name="convex-subscriptions", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._queries)

    # -- API -----------------------------------------------------------------------------

    def subscribe(
        self, key: Hashable, runner: Runner, on_update: Callable[[QueryResult], None]
    ) -> Callable[[], None]:
        """Call `on_update(result)` with the query's current result and each changed one.

        `on_update` runs on the thread that runs the round (the worker, or one waiting in
        `wait_processed`), one call at a time, and must return quickly. Returns a function that
        unsubscribes.
        """
        with self._lock:
            live = self._queries.get(key)
            if live is None:
                live = LiveQuery(key, runner)
                self._queries[key] = live
                self._new.append(live)
                self._work.notify_all()
            live.subscribers.append(on_update)
            current = live.result
        if current is not None:
            on_update(current)

        def unsubscribe() -> None:
            with self._lock:
                with contextlib.suppress(ValueError):
                    live.subscribers.remove(on_update)
                if not live.subscribers and self._queries.get(key) is live:
                    del self._queries[key]
                    self._index.remove(key)

        return unsubscribe

    def rerun(self, predicate: Callable[[Hashable], bool]) -> None:
        """Re-run (in the next round) every live query whose key satisfies `predicate`, e.g.
        all subscriptions of a function that was just redefined."""
        with self._lock:
            for key, live in self._queries.items():
                if predicate(key) and live not in self._new:
                    self._new.append(live)
            self._work.notify_all()

    def wait_processed(self, ts: int, timeout: float | None = None) -> bool:
        """Block until every live query reflects commit `ts`; False on timeout. Without a
        timeout, the caller may run the pending round itself (see the module docstring)."""
        if self._processed_ts >= ts:  # it only grows: no need to lock to see that it is done
            return True
        if timeout is None:
            self._run_pending_round()
        with self._lock:
            self._waiting += 1
            try:
                return self._done.wait_for(
                    lambda: self._processed_ts >= ts or self._closed, timeout
                )
            finally:
                self._waiting -= 1

    def call_when_processed(self, ts: int, callback: Callable[[], None]) -> None:
        """Call `callback()` once every live query reflects commit `ts`: at once on this
        thread if they do already, else on the thread that completes that work: the worker
        (after the round's results were handed to their subscribers) or, for a commit no live
        query depends on, the committing thread while it holds the store's commit lock. So it
        must return quickly and must not use the store. Never called if the manager closes
        first."""
        with self._lock:
            if self._processed_ts < ts and not self._closed:
                heapq.heappush(self._when_processed, (ts, next(self._sequence), callback))
                return
            if self._closed:
                return
        callback()

    def close(self) -> None:
        """Stop the worker; idempotent."""
        with self._lock:
            self._closed = True
            self._when_processed.clear()  # never called now: drop what they hold on to
            self._work.notify_all()
            self._done.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # -- worker --------------------------------------------------------------------------

    def _on_commit(self, commit: Commit) -> None:
        with self._lock:
            idle = not (self._busy or self._commits or self._new)
            if idle and (not self._queries or not self._index.match(commit.keys)):
                # Nothing live depends on this commit: it is processed already, and the worker
                # need not wake up. (The common case of an embedded store: kept lean.)
                self._mark_processed(commit.ts)
                if not self._when_processed:
                    return
                ready = self._due_callbacks()
            else:
                self._commits.append(commit)
                self._work.notify_all()
                return
        _call_all(ready)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(
                    lambda: self._closed or ((self._commits or self._new) and not self._busy)
                )
                if self._closed:
                    return
                commits, to_run = self._take_round()
            self._run_round(commits, to_run)

    def _run_pending_round(self) -> None:
        """Run the next round on this thread, unless there is none or one is running."""
        with self._lock:
            if self._closed or self._busy or not (self._commits or self._new):
                return
            commits, to_run = self._take_round()
        self._run_round(commits, to_run)

    def _take_round(self) -> tuple[list[Commit], set[LiveQuery]]:
        """Claim the queued work for a round (call with the lock held)."""
        commits, self._commits = self._commits, []
        fresh, self._new = self._new, []
        self._busy = True
        to_run = {
            self._queries[k]
            for c in commits
            for k in self._index.match(c.keys)
            if k in self._queries
        }
        to_run.update(fresh)
        return commits, to_run

    def _run_round(self, commits: list[Commit], to_run: set[LiveQuery]) -> None:
        try:
            self._round(to_run)
        except Exception:  # a broken store must not kill the worker silently
            _log.exception("live query round failed")
        except BaseException:
            # Interrupted (a waiting caller's KeyboardInterrupt): the next round redoes it.
            with self._lock:
                self._commits[:0] = commits
                self._new.extend(to_run)
                self._busy = False
                self._work.notify_all()
            raise
        with self._lock:
            self._busy = False
            ready = []
            if commits:
                self._mark_processed(commits[-1].ts)
                ready = self._due_callbacks()
            if self._commits or self._new:
                self._work.notify_all()  # queued meanwhile; the worker waits while `_busy`
        _call_all(ready)

    def _mark_processed(self, ts: int) -> None:
        """Record that commits up to `ts` are processed and wake `wait_processed` (call with
        the lock held)."""
        self._processed_ts = max(self._processed_ts, ts)
        if self._waiting:
            self._done.notify_all()

    def _due_callbacks(self) -> list[Callable[[], None]]:
        """Take the `call_when_processed` callbacks now due (call with the lock held; call
        them after releasing it)."""
        ready = []
        while self._when_processed and self._when_processed[0][0] <= self._processed_ts:
            ready.append(heapq.heappop(self._when_processed)[2])
        return ready

    def _round(self, to_run: set[LiveQuery]) -> None:
        if not to_run:
            return
        snapshot = self._store.snapshot()
        try:
            for live in to_run:
                self._execute(live, snapshot)
        finally:
            self._store.close_snapshot(snapshot)

    def _execute(self, live: LiveQuery, snapshot: Any) -> None:
        txn_holder: list[Transaction] = []

        def run(txn: Transaction) -> Value:
            txn_holder.append(txn)
            return live.runner(txn)

        read_set: ReadSet | None
        with capture_logs() as logs:
            try:
                value, read_set, ts = self._store.read(run, snapshot)
                error: Exception | None = None
            except Exception as exc:  # the query's own error is its result
                read_set = txn_holder[0].read_set.finalize() if txn_holder else None
                value, error, ts = None, exc, snapshot.ts
        result = QueryResult(value, error, ts, logs.finish())
        fingerprint = result.fingerprint()
        with self._lock:
            if self._queries.get(live.key) is not live:
                return  # unsubscribed meanwhile
            # A re-run usually reads the same ranges: compare them (in C) before re-registering.
            if read_set is not None and read_set.intervals != live.intervals:
                self._index.register(live.key, read_set.all_intervals())
                live.intervals = read_set.intervals
            if live.result is not None and fingerprint == live.fingerprint:
                return
            live.result, live.fingerprint = result, fingerprint
            subscribers = list(live.subscribers)
        for deliver in subscribers:
            try:
                deliver(result)
            except Exception:
                _log.exception("subscriber callback failed")


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            _log.exception("call_when_processed callback failed")

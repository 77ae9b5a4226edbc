"""Live queries: run once, re-run when a commit writes into their read set, push changes.

One worker thread does all query executions for subscriptions, in rounds. A round takes the
commits published since the last round, finds the live queries whose read sets contain a
written key (`SubscriptionIndex`, cost proportional to the matches), and re-runs those plus
newly subscribed ones together on a single snapshot, so every result of a round comes from one
timestamp. A result equal to the previous one is not delivered. Identical subscriptions (same
key) share one execution.

`wait_processed(ts)` blocks until every live query reflects commit `ts`: the client calls it
after a mutation so that its subscriptions read its writes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    """One result of a live query: a value, or the error it raised, at timestamp `ts`."""

    value: Value
    error: BaseException | None
    ts: int

    def fingerprint(self) -> Any:
        """Equal for results a client should not be told about twice."""
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
        self._busy = False  # the worker is in a round: later commits must queue behind it
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

        `on_update` runs on the worker thread and must return quickly. Returns a function that
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
        """Block until every live query reflects commit `ts`; False on timeout."""
        if self._processed_ts >= ts:  # it only grows: no need to lock to see that it is done
            return True
        with self._lock:
            self._waiting += 1
            try:
                return self._done.wait_for(
                    lambda: self._processed_ts >= ts or self._closed, timeout
                )
            finally:
                self._waiting -= 1

    def close(self) -> None:
        """Stop the worker; idempotent."""
        with self._lock:
            self._closed = True
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
                # need not wake up.
                self._processed_ts = commit.ts
                if self._waiting:
                    self._done.notify_all()
                return
            self._commits.append(commit)
            self._work.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(lambda: self._closed or self._commits or self._new)
                if self._closed:
                    return
                commits, self._commits = self._commits, []
                fresh, self._new = self._new, []
                self._busy = True
                affected = {
                    self._queries[k]
                    for c in commits
                    for k in self._index.match(c.keys)
                    if k in self._queries
                }
            try:
                self._round(affected | set(fresh))
            except Exception:  # a broken store must not kill the worker silently
                _log.exception("live query round failed")
            with self._lock:
                self._busy = False
                if commits:
                    self._processed_ts = max(self._processed_ts, commits[-1].ts)
                if self._waiting:
                    self._done.notify_all()

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
        try:
            value, read_set, ts = self._store.read(run, snapshot)
            result = QueryResult(value, None, ts)
        except Exception as exc:  # the query's own error is its result
            read_set = txn_holder[0].read_set.finalize() if txn_holder else None
            result = QueryResult(None, exc, snapshot.ts)
        fingerprint = result.fingerprint()
        with self._lock:
            if self._queries.get(live.key) is not live:
                return  # unsubscribed meanwhile
            if read_set is not None:
                self._index.register(live.key, read_set.all_intervals())
            if live.result is not None and fingerprint == live.fingerprint:
                return
            live.result, live.fingerprint = result, fingerprint
            subscribers = list(live.subscribers)
        for deliver in subscribers:
            try:
                deliver(result)
            except Exception:
                _log.exception("subscriber callback failed")

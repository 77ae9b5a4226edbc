"""Live queries: run once, re-run when a commit writes into their read set, push changes.

Each commit is matched against the live queries' read sets as it is published
(`SubscriptionIndex`, cost proportional to the matches): a query it writes into becomes
*stale since* that commit's ts, and is queued for a re-run. Re-runs happen in rounds: a round
takes the queued queries and runs them together on one snapshot. A result equal to the
previous one is not delivered. Identical subscriptions (same key) share one execution.

Two lanes run rounds, each on its own worker thread: a query whose last run took longer than
`slow_after` seconds (`SLOW_QUERY_SECONDS`) runs in the slow lane, the others in the fast
lane; a slow query comes back after `FAST_RUNS_TO_RETURN` fast runs. A new query starts in
the fast lane, unless a query of its *family* (`family(key)`: the backend passes the function
path) was slow lately: so new arguments to a slow function do not stall the fast lane for one
run each. The fast lane never waits for the slow one, so one slow query delays only its own
subscribers (and the callers that wait for it), not everybody's updates.

Consistency: a query *reflects* ts T when it is not stale at or before T: its latest
delivered result (computed at snapshot ts S) is then valid at T, as no commit in (S, T] wrote
into its read set. A round's end settles each query it ran: valid, or stale since the first
commit after its snapshot that wrote into its read set (checked against the new read set
too, when it changed). `wait_processed(ts, keys=...)` and `call_when_processed(ts, callback,
keys)` wait until the given queries (by default every live query) reflect `ts`; the sync
server waits only for the queries of the client it answers.

A worker runs its lane's rounds, except that `wait_processed(ts)` without a timeout runs a
pending round itself if the worker has not started it yet: the caller would wait for that
round anyway, and waking the worker would add a thread hand-off to the latency of every
update.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson

from kernel_ext.engine.logs import capture_logs
from kernel_ext.engine.store import Commit, Store
from kernel_ext.store.keys import encode_value
from kernel_ext.store.matching import SubscriptionIndex
from kernel_ext.store.readset import ALL, ReadSet
from kernel_ext.store.rows import RowsSnapshot
from kernel_ext.store.transaction import Transaction
from kernel_ext.store.values import Value
from kernel_ext.store.views import MaintainedView, ResultDiff, ViewSeed, diff_rebuilt

__all__ = [
    "FAST_RUNS_TO_RETURN",
    "NOT_SUBSCRIBED",
    "SLOW_QUERY_SECONDS",
    "LiveQuery",
    "QueryResult",
    "SubscriptionManager",
    "Unsubscribe",
]

_log = logging.getLogger(__name__)

#: Runs a live query: its value, or the seed of a view that maintains it (`store.views`).
Runner = Callable[[Transaction], Value | ViewSeed]

#: A live query whose run takes longer than this (seconds) moves to the slow lane.
SLOW_QUERY_SECONDS: Final = 0.1
#: A slow query returns to the fast lane after this many consecutive fast runs.
FAST_RUNS_TO_RETURN: Final = 3
#: How many families of slow queries are remembered (the least recently slow are forgotten).
_FAMILIES: Final = 1024
#: Seconds a round waits for the commits its snapshot sees to be dispatched (a commit is
#: published right after it is stored, under the commit lock: this is a bound, not a delay).
_DISPATCH_WAIT: Final = 5.0


@dataclass(frozen=True)
class QueryResult:
    """One result of a live query: a value, or the error it raised, at timestamp `ts`, with
    the log lines its execution printed (`engine.logs`)."""

    value: Value
    error: BaseException | None
    ts: int
    log_lines: tuple[str, ...] = ()
    #: The change from the previous result of a maintained view (None: not known; a
    #: consumer that needs one replaces the whole value).
    diff: ResultDiff | None = None

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


@dataclass(frozen=True)
class Unsubscribe:
    """Ends one subscription when called (idempotent); `key` names its live query, for
    `SubscriptionManager.call_when_processed(ts, callback, keys)` (None: nothing was
    subscribed)."""

    key: Hashable | None
    end: Callable[[], None]

    def __call__(self) -> None:
        self.end()


#: The `Unsubscribe` of no subscription: calling it does nothing.
NOT_SUBSCRIBED: Final = Unsubscribe(None, lambda: None)


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
    #: The ts of the earliest commit (or redefinition) that its result does not reflect and
    #: that it has not re-run for yet; None: its result is valid up to the latest commit.
    stale_since: int | None = None
    #: Runs in the slow lane (its last run took longer than the manager's threshold).
    slow: bool = False
    #: Consecutive fast runs while slow: back to the fast lane after `FAST_RUNS_TO_RETURN`.
    fast_runs: int = 0
    #: In a round now (claimed, not finished): commits that hit it go to `hits`.
    running: bool = False
    #: While running, the snapshot ts of its run (None until the snapshot is taken).
    snapshot_ts: int | None = None
    #: While running, ts of commits that wrote into its read set; those after `snapshot_ts`
    #: make it stale again when the round ends.
    hits: list[int] = field(default_factory=list)
    #: While running, the ts from which `rerun()` asked for another run (None: not asked).
    forced: int | None = None
    #: The maintained view of a function that returned its query or aggregate (None: the
    #: function re-runs on each relevant commit).
    view: MaintainedView | None = None
    #: The reads the function made before returning its view: a commit into them re-runs it.
    prelude: ReadSet | None = None
    #: Commits that wrote into the view's range and that it has not applied yet, in ts order.
    pending: list[Commit] = field(default_factory=list)
    #: The view must be built again by running the function (a commit into its prelude, a
    #: schema change, a redefinition).
    rebuild: bool = False
    #: The rows of the latest delivered view value (for the diff of a rebuild).
    rows: RowsSnapshot | None = None
    #: The ts the view reflects: a commit at or before it is in the view already (a commit
    #: is stored, so seen by snapshots, a moment before it is dispatched).
    view_ts: int = 0


@dataclass(eq=False)
class _Lane:
    """One worker thread and the live queries waiting for its next round."""

    name: str
    work: threading.Condition  # the worker waits here for dirty queries
    dirty: dict[LiveQuery, None] = field(default_factory=dict)  # an ordered set
    busy: bool = False  # a round is running: queries made dirty meanwhile wait for the next
    snapshot_ts: int | None = None  # the running round's snapshot (None: unknown or idle)
    thread: threading.Thread | None = None


@dataclass(eq=False)
class _Waiter:
    """A `call_when_processed` callback waiting for `keys` (None: every query) to reflect
    `ts`."""

    ts: int
    keys: frozenset[Hashable] | None
    callback: Callable[[], None]


class SubscriptionManager:
    """Keeps live queries up to date with commits (see the module docstring).

    Args:
        store: the store whose commits re-run the queries.
        slow_after: seconds: a query whose run takes longer moves to the slow lane (it comes
            back after `FAST_RUNS_TO_RETURN` runs within this time).
        family: the family of a query key (None: each key is its own family).
    """

    def __init__(
        self,
        store: Store,
        *,
        slow_after: float = SLOW_QUERY_SECONDS,
        family: Callable[[Hashable], Hashable] | None = None,
    ) -> None:
        self._store = store
        self._slow_after = slow_after
        self._family = family or (lambda key: key)
        # Families with a query in the slow lane lately (oldest first, at most _FAMILIES).
        self._slow_families: dict[Hashable, None] = {}
        self._lock = threading.Lock()
        self._lanes = (
            _Lane("convex-subscriptions", threading.Condition(self._lock)),
            _Lane("convex-subscriptions-slow", threading.Condition(self._lock)),
        )
        self._queries: dict[Hashable, LiveQuery] = {}
        self._index = SubscriptionIndex()
        self._stale: set[LiveQuery] = set()  # the queries whose `stale_since` is not None
        # (stale_since, tie-breaker, query) of the stale queries, oldest first: `_advance`
        # takes the oldest in O(log n) instead of a scan per round (10,000 first runs would
        # be quadratic). Entries whose query's `stale_since` changed since are skipped.
        self._stale_order: list[tuple[int, int, LiveQuery]] = []
        self._dispatched_ts = store.ts  # the latest commit matched against the read sets
        self._dispatched = threading.Condition(self._lock)  # notified when it moves
        self._processed_ts = store.ts  # every live query reflects the commits up to it
        self._rounds = 0  # rounds running (at most one per lane)
        # The commits since the oldest running round began: a query whose read set changed
        # checks the commits after its snapshot against the new one (a view applies them).
        self._recent: list[Commit] = []
        # `call_when_processed` waiters, earliest ts first: for every query (against
        # `_processed_ts`), and for some queries until their ts is dispatched; then those
        # wait in `_blocked` on the first of their queries that does not reflect it.
        self._all_waiters: list[tuple[int, int, _Waiter]] = []
        self._keyed_waiters: list[tuple[int, int, _Waiter]] = []
        self._blocked: dict[LiveQuery, list[_Waiter]] = {}
        self._wakeups: set[threading.Event] = set()  # of threads in wait_processed
        self._sequence = itertools.count()
        self._closed = False
        store.add_listener(self._on_commit)
        # A round that failed while a shared store's database was down kept its old results:
        # once it is back, every live query runs again.
        store.on_status(self._on_status)
        for lane in self._lanes:
            lane.thread = threading.Thread(
                target=self._run, args=(lane,), name=lane.name, daemon=True
            )
            lane.thread.start()

    def __len__(self) -> int:
        return len(self._queries)

    # -- API -----------------------------------------------------------------------------

    def subscribe(
        self, key: Hashable, runner: Runner, on_update: Callable[[QueryResult], None]
    ) -> Unsubscribe:
        """Call `on_update(result)` with the query's current result and each changed one.

        `on_update` runs on the thread that runs the query's round (a lane's worker, or one
        waiting in `wait_processed`), one call at a time, and must return quickly. Returns
        the function that unsubscribes (its `key` is `key`).
        """
        with self._lock:
            live = self._queries.get(key)
            if live is None:
                live = LiveQuery(key, runner, slow=self._family(key) in self._slow_families)
                self._queries[key] = live
                # No result yet: it holds back the commits after the latest one (those it
                # cannot have seen for sure). It starts in the slow lane if its family was
                # slow lately, else in the fast lane.
                self._set_stale(live, self._dispatched_ts + 1)
                self._make_dirty(live)
            live.subscribers.append(on_update)
            current = live.result
        if current is not None:
            # A new subscriber never saw the value the result's diff starts from.
            on_update(current if current.diff is None else replace(current, diff=None))

        def unsubscribe() -> None:
            ready: list[Callable[[], None]] = []
            with self._lock:
                with contextlib.suppress(ValueError):
                    live.subscribers.remove(on_update)
                if not live.subscribers and self._queries.get(key) is live:
                    ready = self._forget(live)
            _call_all(ready)

        return Unsubscribe(key, unsubscribe)

    def modes(self) -> dict[Hashable, bool]:
        """Per live query with a result: True if it is a maintained view (incremental),
        False if it re-runs on each relevant commit."""
        with self._lock:
            return {
                key: live.view is not None
                for key, live in self._queries.items()
                if live.result is not None
            }

    def _on_status(self, status: str) -> None:
        if status == "connected":
            self.rerun(lambda _: True)

    def rerun(self, predicate: Callable[[Hashable], bool]) -> None:
        """Re-run (in the next round of its lane) every live query whose key satisfies
        `predicate`, e.g. all subscriptions of a function that was just redefined."""
        with self._lock:
            since = self._dispatched_ts + 1
            for key, live in self._queries.items():
                if not predicate(key):
                    continue
                live.rebuild = live.view is not None
                if live.running:
                    live.forced = since if live.forced is None else live.forced
                    continue
                if live.stale_since is None:
                    self._set_stale(live, since)
                self._make_dirty(live)

    def wait_processed(
        self, ts: int, timeout: float | None = None, keys: Iterable[Hashable] | None = None
    ) -> bool:
        """Block until the live queries of `keys` (None: every live query) reflect commit
        `ts`; False on timeout. Without a timeout, the caller may run pending rounds itself
        (see the module docstring): the fast lane's, and the slow lane's when it waits for
        every query."""
        if keys is None and self._processed_ts >= ts:  # it only grows: no lock needed
            return True
        if timeout is None:
            self._run_pending_round(self._lanes[0])
            if keys is None:
                self._run_pending_round(self._lanes[1])
        done = threading.Event()
        with self._lock:
            if self._closed or self._add_waiter(ts, keys, done.set):
                return True
            self._wakeups.add(done)
        try:
            return done.wait(timeout)
        finally:
            with self._lock:
                self._wakeups.discard(done)

    def call_when_processed(
        self, ts: int, callback: Callable[[], None], keys: Iterable[Hashable] | None = None
    ) -> None:
        """Call `callback()` once the live queries of `keys` (None: every live query; keys
        without a live query are ignored) reflect commit `ts`, after their results were
        handed to their subscribers: at once on this thread if they do already, else on the
        thread that completes that work: a lane's worker (after its round delivered), the
        committing thread while it holds the store's commit lock (for a commit none of them
        depends on), or one that unsubscribes. So it must return quickly and must not use the
        store. Never called if the manager closes first."""
        with self._lock:
            if self._closed or not self._add_waiter(ts, keys, callback):
                return
        callback()

    def close(self) -> None:
        """Stop the workers; idempotent."""
        with self._lock:
            self._closed = True
            # Never called now: drop what they hold on to.
            self._all_waiters.clear()
            self._keyed_waiters.clear()
            self._blocked.clear()
            for done in self._wakeups:
                done.set()
            for lane in self._lanes:
                lane.work.notify_all()
        deadline = time.monotonic() + 5
        for lane in self._lanes:
            if lane.thread is not None and lane.thread is not threading.current_thread():
                lane.thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- staleness and waiters (call with the lock held) ---------------------------------

    def _set_stale(self, live: LiveQuery, since: int | None) -> None:
        changed = since != live.stale_since
        live.stale_since = since
        if since is None:
            self._stale.discard(live)
            return
        self._stale.add(live)
        if changed:
            heapq.heappush(self._stale_order, (since, next(self._sequence), live))
            if len(self._stale_order) > 2 * len(self._stale) + 64:  # drop the skipped ones
                self._stale_order = [
                    (x.stale_since, next(self._sequence), x)
                    for x in self._stale
                    if x.stale_since is not None
                ]
                heapq.heapify(self._stale_order)

    def _lane_of(self, live: LiveQuery) -> _Lane:
        return self._lanes[1] if live.slow else self._lanes[0]

    def _make_dirty(self, live: LiveQuery) -> None:
        """Queue `live` for its lane's next round (unless it is in a round now: the end of
        that round queues it again if it is still stale)."""
        if live.running:
            return
        lane = self._lane_of(live)
        if not lane.dirty:
            lane.work.notify_all()  # (its worker waits for the first one only)
        lane.dirty[live] = None

    def _forget(self, live: LiveQuery) -> list[Callable[[], None]]:
        """Drop a live query nobody subscribes to any more; returns the callbacks now due."""
        del self._queries[live.key]
        self._index.remove(live.key)
        for lane in self._lanes:
            lane.dirty.pop(live, None)
        was_stale = live.stale_since is not None
        self._set_stale(live, None)
        ready = self._unblock(live)
        if was_stale:
            self._advance()
            ready += self._due()
        return ready

    def _add_waiter(
        self, ts: int, keys: Iterable[Hashable] | None, callback: Callable[[], None]
    ) -> bool:
        """Register a waiter, or return True if its queries reflect `ts` already."""
        sequence = next(self._sequence)
        if keys is None:
            if self._processed_ts >= ts:
                return True
            heapq.heappush(self._all_waiters, (ts, sequence, _Waiter(ts, None, callback)))
            return False
        waiter = _Waiter(ts, frozenset(keys), callback)
        if self._dispatched_ts < ts:
            heapq.heappush(self._keyed_waiters, (ts, sequence, waiter))
            return False
        return self._reflected(waiter)

    def _reflected(self, waiter: _Waiter) -> bool:
        """True if the waiter's queries reflect its ts (its ts is dispatched); else it waits
        on the first one that does not."""
        assert waiter.keys is not None
        for key in waiter.keys:
            live = self._queries.get(key)
            if live is not None and live.stale_since is not None and live.stale_since <= waiter.ts:
                self._blocked.setdefault(live, []).append(waiter)
                return False
        return True

    def _unblock(self, live: LiveQuery) -> list[Callable[[], None]]:
        """Check again the waiters that waited on `live`; returns the callbacks now due."""
        return [w.callback for w in self._blocked.pop(live, ()) if self._reflected(w)]

    def _advance(self) -> None:
        """Move `_processed_ts` to the latest ts that every live query reflects."""
        order = self._stale_order
        while order and order[0][2].stale_since != order[0][0]:
            heapq.heappop(order)  # that query is no longer stale since then
        oldest = order[0][0] if order else None
        ts = self._dispatched_ts if oldest is None else min(self._dispatched_ts, oldest - 1)
        self._processed_ts = max(self._processed_ts, ts)

    def _due(self) -> list[Callable[[], None]]:
        """Take the callbacks now due (call them after releasing the lock)."""
        ready = []
        while self._all_waiters and self._all_waiters[0][0] <= self._processed_ts:
            ready.append(heapq.heappop(self._all_waiters)[2].callback)
        while self._keyed_waiters and self._keyed_waiters[0][0] <= self._dispatched_ts:
            waiter = heapq.heappop(self._keyed_waiters)[2]
            if self._reflected(waiter):
                ready.append(waiter.callback)
        return ready

    # -- commits -------------------------------------------------------------------------

    def _on_commit(self, commit: Commit) -> None:
        with self._lock:
            self._dispatched_ts = max(self._dispatched_ts, commit.ts)
            self._dispatched.notify_all()
            if self._rounds:
                self._recent.append(commit)
            if self._queries and commit.keys:
                for key in self._index.match(commit.keys):
                    live = self._queries.get(key)
                    if live is not None:
                        if live.view is not None:
                            self._queue_for_view(live, commit)
                        self._invalidate(live, commit.ts)
            if not self._stale:
                # Nothing live depends on this commit (the common case of an embedded
                # store: kept lean): it is processed already, no worker wakes up.
                self._processed_ts = commit.ts
            # (With stale queries, a commit cannot move `_processed_ts`: they hold it back.)
            if not (self._all_waiters or self._keyed_waiters):
                return
            ready = self._due()
        _call_all(ready)

    @staticmethod
    def _queue_for_view(live: LiveQuery, commit: Commit) -> None:
        """Commit `commit` hit `live`'s view: queue its writes, or have the function run
        again if it changed what the function read before returning the view (call with
        the lock held)."""
        if live.rebuild or commit.ts <= live.view_ts:
            return
        # (A schema change's commit carries only the key `ALL_KEYS`.)
        if commit.keys[0][0] == ALL or (
            live.prelude is not None
            and live.prelude.intervals
            and live.prelude.overlaps(commit.keys)
        ):
            live.rebuild = True
            live.pending.clear()
        else:
            live.pending.append(commit)

    def _invalidate(self, live: LiveQuery, ts: int) -> None:
        """Commit `ts` wrote into `live`'s read set (call with the lock held)."""
        if live.running:
            # Only the first hit after the run's snapshot matters (ts only grow).
            if live.snapshot_ts is None or (ts > live.snapshot_ts and not live.hits):
                live.hits.append(ts)
            if live.stale_since is None:  # (a running query is stale: defensive)
                self._set_stale(live, ts)
            return
        if live.stale_since is None:
            self._set_stale(live, ts)
        self._make_dirty(live)

    # -- rounds --------------------------------------------------------------------------

    def _run(self, lane: _Lane) -> None:
        while True:
            with self._lock:
                lane.work.wait_for(lambda: self._closed or (bool(lane.dirty) and not lane.busy))
                if self._closed:
                    return
                to_run = self._take_round(lane)
            self._run_round(lane, to_run)

    def _run_pending_round(self, lane: _Lane) -> None:
        """Run the lane's next round on this thread, unless there is none or one is running."""
        with self._lock:
            if self._closed or lane.busy or not lane.dirty:
                return
            to_run = self._take_round(lane)
        self._run_round(lane, to_run)

    def _take_round(self, lane: _Lane) -> list[LiveQuery]:
        """Claim the lane's dirty queries for a round (call with the lock held)."""
        to_run = list(lane.dirty)
        lane.dirty.clear()
        lane.busy = True
        lane.snapshot_ts = None
        self._rounds += 1
        for live in to_run:
            live.running, live.hits, live.snapshot_ts = True, [], None
        return to_run

    def _run_round(self, lane: _Lane, to_run: list[LiveQuery]) -> None:
        try:
            self._round(lane, to_run)
        except Exception:  # a broken store must not kill the worker silently
            _log.exception("live query round failed")
            with self._lock:  # a view may have lost the commits it took: build it again
                for live in to_run:
                    live.rebuild = live.view is not None
            self._end_round(lane, to_run, redo=False)
        except BaseException:
            # Interrupted (a waiting caller's KeyboardInterrupt): the next round redoes it.
            self._end_round(lane, to_run, redo=True)
            raise
        else:
            self._end_round(lane, to_run, redo=False)

    def _round(self, lane: _Lane, to_run: list[LiveQuery]) -> None:
        if not to_run:
            return
        snapshot = self._store.snapshot()
        try:
            with self._lock:
                lane.snapshot_ts = snapshot.ts
                for live in to_run:
                    live.snapshot_ts = snapshot.ts
                    live.hits = [ts for ts in live.hits if ts > snapshot.ts][:1]
                # A view applies the queued commits up to the snapshot: all of them must
                # have been queued.
                if any(live.view is not None for live in to_run) and not (
                    self._dispatched.wait_for(
                        lambda: self._dispatched_ts >= snapshot.ts, _DISPATCH_WAIT
                    )
                ):
                    _log.warning("commit %d was not dispatched in time", snapshot.ts)
                    for live in to_run:
                        live.rebuild = live.view is not None
            for live in to_run:
                if live.view is not None and not live.rebuild:
                    self._advance_view(live, snapshot)
                else:
                    self._execute(live, snapshot)
        finally:
            self._store.close_snapshot(snapshot)

    def _end_round(self, lane: _Lane, to_run: list[LiveQuery], *, redo: bool) -> None:
        """Settle each query of the round: valid up to the latest commit, or stale since the
        first commit after its snapshot that wrote into its (new) read set; then call the
        waiters now due. `redo`: the round was interrupted, every query of it runs again."""
        ready: list[Callable[[], None]] = []
        with self._lock:
            lane.busy = False
            lane.snapshot_ts = None
            self._rounds -= 1
            self._prune_recent()
            for live in to_run:
                live.running = False
                hits, forced, snapshot_ts = live.hits, live.forced, live.snapshot_ts
                live.hits, live.forced, live.snapshot_ts = [], None, None
                if self._queries.get(live.key) is not live:
                    continue  # unsubscribed meanwhile
                if redo:
                    # Its view may have lost (or half applied) the commits it had taken.
                    live.rebuild = live.view is not None
                    self._make_dirty(live)  # still stale since when it was
                    continue
                later = [ts for ts in hits if snapshot_ts is None or ts > snapshot_ts]
                if forced is not None:
                    later.append(forced)
                    live.rebuild = live.view is not None  # (`rerun` asked during its run)
                self._set_stale(live, min(later, default=None))
                if live.stale_since is not None:
                    self._make_dirty(live)
            # Once all are settled: a waiter for several of them is checked once, not again
            # for each one of them still unsettled.
            for live in to_run:
                if live in self._blocked:
                    ready += self._unblock(live)
            self._advance()
            ready += self._due()
            if lane.dirty:
                lane.work.notify_all()  # queued meanwhile; the worker waits while `busy`
        _call_all(ready)

    def _prune_recent(self) -> None:
        """Keep the commits a running round may still need (call with the lock held)."""
        if not self._rounds:
            self._recent.clear()
            return
        running = [lane.snapshot_ts for lane in self._lanes if lane.busy]
        if None in running or not self._recent:
            return
        oldest = min(ts for ts in running if ts is not None)
        self._recent = [commit for commit in self._recent if commit.ts > oldest]

    def _execute(self, live: LiveQuery, snapshot: Any) -> None:
        """Run the query's function on `snapshot` and deliver its result if it changed; a
        function that returns its query or aggregate gets a view (`store.views`)."""
        txn_holder: list[Transaction] = []

        def run(txn: Transaction) -> Value | ViewSeed:
            txn_holder.append(txn)
            return live.runner(txn)

        read_set: ReadSet | None
        seed: ViewSeed | None = None
        started = time.perf_counter()
        with capture_logs() as logs:
            try:
                value, read_set, ts = self._store.read(run, snapshot)
                error: Exception | None = None
            except Exception as exc:  # the query's own error is its result
                read_set = txn_holder[0].read_set.finalize() if txn_holder else None
                value, error, ts = None, exc, snapshot.ts
        elapsed = time.perf_counter() - started
        if isinstance(value, ViewSeed):
            seed = value
            value = seed.view.value()
            # A view depends on its whole range (a top-k view too: a write past its last
            # document is ignored cheaply, and a refill never needs new registrations).
            read_set = ReadSet({i: list(v) for i, v in seed.prelude.intervals.items()})
            read_set.add(*seed.view.interval())
        result = QueryResult(value, error, ts, logs.finish())
        rows = seed.view.rows() if seed is not None else None
        fingerprint = object() if seed is not None else result.fingerprint()
        with self._lock:
            if self._queries.get(live.key) is not live:
                return  # unsubscribed meanwhile
            self._classify(live, elapsed)
            self._install(live, seed, read_set, ts)
            if rows is not None:
                previous, live.rows = live.rows, rows
                if previous is not None and live.result is not None:
                    # A view built again: deliver what changed, if anything did (as a
                    # diff when the rows kept their order).
                    diff = diff_rebuilt(previous, rows, ts, live.result.ts)
                    same_logs = live.result.log_lines == result.log_lines
                    if diff is not None and not diff and live.result.error is None and same_logs:
                        return
                    result = QueryResult(value, None, ts, result.log_lines, diff)
            else:
                live.rows = None
                if live.result is not None and fingerprint == live.fingerprint:
                    return
            live.result, live.fingerprint = result, fingerprint
            subscribers = list(live.subscribers)
        self._deliver(subscribers, result)

    def _install(
        self, live: LiveQuery, seed: ViewSeed | None, read_set: ReadSet | None, ts: int
    ) -> None:
        """Take a run's read set (and view) at snapshot `ts` (call with the lock held)."""
        live.rebuild = False
        live.view = None if seed is None else seed.view
        live.prelude = None if seed is None else seed.prelude
        live.pending = []
        live.view_ts = ts
        if read_set is None:
            return
        # A re-run usually reads the same ranges: compare them (in C) before re-registering.
        if read_set.intervals != live.intervals:
            self._index.register(live.key, read_set.all_intervals())
            live.intervals = read_set.intervals
            # The index knew only the old ranges: commits since the snapshot may have
            # written into the new ones.
            live.hits += [c.ts for c in self._recent if c.ts > ts and read_set.overlaps(c.keys)][:1]
        if seed is not None:
            # The commits after the snapshot that the view must still apply (`_recent` holds
            # every commit since this round began), or that make the function run again.
            for commit in self._recent:
                if commit.ts > ts and read_set.overlaps(commit.keys):
                    self._queue_for_view(live, commit)

    def _advance_view(self, live: LiveQuery, snapshot: Any) -> None:
        """Bring the query's view to `snapshot`'s ts by applying the queued commits up to it
        (no query runs; a top-k view short of documents reads on from its last one) and
        deliver the change, if any. A view that fails to apply is built again."""
        with self._lock:
            pending = [c for c in live.pending if c.ts <= snapshot.ts]
            live.pending = [c for c in live.pending if c.ts > snapshot.ts]
            view, previous, rebuild = live.view, live.result, live.rebuild
        if rebuild:  # (a commit into its prelude came meanwhile)
            self._execute(live, snapshot)
            return
        assert view is not None and previous is not None
        started = time.perf_counter()
        try:
            table = view.table
            for commit in pending:
                for write in commit.writes.values():
                    if write.table == table:
                        view.apply(write.old, write.new)
            if view.needs_refill:
                self._store.read(view.refill, snapshot)
            diff = view.take_diff(snapshot.ts, previous.ts)
        except Exception:
            # (A filter that fails on a new document raises here: the re-run reports it.)
            _log.debug("view of %r is built again", live.key, exc_info=True)
            self._execute(live, snapshot)
            return
        elapsed = time.perf_counter() - started
        with self._lock:
            if self._queries.get(live.key) is not live:
                return
            self._classify(live, elapsed)
            live.view_ts = snapshot.ts
            if diff is None:
                return  # nothing it shows changed: nothing to deliver
            live.rows = view.rows()
            result = QueryResult(view.value(), None, snapshot.ts, previous.log_lines, diff)
            live.result, live.fingerprint = result, object()
            subscribers = list(live.subscribers)
        self._deliver(subscribers, result)

    @staticmethod
    def _deliver(subscribers: list[Callable[[QueryResult], None]], result: QueryResult) -> None:
        for deliver in subscribers:
            try:
                deliver(result)
            except Exception:
                _log.exception("subscriber callback failed")

    def _classify(self, live: LiveQuery, elapsed: float) -> None:
        """Move a query between lanes by how long its run took (call with the lock held);
        it takes effect from its next round."""
        if elapsed <= self._slow_after and not live.slow:
            return  # the common case: a fast query stays fast
        family = self._family(live.key)
        if elapsed > self._slow_after:
            live.slow, live.fast_runs = True, 0
            self._slow_families.pop(family, None)  # (moved to the end: the newest)
            self._slow_families[family] = None
            if len(self._slow_families) > _FAMILIES:
                del self._slow_families[next(iter(self._slow_families))]
        elif live.slow:
            live.fast_runs += 1
            if live.fast_runs >= FAST_RUNS_TO_RETURN:
                live.slow, live.fast_runs = False, 0
                self._slow_families.pop(family, None)


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            _log.exception("call_when_processed callback failed")

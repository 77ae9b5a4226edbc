"""The pump between one WebSocket and its `SyncProtocol`, on an asyncio event loop.

It feeds the protocol the client's frames, sends what the protocol queues, and does the work
the protocol asks for: subscriptions through the runner (results come back on the engine's
worker thread and are handed to the loop), mutations and actions on thread pools.

Transitions: when the protocol has one due at ts T, the pump asks the engine to report (never
blocking the loop) when this client's live queries reflect every commit up to max(T, latest
commit), so each of its results is valid at that timestamp; the results of that work reach
the loop before the report does, and only then the protocol sends the Transition. Only this
client's queries count: another client's slow query does not delay its updates, nor the
Transition that completes its mutation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from kernel_ext.engine.subscriptions import NOT_SUBSCRIBED, Unsubscribe
from kernel_ext.errors import TooManyRequests
from kernel_ext.functions.receipts import receipt_key
from kernel_ext.functions.registration import FunctionKind
from kernel_ext.sync.outcomes import SERVER_ERROR, Outcome, outcome_of_error
from kernel_ext.sync.protocol import (
    PING_INTERVAL,
    Authenticator,
    CloseConnection,
    RunAction,
    RunMutation,
    SessionEvent,
    SubscribeQuery,
    SyncProtocol,
    UnsubscribeQuery,
)
from kernel_ext.sync.runner import FunctionRunner

__all__ = [
    "MAX_CONCURRENT_CALLS",
    "MAX_SUBSCRIPTIONS",
    "SyncConnection",
]

_log = logging.getLogger(__name__)

#: After this many seconds of waiting for the engine, send the Transition anyway (logged).
_MAX_WAIT: Final = 10.0
#: Default cap on one connection's live queries (each holds its result in memory).
MAX_SUBSCRIPTIONS: Final = 5_000
#: Default cap on one connection's mutations and actions running at once.
MAX_CONCURRENT_CALLS: Final = 64


class SyncConnection:
    """Drives one client's `SyncProtocol`. Create it on the event loop's thread.

    Args:
        runner: runs functions and subscriptions.
        authenticator: verifies the client's tokens.
        send_text: sends one text frame (must not block).
        close: closes the socket with a code and reason, after the frames already sent.
        executor: runs mutations (one at a time per connection; the protocol ensures it).
        action_executor: runs actions (concurrently).
        ping_interval: idle seconds before a Ping.
        keeps_session: the client re-uses its session id after a reconnect (JS and this
            project's remote client do; the Python and Rust clients do not): its mutations
            get durable receipts, so a re-sent one is answered instead of run twice
            (`functions.receipts`).
        clock: seconds since the epoch.
        max_subscriptions: live queries this connection may hold; a query added beyond it
            gets a `TooManyRequests` error as its result (the others go on).
        max_concurrent_calls: mutations and actions it may have running; one beyond it
            fails at once with `TooManyRequests`.
    """

    def __init__(
        self,
        runner: FunctionRunner,
        authenticator: Authenticator,
        *,
        send_text: Callable[[str], None],
        close: Callable[[int, str], None],
        executor: concurrent.futures.Executor,
        action_executor: concurrent.futures.Executor,
        ping_interval: float = PING_INTERVAL,
        keeps_session: bool = True,
        clock: Callable[[], float] = time.time,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        max_concurrent_calls: int = MAX_CONCURRENT_CALLS,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner = runner
        self._send_text, self._close = send_text, close
        self._executor, self._action_executor = executor, action_executor
        self._clock = clock
        self._keeps_session = keeps_session
        self.protocol = SyncProtocol(authenticator, now=clock(), ping_interval=ping_interval)
        self._subscriptions: dict[tuple[int, int], Unsubscribe] = {}
        self._max_subscriptions, self._max_calls = max_subscriptions, max_concurrent_calls
        self._running = 0  # mutations and actions submitted and not finished
        # Results from the engine's thread, drained on the loop in one go per round.
        self._results: list[tuple[int, int, Outcome, int]] = []
        self._results_lock = threading.Lock()
        self._flush: asyncio.Handle | None = None  # a _try_flush is scheduled
        self._target: int | None = None  # the ts the pending Transition waits for
        self._awaiting: int | None = None  # the ts the engine will report processed
        self._subscribed_meanwhile = False  # a live query was added since `_await`
        self._deadline: asyncio.TimerHandle | None = None  # gives up waiting (_MAX_WAIT)

    # -- input ---------------------------------------------------------------------------

    def receive_text(self, data: str | bytes) -> None:
        """A frame from the client."""
        self.protocol.receive_text(data)
        self._pump()

    def tick(self) -> None:
        """Call about once a second: pings and token expiry."""
        self.protocol.receive_tick(self._clock())
        self._pump()

    def connection_lost(self) -> None:
        """The socket closed: drop every subscription; results still in flight are ignored."""
        self.protocol.close()
        self._pump()
        for unsubscribe in self._subscriptions.values():
            unsubscribe()
        self._subscriptions.clear()
        for handle in (self._flush, self._deadline):
            if handle is not None:
                handle.cancel()
        self._flush = self._deadline = None
        self._awaiting = self._target = None

    # -- the pump ------------------------------------------------------------------------

    def _pump(self) -> None:
        while True:
            for text in self.protocol.data_to_send():
                self._send_text(text)
            events = self.protocol.events_received()
            if not events:
                break
            for event in events:
                self._handle(event)
        self._schedule_flush()

    def _handle(self, event: SessionEvent) -> None:
        match event:
            case SubscribeQuery():
                self._subscribe(event)
            case UnsubscribeQuery():
                self._subscriptions.pop((event.query_id, event.token), NOT_SUBSCRIBED)()
            case RunMutation():
                self._run(self._executor, "mutation", event, self._mutation_done)
            case RunAction():
                self._run(self._action_executor, "action", event, self._action_done)
            case CloseConnection():
                self._close(event.code, event.reason)

    def _subscribe(self, event: SubscribeQuery) -> None:
        key = (event.query_id, event.token)

        def on_result(outcome: Outcome, ts: int) -> None:  # any thread
            # One loop wake-up per batch, not per result: a round that updates 1,000 queries
            # would otherwise queue 1,000 callbacks (and self-pipe writes).
            with self._results_lock:
                first = not self._results
                self._results.append((event.query_id, event.token, outcome, ts))
            if first:
                self._post(self._query_results)

        if len(self._subscriptions) >= self._max_subscriptions:
            refused = TooManyRequests(
                f"Too many live queries on this connection (limit "
                f"{self._max_subscriptions:,}): {event.path} was not subscribed. Unsubscribe "
                "from queries no longer shown, or raise the server's limit (serve "
                "--max-subscriptions)."
            )
            on_result(outcome_of_error(refused), self._runner.latest_ts())
            return
        unsubscribe = self._runner.subscribe(event.path, event.args, event.identity, on_result)
        self._subscriptions[key] = unsubscribe
        if unsubscribe.key is not None:
            self._subscribed_meanwhile = True

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        # A closed loop means the server is gone, and this connection with it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _query_results(self) -> None:
        self._take_results()
        self._pump()

    def _take_results(self) -> None:
        with self._results_lock:
            results, self._results = self._results, []
        for query_id, token, outcome, ts in results:
            self.protocol.receive_query_result(query_id, token, outcome, ts)

    def _run(
        self,
        executor: concurrent.futures.Executor,
        kind: FunctionKind,
        event: RunMutation | RunAction,
        done: Callable[[int, Outcome, int | None], None],
    ) -> None:
        def finished(future: asyncio.Future[tuple[Outcome, int | None]]) -> None:
            self._running -= 1
            if future.cancelled():
                return  # the server is shutting down before it could start
            error = future.exception()
            if error is not None:
                _log.error("%s %s could not run", kind, event.path, exc_info=error)
                done(event.request_id, Outcome.failure(SERVER_ERROR), None)
            else:
                done(event.request_id, *future.result())

        # Only a client that keeps its session id across sockets can ever re-send a request.
        receipt = self._receipt_key(event) if kind == "mutation" and self._keeps_session else None
        if self._running >= self._max_calls:
            refused = TooManyRequests(
                "Too many mutations and actions running on this connection (limit "
                f"{self._max_calls:,}): {event.path} was not run. Wait for earlier calls to "
                "finish, or raise the server's limit (serve --max-concurrent-calls)."
            )
            self._loop.call_soon(done, event.request_id, outcome_of_error(refused), None)
            return
        try:
            future = self._loop.run_in_executor(
                executor,
                functools.partial(
                    self._runner.call,
                    kind,
                    event.path,
                    event.args,
                    event.identity,
                    receipt=receipt,
                ),
            )
        except RuntimeError:  # executor shut down
            done(event.request_id, Outcome.failure("The server is shutting down"), None)
            return
        self._running += 1
        future.add_done_callback(finished)

    def _receipt_key(self, event: RunMutation | RunAction) -> str | None:
        """The mutation's durable receipt key: session, request id, path and caller."""
        session = self.protocol.session_id
        if session is None:
            return None
        user = event.identity.user
        caller = (event.identity.admin, None if user is None else str(user.get("tokenIdentifier")))
        return receipt_key(session, event.request_id, event.path, caller)

    def _mutation_done(self, request_id: int, outcome: Outcome, ts: int | None) -> None:
        self.protocol.receive_mutation_result(request_id, outcome, ts)
        self._pump()

    def _action_done(self, request_id: int, outcome: Outcome, ts: int | None) -> None:
        self.protocol.receive_action_result(request_id, outcome)
        self._pump()

    # -- transitions ---------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if (
            self._flush is None
            and self._awaiting is None
            and self.protocol.transition_ts() is not None
        ):
            self._flush = self._loop.call_soon(self._try_flush)

    def _try_flush(self) -> None:
        """Choose the Transition's ts and ask the engine to tell when it is processed."""
        self._flush = None
        needed = self.protocol.transition_ts()
        if needed is None:
            return
        # Fixed once chosen (raised only by a result from a later snapshot), so that a busy
        # store cannot keep this Transition chasing the latest commit.
        floor = self._runner.latest_ts() if self._target is None else self._target
        target = self._target = max(needed, floor)
        if self._deadline is None:
            self._deadline = self._loop.call_later(_MAX_WAIT, self._lagging)
        self._await(target)

    def _await(self, target: int) -> None:
        """Ask the engine to report when this client's live queries reflect `target`."""
        self._awaiting = target
        self._subscribed_meanwhile = False
        keys = frozenset(u.key for u in self._subscriptions.values() if u.key is not None)
        self._runner.when_processed(target, lambda: self._post(self._processed, target), keys)

    def _processed(self, ts: int) -> None:
        if ts == self._awaiting:
            if self._subscribed_meanwhile:
                # Subscribed meanwhile to a query shared with other clients: its current
                # result may predate `ts`, so wait for it to reflect `ts` as well.
                self._await(ts)
                return
            self._awaiting = None
            # The engine hands a round's results over before it reports the round processed,
            # and their batch is queued on the loop ahead of this call; taking any that are
            # still in the batch makes that independent of the loop's queue order.
            self._take_results()
            self._send_transition(ts)

    def _lagging(self) -> None:
        self._deadline = None
        if self._target is not None:
            _log.warning(
                "live queries lag behind ts %d; sending the Transition anyway", self._target
            )
            self._awaiting = None  # a late notification is ignored
            self._send_transition(self._target)

    def _send_transition(self, target: int) -> None:
        needed = self.protocol.transition_ts()
        if needed is not None and needed > target:
            self._try_flush()  # a result from a later snapshot arrived: catch up to it
            return
        self._target = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if needed is not None:
            self.protocol.send_transition(target)
        self._pump()

"""One client connection of the sync protocol, as a sans-I/O state machine.

`SyncProtocol` never touches a socket, a thread or the store. The transport (a pump, see
`kernel_ext.sync.connection`) drives it:

1. Feed input: `receive_text()` for each frame from the client; `receive_query_result()`,
   `receive_mutation_result()`, `receive_action_result()` when work it asked for is done;
   `receive_tick(now)` about once a second (pings, token expiry); `close()` when the
   socket ends.
2. Drain output: `data_to_send()` gives the text frames to send, in order.
3. Drain events: `events_received()` gives the work to do: subscribe or unsubscribe a query,
   run a mutation or an action, close the socket.
4. When `transition_ts()` is not None, make sure every live query of this client reflects
   the store up to (at least) that ts, then call `send_transition(ts)`; it queues one
   Transition carrying every pending query result.

Invariants the official clients rely on (PROTOCOL.md §2):

- Each Transition starts exactly where the previous one ended (query set version, identity
  version and ts); the first starts at (0, 0, 0). Its ts never decreases.
- A Transition is sent only when every query of the current query set (under the current
  identity) has a result, so `endVersion` never claims a version whose results are missing.
- A Transition follows every ModifyQuerySet, Authenticate, MutationResponse and
  ActionResponse, with a ts at least the mutation's commit ts (the Python client's
  `mutation()` returns only then; JS waits for it to read its own writes).
- Mutations of one connection run one at a time, in arrival order; actions run concurrently.
- A message that breaks the protocol gets a FatalError and closes this connection only; a
  refused token gets an AuthError and closes it. Bad arguments only fail their call.

Result diffs (our extension, wire format in `messages`): a client whose Connect asked for
them gets a maintained view's result as a `QueryDiff` when the result's diff
(`Outcome.diff`) starts from the value this connection last sent it (or queued for it) for
that query; results that arrive before the next Transition chain their diffs. Such a result
is never encoded whole nor fingerprinted: its cost is that of the changed rows. Every other
result (the first of a subscription, one after an error or a whole value still queued, one
whose diff starts elsewhere, a chain that grew past the value's size) is sent whole.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, assert_never

from kernel_ext.errors import (
    AuthenticationError,
    ProtocolError,
    ProtocolMisuse,
    ValidationError,
)
from kernel_ext.store.rows import RowsSnapshot
from kernel_ext.store.values import Value
from kernel_ext.sync import messages as m
from kernel_ext.sync.outcomes import Outcome

__all__ = [
    "ANONYMOUS",
    "CLOSE_AUTH_ERROR",
    "CLOSE_PROTOCOL_ERROR",
    "PING_INTERVAL",
    "Authenticator",
    "CloseConnection",
    "Identity",
    "RunAction",
    "RunMutation",
    "SessionEvent",
    "State",
    "SubscribeQuery",
    "SyncProtocol",
    "UnsubscribeQuery",
]

#: Seconds without any outgoing message after which a Ping is sent (as Convex does).
PING_INTERVAL: Final = 15.0
#: WebSocket close code after a FatalError (RFC 6455: protocol error).
CLOSE_PROTOCOL_ERROR: Final = 1002
#: WebSocket close code after an AuthError: normal closure, the client reconnects itself.
CLOSE_AUTH_ERROR: Final = 1000
_MAX_CLOSE_REASON: Final = 120  # a close frame's reason is at most 123 bytes


@dataclass(frozen=True)
class Identity:
    """Who a connection acts as.

    Attributes:
        user: the identity handed to functions (`ctx.auth.get_user_identity()`), or None.
        admin: an admin key was given: internal functions may be called.
        expires_at: when the user's token expires (seconds since the epoch), if it does.
    """

    user: Mapping[str, Any] | None = None
    admin: bool = False
    expires_at: float | None = None


#: No token: public functions, no user.
ANONYMOUS: Final = Identity()


class Authenticator(Protocol):
    """Turns credentials into identities (implemented by `kernel_ext.sync.auth`)."""

    def authenticate_user(self, token: str) -> Identity:
        """The identity of a user token.

        Raises:
            AuthenticationError: the token is refused.
        """

    def authenticate_admin(self, key: str, acting_as: Mapping[str, Any] | None) -> Identity:
        """The identity of an admin key, optionally acting as the user `acting_as`.

        Raises:
            AuthenticationError: the key is wrong.
        """


# -- events: work the transport must do ---------------------------------------------------


@dataclass(frozen=True)
class SubscribeQuery:
    """Subscribe to a query and report each result with `receive_query_result(query_id,
    token, ...)`; results for an older token of the same query are ignored."""

    query_id: m.QueryId
    token: int
    path: str
    args: dict[str, Value]
    identity: Identity


@dataclass(frozen=True)
class UnsubscribeQuery:
    """Drop the subscription made for `(query_id, token)`."""

    query_id: m.QueryId
    token: int


@dataclass(frozen=True)
class RunMutation:
    """Run a mutation, then call `receive_mutation_result(request_id, ...)`."""

    request_id: m.RequestId
    path: str
    args: dict[str, Value]
    identity: Identity


@dataclass(frozen=True)
class RunAction:
    """Run an action, then call `receive_action_result(request_id, ...)`."""

    request_id: m.RequestId
    path: str
    args: dict[str, Value]
    identity: Identity


@dataclass(frozen=True)
class CloseConnection:
    """Close the socket (after sending everything queued) with this code and reason."""

    code: int
    reason: str


SessionEvent: TypeAlias = (
    SubscribeQuery | UnsubscribeQuery | RunMutation | RunAction | CloseConnection
)


class State(enum.Enum):
    """Where a connection is in its life."""

    AWAITING_CONNECT = "awaiting-connect"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class _Query:
    """A query of the client's query set."""

    path: str
    args: dict[str, Value] | None  # None: the arguments could not be decoded
    token: int
    awaiting: bool = True  # no result yet for the current token
    sent: bytes | None = None  # fingerprint of the last result sent (None: not known)
    # The engine ts of the value the client holds once the pending entry is sent, for a
    # diff to start from (None: no such value, e.g. an error).
    value_ts: int | None = None
    chained: int = 0  # rows changed by the diffs of the pending QueryDiff


@dataclass(frozen=True)
class _Call:
    """A mutation or action, decoded (or failed before it could run)."""

    request_id: m.RequestId
    path: str
    args: dict[str, Value] | None
    failure: Outcome | None
    identity: Identity


class SyncProtocol:
    """The server side of one sync connection (see the module docstring for the contract).

    Args:
        authenticator: verifies tokens and admin keys.
        now: the current time in seconds since the epoch (the session keeps no clock).
        ping_interval: send a Ping after this many idle seconds.
    """

    def __init__(
        self, authenticator: Authenticator, *, now: float, ping_interval: float = PING_INTERVAL
    ) -> None:
        self._authenticator = authenticator
        self._ping_interval = ping_interval
        self.state = State.AWAITING_CONNECT
        self.session_id: str | None = None
        self.identity: Identity = ANONYMOUS
        self.result_diffs = False  # the client asked for QueryDiffs (module docstring)
        self._query_set_version = 0
        self._identity_version = 0
        self._sent = m.StateVersion()
        self._queries: dict[m.QueryId, _Query] = {}
        self._next_token = 0
        self._pending: dict[m.QueryId, tuple[m.Modification, bytes | None]] = {}
        self._min_ts = 0  # the next Transition's ts must be at least this
        self._transition_due = False
        self._mutations: deque[_Call] = deque()
        self._running_mutation: m.RequestId | None = None
        self._running_actions: set[m.RequestId] = set()
        self._last_sent_at = now
        self._sent_since_tick = False
        self._output: list[str] = []
        self._events: list[SessionEvent] = []

    # -- draining ------------------------------------------------------------------------

    def data_to_send(self) -> list[str]:
        """The text frames queued since the last call, in sending order."""
        output, self._output = self._output, []
        return output

    def events_received(self) -> list[SessionEvent]:
        """The work queued since the last call (see the event classes), in order."""
        events, self._events = self._events, []
        return events

    @property
    def closed(self) -> bool:
        """True once the session has ended (it ignores any further input)."""
        return self.state is State.CLOSED

    # -- input from the client -----------------------------------------------------------

    def receive_text(self, data: str | bytes) -> None:
        """Handle one frame from the client. A malformed one queues a FatalError and a
        `CloseConnection`."""
        if self.closed:
            return
        try:
            message = m.parse_client_message(data)
        except ProtocolError as exc:
            self._fail(str(exc))
            return
        self.receive_message(message)

    def receive_message(self, message: m.ClientMessage) -> None:
        """Handle one decoded client message (`receive_text` without the decoding)."""
        if self.closed:
            return
        if isinstance(message, m.Connect):
            if self.state is not State.AWAITING_CONNECT:
                self._fail("Connect was sent twice on one connection")
                return
            self.state, self.session_id = State.OPEN, message.session_id
            self.result_diffs = message.result_diffs
            return
        if self.state is State.AWAITING_CONNECT:
            self._fail(f"The first message must be Connect, got {type(message).__name__}")
            return
        match message:
            case m.ModifyQuerySet():
                self._modify_query_set(message)
            case m.Mutation():
                self._receive_mutation(message)
            case m.Action():
                self._receive_action(message)
            case m.Authenticate():
                self._authenticate(message)
            case m.Event():
                pass  # telemetry
            case _:
                assert_never(message)

    def _modify_query_set(self, message: m.ModifyQuerySet) -> None:
        if message.base_version != self._query_set_version:
            self._fail(
                f"BaseVersionMismatch: ModifyQuerySet.baseVersion is {message.base_version}, "
                f"expected {self._query_set_version}"
            )
            return
        if message.new_version <= message.base_version:
            self._fail("ModifyQuerySet.newVersion must be greater than baseVersion")
            return
        problem = self._check_modifications(message.modifications)
        if problem is not None:
            self._fail(problem)
            return
        for modification in message.modifications:
            if isinstance(modification, m.AddQuery):
                self._add_query(modification)
            else:
                self._remove_query(modification.query_id)
        self._query_set_version = message.new_version
        self._transition_due = True

    def _check_modifications(
        self, modifications: tuple[m.AddQuery | m.RemoveQuery, ...]
    ) -> str | None:
        """Validate a whole ModifyQuerySet before applying any of it."""
        live = set(self._queries)
        for modification in modifications:
            query_id = modification.query_id
            if isinstance(modification, m.AddQuery):
                if query_id in live:
                    return f"Query id {query_id} is already in the query set"
                live.add(query_id)
            elif query_id not in live:
                return f"Query id {query_id} is not in the query set"
            else:
                live.discard(query_id)
        return None

    def _add_query(self, add: m.AddQuery) -> None:
        args, failure = self._decode(add.args, add.component_path)
        query = _Query(add.udf_path, args, self._new_token())
        self._queries[add.query_id] = query
        if failure is not None:
            self._record_result(add.query_id, query, failure, 0)
        else:
            self._subscribe(add.query_id, query)

    def _remove_query(self, query_id: m.QueryId) -> None:
        query = self._queries.pop(query_id)
        if query.args is not None:
            self._events.append(UnsubscribeQuery(query_id, query.token))
        self._pending[query_id] = (m.query_removed(query_id), None)

    def _subscribe(self, query_id: m.QueryId, query: _Query) -> None:
        assert query.args is not None
        self._events.append(
            SubscribeQuery(query_id, query.token, query.path, query.args, self.identity)
        )

    def _new_token(self) -> int:
        self._next_token += 1
        return self._next_token

    @staticmethod
    def _decode(
        raw: list[Any], component_path: str | None
    ) -> tuple[dict[str, Value] | None, Outcome | None]:
        if component_path:
            return None, Outcome.failure("Components are not supported by this server")
        try:
            return m.decode_args(raw), None
        except ValidationError as exc:
            return None, Outcome.bad_arguments(str(exc))

    def _receive_mutation(self, message: m.Mutation) -> None:
        args, failure = self._decode(message.args, message.component_path)
        call = _Call(message.request_id, message.udf_path, args, failure, self.identity)
        self._mutations.append(call)
        self._start_next_mutation()

    def _start_next_mutation(self) -> None:
        # One mutation at a time, in arrival order: a failed-to-decode one answers in turn.
        while self._running_mutation is None and self._mutations:
            call = self._mutations.popleft()
            if call.failure is not None:
                self._queue(m.mutation_response(call.request_id, call.failure, None))
                self._transition_due = True
                continue
            assert call.args is not None
            self._running_mutation = call.request_id
            self._events.append(RunMutation(call.request_id, call.path, call.args, call.identity))

    def _receive_action(self, message: m.Action) -> None:
        args, failure = self._decode(message.args, message.component_path)
        if failure is not None:
            self._queue(m.action_response(message.request_id, failure))
            return
        assert args is not None
        self._running_actions.add(message.request_id)
        self._events.append(RunAction(message.request_id, message.udf_path, args, self.identity))

    def _authenticate(self, message: m.Authenticate) -> None:
        if message.base_version != self._identity_version:
            self._fail(
                f"IdentityVersionMismatch: Authenticate.baseVersion is {message.base_version}, "
                f"expected {self._identity_version}"
            )
            return
        try:
            identity = self._identity_of(message)
        except AuthenticationError as exc:
            self._queue(m.auth_error(str(exc), message.base_version, attempted=True))
            self._close(CLOSE_AUTH_ERROR, "AuthError")
            return
        self._identity_version += 1
        self._set_identity(identity)

    def _identity_of(self, message: m.Authenticate) -> Identity:
        if message.token_type == "None":
            return ANONYMOUS
        assert message.value is not None
        if message.token_type == "User":
            return self._authenticator.authenticate_user(message.value)
        return self._authenticator.authenticate_admin(message.value, message.impersonating)

    def _set_identity(self, identity: Identity) -> None:
        """Every query re-runs under the new identity before the next Transition."""
        self.identity = identity
        for query_id, query in self._queries.items():
            if query.args is None:
                continue  # its failure does not depend on who asks
            self._events.append(UnsubscribeQuery(query_id, query.token))
            query.token, query.awaiting = self._new_token(), True
            self._subscribe(query_id, query)
        self._transition_due = True

    # -- input from the transport --------------------------------------------------------

    def receive_query_result(
        self, query_id: m.QueryId, token: int, outcome: Outcome, ts: int
    ) -> None:
        """A subscribed query's result at snapshot `ts`. Results of removed queries and of
        superseded subscriptions are ignored; an unchanged result is not sent again."""
        query = self._queries.get(query_id)
        if self.closed or query is None or query.token != token:
            return
        self._record_result(query_id, query, outcome, ts)

    def _record_result(self, query_id: m.QueryId, query: _Query, outcome: Outcome, ts: int) -> None:
        # A first result (after Add or Authenticate) completes a version: a Transition is due
        # even if the value is the one the client has.
        first = query.awaiting
        if query.awaiting:
            query.awaiting, self._transition_due = False, True
        self._min_ts = max(self._min_ts, ts)
        if not first and self._record_diff(query_id, query, outcome, ts):
            return
        query.value_ts, query.chained = (ts if outcome.success else None), 0
        fingerprint = outcome.fingerprint()
        if fingerprint == query.sent:
            self._pending.pop(query_id, None)  # back to what the client has
            return
        self._transition_due = True
        entry = (
            m.query_updated(query_id, outcome)
            if outcome.success
            else m.query_failed(query_id, outcome)
        )
        if self.result_diffs and outcome.success and isinstance(outcome.value, RowsSnapshot):
            entry["view"] = True  # a maintained view's value (our extension)
        self._pending[query_id] = (entry, fingerprint)

    def _record_diff(self, query_id: m.QueryId, query: _Query, outcome: Outcome, ts: int) -> bool:
        """Queue `outcome` as a diff if it can be one (see the module docstring); False if it
        must be sent whole."""
        diff = outcome.diff
        if (
            not self.result_diffs
            or diff is None
            or query.value_ts is None
            or diff.base_ts != query.value_ts
        ):
            return False
        value = outcome.value
        one = isinstance(value, dict)
        if not one and not isinstance(value, RowsSnapshot | list):
            return False
        pending = self._pending.get(query_id)
        if pending is not None and pending[0]["type"] != "QueryDiff":
            return False  # the whole value still queued is what the diff would change
        changed = query.chained + len(diff.removed) + len(diff.inserted) + len(diff.updated)
        if changed > max(len(value) if not one else 1, 16):
            return False  # the value is smaller than its diffs
        if pending is None:
            pending = (m.query_diff(query_id, outcome.log_lines), None)
            self._pending[query_id] = pending
        else:
            pending[0]["logLines"] = list(outcome.log_lines)
        m.add_diff(pending[0], diff, one=one)
        query.value_ts, query.chained = ts, changed
        self._transition_due = True
        return True

    def receive_mutation_result(
        self, request_id: m.RequestId, outcome: Outcome, ts: int | None
    ) -> None:
        """The running mutation finished (`ts`: its commit ts, for a success). Queues the
        MutationResponse, starts the next mutation, and makes a Transition due at >= `ts`.

        Raises:
            ProtocolMisuse: `request_id` is not the running mutation (a transport bug).
        """
        if self.closed:
            return
        if request_id != self._running_mutation:
            raise ProtocolMisuse(f"mutation {request_id} is not running")
        self._running_mutation = None
        self._queue(m.mutation_response(request_id, outcome, ts if outcome.success else None))
        if ts is not None:
            self._min_ts = max(self._min_ts, ts)
        self._transition_due = True
        self._start_next_mutation()

    def receive_action_result(self, request_id: m.RequestId, outcome: Outcome) -> None:
        """A running action finished: queues its ActionResponse (and a Transition, so the
        client sees what the action wrote).

        Raises:
            ProtocolMisuse: no such action is running (a transport bug).
        """
        if self.closed:
            return
        if request_id not in self._running_actions:
            raise ProtocolMisuse(f"action {request_id} is not running")
        self._running_actions.discard(request_id)
        self._queue(m.action_response(request_id, outcome))
        self._transition_due = True

    def receive_tick(self, now: float) -> None:
        """Let time pass: queue a Ping after `ping_interval` idle seconds; refuse a user
        token that has expired (AuthError, then close)."""
        if self.closed:
            return
        expires = self.identity.expires_at
        if expires is not None and now >= expires:
            self._queue(
                m.auth_error("The auth token has expired", self._identity_version, attempted=False)
            )
            self._close(CLOSE_AUTH_ERROR, "AuthError")
            return
        if self._sent_since_tick:
            self._last_sent_at, self._sent_since_tick = now, False
        elif now - self._last_sent_at >= self._ping_interval:
            self._queue(m.ping())
            self._last_sent_at, self._sent_since_tick = now, False

    def close(self) -> None:
        """The socket is gone: unsubscribe everything; later input is ignored."""
        if self.closed:
            return
        self._close(None, "")

    # -- transitions ---------------------------------------------------------------------

    def transition_ts(self) -> int | None:
        """The least ts the next Transition needs, or None if none is due yet (nothing
        changed, or a query still lacks its result)."""
        if self.closed or not self._transition_due:
            return None
        if any(q.awaiting for q in self._queries.values()):
            return None
        return max(self._min_ts, self._sent.ts)

    def send_transition(self, ts: int) -> None:
        """Queue the Transition that `transition_ts()` asked for, at `ts` (never below the
        previous Transition's ts). The caller guarantees every result this client should see
        at `ts` has been received.

        Raises:
            ProtocolMisuse: no Transition is due.
        """
        needed = self.transition_ts()
        if needed is None:
            raise ProtocolMisuse("no Transition is due")
        end = m.StateVersion(self._query_set_version, self._identity_version, max(ts, needed))
        modifications = []
        for query_id, (entry, fingerprint) in self._pending.items():
            modifications.append(entry)
            query = self._queries.get(query_id)
            if query is not None:
                query.sent, query.chained = fingerprint, 0
        self._queue(m.transition(self._sent, end, modifications))
        self._sent, self._pending, self._transition_due = end, {}, False

    # -- helpers -------------------------------------------------------------------------

    def _queue(self, message: m.ServerMessage) -> None:
        self._output.append(m.serialize(message))
        self._sent_since_tick = True

    def _fail(self, reason: str) -> None:
        """A protocol violation: FatalError, then close this connection."""
        self._queue(m.fatal_error(reason))
        self._close(CLOSE_PROTOCOL_ERROR, reason)

    def _close(self, code: int | None, reason: str) -> None:
        for query_id, query in self._queries.items():
            if query.args is not None:
                self._events.append(UnsubscribeQuery(query_id, query.token))
        self._queries.clear()
        self._mutations.clear()
        self.state = State.CLOSED
        if code is not None:
            self._events.append(CloseConnection(code, _truncate(reason)))


def _truncate(reason: str) -> str:
    data = reason.encode("utf-8")[:_MAX_CLOSE_REASON]
    return data.decode("utf-8", "ignore")

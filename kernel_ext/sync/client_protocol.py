"""The client side of the sync protocol, as a sans-I/O state machine (PROTOCOL.md §2).

`ClientSession` keeps what a client must remember across sockets: its query set (with the
query ids the server knows), its pending mutations and actions (with their request ids), its
auth token and the highest timestamp it has seen. The transport calls:

- `open_messages(reason)` when a socket opens: Connect, Authenticate, the whole query set and
  every unresolved request, to send in order (the server starts each socket from scratch);
- `add_query` / `remove_query` / `request` / `authenticate` to change state; each returns the
  message to send now (or None while disconnected: `open_messages` will carry it);
- `receive(text)` for each server frame; it returns events: query results, finished
  requests, or a reason to reconnect.

A successful mutation finishes only when a Transition at or after its commit ts has been
applied, so the client's subscriptions already reflect it (read your writes).

Result diffs: the Connect asks for them (`resultDiffs`, see `messages`), so a maintained
view's result may arrive as a `QueryDiff` that changes the value this session holds for the
query. The session keeps that value's rows in a persistent tree (`_RowChunks`): a diff costs
O(log n) per changed row, and each value it hands out is an immutable `RowsSnapshot` that
later diffs never change. Its `QueryResultEvent.diff` is that change,
based on the query's previous result (`base_ts`: its ts), for `Subscription.on_diff`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import orjson

from kernel_ext.errors import ProtocolError
from kernel_ext.store.rows import PositionalRows, RowsSnapshot
from kernel_ext.store.values import Value, from_json, to_json
from kernel_ext.store.views import ResultDiff, rows_of
from kernel_ext.sync.messages import (
    RESULT_DIFFS_VERSION,
    canonical_udf_path,
    decode_ts,
    encode_ts,
)

__all__ = [
    "ClientEvent",
    "ClientSession",
    "QueryResultEvent",
    "Reconnect",
    "RequestDone",
    "TransitionApplied",
]

RequestKind = Literal["Mutation", "Action"]


@dataclass(frozen=True)
class QueryResultEvent:
    """A query's new result: a value, or an error message with optional ConvexError data."""

    query_id: int
    value: Value = None
    error: str | None = None
    error_data: Value = None
    has_error_data: bool = False
    ts: int = 0
    log_lines: tuple[str, ...] = ()
    error_code: str | None = None
    #: The change from the query's previous result, when it arrived as a `QueryDiff`.
    diff: ResultDiff | None = None


@dataclass(frozen=True)
class RequestDone:
    """A mutation or action finished (`ts`: a mutation's commit ts)."""

    request_id: int
    success: bool
    value: Value = None
    error: str | None = None
    error_data: Value = None
    has_error_data: bool = False
    ts: int | None = None
    log_lines: tuple[str, ...] = ()
    error_code: str | None = None


@dataclass(frozen=True)
class TransitionApplied:
    """A Transition was applied; the client's queries now reflect `ts`. `auth_current`: it
    reflects every Authenticate sent so far (the server accepted the current token)."""

    ts: int
    auth_current: bool = True


@dataclass(frozen=True)
class Reconnect:
    """The server broke the protocol or refused us: close this socket and open another."""

    reason: str
    fatal: bool = False
    auth: bool = False


ClientEvent: TypeAlias = QueryResultEvent | RequestDone | TransitionApplied | Reconnect


class _RowChunks:
    """A query's rows by position, kept in a persistent tree (`store.rows.PositionalRows`):
    `snapshot()` shares it with every value handed out, and a diff changes O(log n) nodes
    per row, never the values handed out before."""

    def __init__(self, rows: Iterable[Any]) -> None:
        if isinstance(rows, RowsSnapshot):
            self._rows = PositionalRows.of(rows)
        else:
            self._rows = PositionalRows(rows if isinstance(rows, list) else list(rows))

    def __len__(self) -> int:
        return len(self._rows)

    def snapshot(self) -> RowsSnapshot:
        """The rows now, as an immutable sequence."""
        return self._rows.snapshot()

    def apply(self, diff: ResultDiff) -> None:
        """Apply `diff` (positions as in `ResultDiff.apply_to`).

        Raises:
            IndexError: a position is out of range.
        """
        changes = len(diff.removed) + len(diff.inserted) + len(diff.updated)
        if changes * 64 > len(self):
            # Many changes: one pass over a flat copy (in C) costs less than many tree edits.
            rows = list(self._rows.snapshot())
            _check_positions(diff, len(rows))
            diff.apply_to(rows)
            self._rows = PositionalRows(rows)
            return
        for position in reversed(diff.removed):
            self._rows.delete(position)
        for position, row in diff.inserted:
            self._rows.insert(position, row)
        for position, row in diff.updated:
            self._rows.set(position, row)


def _check_positions(diff: ResultDiff, size: int) -> None:
    """Refuse a diff that does not fit a value of `size` rows (`list` ops would clamp)."""
    if diff.removed and not 0 <= min(diff.removed) <= max(diff.removed) < size:
        raise IndexError("a removed position is out of range")
    size -= len(diff.removed)
    for position, _ in diff.inserted:
        if not 0 <= position <= size:
            raise IndexError("an inserted position is out of range")
        size += 1
    if any(not 0 <= position < size for position, _ in diff.updated):
        raise IndexError("an updated position is out of range")


@dataclass
class _Held:
    """The value a query last received on this socket (a diff changes it)."""

    ts: int
    value: Value
    rows: _RowChunks | None = None  # its rows, made on the first diff (or with a list)


@dataclass
class _Request:
    kind: RequestKind
    message: dict[str, Any]
    response: RequestDone | None = None  # a success parked until a Transition covers its ts


@dataclass
class ClientSession:
    """The client's protocol state (see the module docstring)."""

    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    connected: bool = False
    connection_count: int = 0
    _queries: dict[int, tuple[str, list[Any]]] = field(default_factory=dict)
    _next_query_id: int = 0
    _next_request_id: int = 0
    _requests: dict[int, _Request] = field(default_factory=dict)
    _token: tuple[str, str | None] = ("None", None)
    _acting_as: Mapping[str, Any] | None = None  # the user an admin key acts as
    _query_set_version: int = 0
    _identity_version: int = 0
    _end_version: tuple[int, int, int] = (0, 0, 0)
    max_observed_ts: int = 0
    #: Ask the server for `QueryDiff`s (our extension; see the module docstring).
    result_diffs: bool = True
    #: What the server sent: frames and their bytes, and query modifications by type
    #: (`QueryUpdated`, `QueryDiff`, ...). For tests and diagnostics.
    received: dict[str, int] = field(default_factory=dict)
    _held: dict[int, _Held] = field(default_factory=dict)

    # -- sockets -------------------------------------------------------------------------

    def open_messages(self, reason: str) -> list[str]:
        """Everything to send, in order, on a new socket."""
        self.connected = True
        self._query_set_version = self._identity_version = 0
        self._end_version = (0, 0, 0)
        self._held.clear()  # the server starts over: whole values first
        connect: dict[str, Any] = {
            "type": "Connect",
            "sessionId": self.session_id,
            "connectionCount": self.connection_count,
            "lastCloseReason": reason,
            "clientTs": 0,
        }
        if self.result_diffs:
            connect["resultDiffs"] = RESULT_DIFFS_VERSION
        if self.max_observed_ts:
            connect["maxObservedTimestamp"] = encode_ts(self.max_observed_ts)
        self.connection_count += 1
        out = [connect]
        if self._token[0] != "None":
            out.append(self._authenticate_message())
        self._query_set_version = 1
        out.append(
            {
                "type": "ModifyQuerySet",
                "baseVersion": 0,
                "newVersion": 1,
                "modifications": [
                    {"type": "Add", "queryId": qid, "udfPath": path, "args": args}
                    for qid, (path, args) in self._queries.items()
                ],
            }
        )
        out += [r.message for r in self._requests.values()]
        return [_dump(m) for m in out]

    def disconnected(self) -> None:
        """The socket closed; later changes wait for `open_messages`."""
        self.connected = False

    # -- changes -------------------------------------------------------------------------

    def add_query(self, path: str, args: Mapping[str, Any]) -> tuple[int, str | None]:
        """Subscribe; returns the new query id and the message to send (None if offline)."""
        query_id = self._next_query_id
        self._next_query_id += 1
        entry = (canonical_udf_path(path), [to_json(dict(args))])
        self._queries[query_id] = entry
        return query_id, self._modify(
            {"type": "Add", "queryId": query_id, "udfPath": entry[0], "args": entry[1]}
        )

    def remove_query(self, query_id: int) -> str | None:
        """Unsubscribe; returns the message to send (None if offline or unknown)."""
        if self._queries.pop(query_id, None) is None:
            return None
        self._held.pop(query_id, None)
        return self._modify({"type": "Remove", "queryId": query_id})

    def _modify(self, modification: dict[str, Any]) -> str | None:
        if not self.connected:
            return None
        base, self._query_set_version = self._query_set_version, self._query_set_version + 1
        return _dump(
            {
                "type": "ModifyQuerySet",
                "baseVersion": base,
                "newVersion": self._query_set_version,
                "modifications": [modification],
            }
        )

    def request(
        self, kind: RequestKind, path: str, args: Mapping[str, Any]
    ) -> tuple[int, str | None]:
        """Start a mutation or action; returns its request id and the message to send."""
        request_id = self._next_request_id
        self._next_request_id += 1
        message = {
            "type": kind,
            "requestId": request_id,
            "udfPath": canonical_udf_path(path),
            "args": [to_json(dict(args))],
        }
        self._requests[request_id] = _Request(kind, message)
        return request_id, (_dump(message) if self.connected else None)

    def forget_request(self, request_id: int) -> None:
        """Give up on a request (its caller stopped waiting): it is not re-sent on the next
        socket, and a late answer to it is ignored. It may or may not have run."""
        self._requests.pop(request_id, None)

    @property
    def token_type(self) -> str:
        """The kind of the current auth token: "User", "Admin" or "None"."""
        return self._token[0]

    def authenticate(
        self, token_type: str, value: str | None, acting_as: Mapping[str, Any] | None = None
    ) -> str | None:
        """Set the auth token ("User", "Admin" or "None"; an admin key may act as the user
        identity `acting_as`); returns the message to send."""
        self._token = (token_type, value)
        self._acting_as = acting_as if token_type == "Admin" else None
        if not self.connected:
            return None
        return _dump(self._authenticate_message())

    def _authenticate_message(self) -> dict[str, Any]:
        token_type, value = self._token
        message: dict[str, Any] = {
            "type": "Authenticate",
            "tokenType": token_type,
            "baseVersion": self._identity_version,
        }
        if value is not None:
            message["value"] = value
        if self._acting_as is not None:
            message["impersonating"] = dict(self._acting_as)
        self._identity_version += 1
        return message

    # -- server messages -----------------------------------------------------------------

    def receive(self, text: str | bytes) -> list[ClientEvent]:
        """Apply one server frame; returns what happened."""
        self._count("frames", 1)
        self._count("bytes", len(text))
        try:
            message = orjson.loads(text)
            kind = message["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return [Reconnect(f"Invalid message from the server: {str(text)[:80]!r}")]
        try:
            if kind == "Transition":
                return self._transition(message)
            if kind in ("MutationResponse", "ActionResponse"):
                return self._response(message)
        except (KeyError, TypeError, ValueError, IndexError, ProtocolError) as exc:
            return [Reconnect(f"Malformed {kind} from the server: {exc}")]
        if kind == "AuthError":
            return [Reconnect(f"AuthError: {message.get('error')}", auth=True)]
        if kind == "FatalError":
            return [Reconnect(f"FatalError: {message.get('error')}", fatal=True)]
        return []  # Ping and anything newer

    def _transition(self, message: dict[str, Any]) -> list[ClientEvent]:
        start = _version(message["startVersion"])
        if start != self._end_version:
            return [Reconnect("StartVersionMismatch")]
        end = _version(message["endVersion"])
        self._end_version = end
        ts = end[2]
        self.max_observed_ts = max(self.max_observed_ts, ts)
        events: list[ClientEvent] = []
        for modification in message["modifications"]:
            self._count(str(modification.get("type")), 1)
            if modification.get("type") == "QueryDiff":
                events += self._apply_diffs(modification, ts)
                continue
            event = _query_event(modification, ts)
            if event is not None and event.query_id in self._queries:
                events.append(event)
                self._hold(event)
        events.append(TransitionApplied(ts, auth_current=end[1] == self._identity_version))
        for request_id, request in list(self._requests.items()):
            done = request.response
            if done is not None and (done.ts or 0) <= ts:
                del self._requests[request_id]
                events.append(done)
        return events

    def _response(self, message: dict[str, Any]) -> list[ClientEvent]:
        request_id = int(message["requestId"])
        request = self._requests.get(request_id)
        if request is None:
            return []
        success = bool(message["success"])
        has_data = "errorData" in message
        done = RequestDone(
            request_id,
            success,
            from_json(message["result"]) if success else None,
            None if success else str(message["result"]),
            from_json(message["errorData"]) if has_data else None,
            has_data,
            decode_ts(message["ts"]) if success and message.get("ts") is not None else None,
            _log_lines(message),
            _error_code(message),
        )
        if success and done.ts is not None:
            self.max_observed_ts = max(self.max_observed_ts, done.ts)
            if done.ts > self._end_version[2]:
                request.response = done  # finishes with the Transition that covers it
                return []
        del self._requests[request_id]
        return [done]

    def _count(self, what: str, n: int) -> None:
        self.received[what] = self.received.get(what, 0) + n

    def _hold(self, event: QueryResultEvent) -> None:
        """Remember a whole result: the next diff applies to its value."""
        if not self.result_diffs:
            return
        if event.error is not None:
            self._held.pop(event.query_id, None)
            return
        value = event.value
        # A view's value (an immutable snapshot: its tree is shared, nothing is copied)
        # gets diffs; other values get none (a diff would find them copied lazily).
        rows = _RowChunks(value) if isinstance(value, RowsSnapshot) else None
        self._held[event.query_id] = _Held(event.ts, value, rows)

    def _apply_diffs(self, modification: Mapping[str, Any], ts: int) -> list[ClientEvent]:
        """The results of a `QueryDiff`: one per diff, each changing the previous one.

        Raises:
            ProtocolError: the query holds no value for it to change.
            IndexError, KeyError, TypeError, ValueError: a malformed diff.
        """
        query_id = int(modification["queryId"])
        if query_id not in self._queries:
            return []
        held = self._held.get(query_id)
        if held is None:
            raise ProtocolError(f"QueryDiff for query {query_id}, which holds no value")
        if held.rows is None:
            held.rows = _RowChunks(rows_of(held.value))
        lines = _log_lines(modification)
        events: list[ClientEvent] = []
        for wire in modification["diffs"]:
            diff = ResultDiff(
                ts,
                held.ts,
                tuple(int(p) for p in wire["removed"]),
                tuple((int(p), from_json(row)) for p, row in wire["inserted"]),
                tuple((int(p), from_json(row)) for p, row in wire["updated"]),
            )
            held.rows.apply(diff)
            rows = held.rows.snapshot()
            if wire["one"]:
                if len(rows) != 1:
                    raise ValueError(f"a one-row value has {len(rows)} rows")
                held.value = rows[0]
            else:
                held.value = rows
            held.ts = ts
            events.append(QueryResultEvent(query_id, held.value, ts=ts, log_lines=lines, diff=diff))
        return events

    @property
    def query_ids(self) -> list[int]:
        """The live query ids."""
        return list(self._queries)


def _version(data: Mapping[str, Any]) -> tuple[int, int, int]:
    return int(data["querySet"]), int(data["identity"]), decode_ts(data["ts"])


def _query_event(modification: Mapping[str, Any], ts: int) -> QueryResultEvent | None:
    kind = modification.get("type")
    if kind == "QueryUpdated":
        value = from_json(modification["value"])
        if modification.get("view") is True and isinstance(value, list):
            # A maintained view's whole value: immutable, like the ones its diffs make.
            value = PositionalRows(value).snapshot()
        return QueryResultEvent(
            int(modification["queryId"]),
            value,
            ts=ts,
            log_lines=_log_lines(modification),
        )
    if kind == "QueryFailed":
        has_data = "errorData" in modification
        return QueryResultEvent(
            int(modification["queryId"]),
            None,
            str(modification["errorMessage"]),
            from_json(modification["errorData"]) if has_data else None,
            has_data,
            ts,
            _log_lines(modification),
            _error_code(modification),
        )
    return None


def _error_code(message: Mapping[str, Any]) -> str | None:
    """The library error's code the server sent with a failure (`errorCode`), if any."""
    code = message.get("errorCode")
    return code if isinstance(code, str) else None


def _log_lines(message: Mapping[str, Any]) -> tuple[str, ...]:
    """The message's `logLines` (a server that sends something else gets it shown as text)."""
    lines = message.get("logLines")
    if not lines:
        return ()
    if not isinstance(lines, list):
        return (str(lines),)
    return tuple(line if isinstance(line, str) else str(line) for line in lines)


def _dump(message: Mapping[str, Any]) -> str:
    return orjson.dumps(message).decode()

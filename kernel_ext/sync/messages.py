"""The Convex sync protocol's messages (PROTOCOL.md §2): decoding client messages, building
server messages. Pure: no I/O.

Client -> server (`parse_client_message` turns one JSON text frame into one of these)::

    Connect  ModifyQuerySet(AddQuery | RemoveQuery ...)  Mutation  Action  Authenticate  Event

Server -> client (`serialize` turns one of the dicts built here into a text frame)::

    Transition(QueryUpdated | QueryFailed | QueryRemoved ...)  MutationResponse
    ActionResponse  AuthError  FatalError  Ping

Timestamps travel as base64 of 8 little-endian bytes (`encode_ts`); version counters, query
and request ids as plain JSON integers (u32). Function arguments travel as a one-element
array holding the Convex-JSON-encoded arguments object; they are decoded later, by
`decode_args`, so that bad arguments fail that one call instead of the connection.

Extension: result diffs (only this project's client asks for them; Convex's clients never
see them, and Convex's own servers ignore the request). A client that sends
`"resultDiffs": 1` in its Connect may get, inside a Transition, instead of a `QueryUpdated`::

    {"type": "QueryDiff", "queryId": 3, "logLines": [...], "journal": null,
     "diffs": [{"removed": [7, 9], "inserted": [[0, <row>]], "updated": [[4, <row>]],
                "one": false}, ...]}

Each diff changes the value the client holds for that query into the next one: delete the
`removed` positions (of the previous value), insert the `inserted` rows in ascending order
of their (new) positions, set the `updated` positions (`store.views.ResultDiff.apply_to`);
rows are Convex JSON. A value is its list of rows, or one row when `one` is true (an
ungrouped aggregate: one object). The first diff applies to the value of the query's latest
`QueryUpdated` or `QueryDiff` on this socket; several diffs are intermediate results that
were never sent, in order. A server sends one only for a maintained view's result whose diff
starts from exactly the value it last sent this client (`protocol.SyncProtocol`);
otherwise, and after every reconnect, it sends the whole value. To such a client, the
`QueryUpdated` of a maintained view's whole value also carries `"view": true` (the client
then knows the query is maintained incrementally before its first diff).
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import orjson

from kernel_ext.errors import ProtocolError, ValidationError
from kernel_ext.store.values import Value, from_json, to_json
from kernel_ext.sync.outcomes import Outcome

if TYPE_CHECKING:
    from kernel_ext.store.views import ResultDiff

__all__ = [
    "MAX_JSON_DEPTH",
    "RESULT_DIFFS_VERSION",
    "Action",
    "AddQuery",
    "Authenticate",
    "ClientMessage",
    "Connect",
    "Event",
    "Modification",
    "ModifyQuerySet",
    "Mutation",
    "QueryId",
    "RemoveQuery",
    "RequestId",
    "ServerMessage",
    "StateVersion",
    "action_response",
    "add_diff",
    "auth_error",
    "canonical_udf_path",
    "check_json_depth",
    "decode_args",
    "decode_ts",
    "encode_ts",
    "fatal_error",
    "mutation_response",
    "parse_client_message",
    "ping",
    "query_diff",
    "query_failed",
    "query_removed",
    "query_updated",
    "serialize",
    "transition",
]

QueryId: TypeAlias = int
RequestId: TypeAlias = int
#: A server message as a JSON-ready dict (its `"type"` names it).
ServerMessage: TypeAlias = dict[str, Any]
#: One entry of a Transition's `modifications`.
Modification: TypeAlias = dict[str, Any]

#: Nesting deeper than this is refused before any value is decoded (Convex values nest at
#: most 16 levels; the margin covers the message envelope).
MAX_JSON_DEPTH: Final = 64
#: The `resultDiffs` value of a Connect that asks for `QueryDiff`s (the extension's version).
RESULT_DIFFS_VERSION: Final = 1
_U32_MAX: Final = 2**32 - 1
_TS_MAX: Final = 2**63 - 1
_MAX_PATH_LENGTH: Final = 1024


# ---------------------------------------------------------------------------------------------
# Timestamps, versions, paths


def encode_ts(ts: int) -> str:
    """A timestamp as the protocol writes it: base64 of the u64 in 8 little-endian bytes."""
    return base64.b64encode(struct.pack("<Q", ts)).decode("ascii")


def decode_ts(text: object, what: str = "timestamp") -> int:
    """The inverse of `encode_ts`.

    Raises:
        ProtocolError: `text` is not base64 of 8 bytes, or is above 2**63 - 1.
    """
    if not isinstance(text, str):
        raise ProtocolError(f"{what} must be a base64 string, got {_kind(text)}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"{what} is not valid base64") from exc
    if len(raw) != 8:
        raise ProtocolError(f"{what} must encode 8 bytes, got {len(raw)}")
    ts: int = struct.unpack("<Q", raw)[0]
    if ts > _TS_MAX:
        raise ProtocolError(f"{what} is larger than 2**63 - 1")
    return ts


@dataclass(frozen=True)
class StateVersion:
    """Where a client's view stands: query set version, identity version, timestamp."""

    query_set: int = 0
    identity: int = 0
    ts: int = 0

    def to_json(self) -> dict[str, Any]:
        """The wire form `{querySet, identity, ts}`."""
        return {"querySet": self.query_set, "identity": self.identity, "ts": encode_ts(self.ts)}


def canonical_udf_path(path: object) -> str:
    """The canonical `module:function` form of a function path.

    Accepts the forms the official clients send: `x` (-> `x:default`), `x:f`, `x.js:f`
    (Rust/Python re-send subscriptions that way after reconnecting) and `dir/x:f`.

    Raises:
        ProtocolError: not a string of that form.
    """
    if not isinstance(path, str):
        raise ProtocolError(f"udfPath must be a string, got {_kind(path)}")
    if not path or len(path) > _MAX_PATH_LENGTH or path.count(":") > 1:
        raise ProtocolError(f"Invalid function path {path[:80]!r}: use 'module:function'")
    module, colon, function = path.partition(":")
    if module.endswith(".js"):
        module = module[: -len(".js")]
    if colon and not function:
        raise ProtocolError(f"Invalid function path {path!r}: the function name is empty")
    parts = module.split("/")
    if any(part in ("", ".", "..") for part in parts) or not module.isprintable():
        raise ProtocolError(f"Invalid function path {path!r}: bad module path")
    return f"{module}:{function or 'default'}"


def decode_args(raw: list[Any]) -> dict[str, Value]:
    """The arguments object of a call from its wire form `[ {...} ]` (Convex JSON).

    Raises:
        ValidationError: not exactly one object, or a malformed `$`-encoded value. The call
            fails; the connection stays open.
    """
    if len(raw) != 1 or not isinstance(raw[0], dict):
        raise ValidationError(
            "Function arguments must be sent as an array holding one object, got "
            f"{len(raw)} element(s)"
        )
    args = from_json(raw[0])
    assert isinstance(args, dict)
    return args


# ---------------------------------------------------------------------------------------------
# Client messages


@dataclass(frozen=True)
class Connect:
    """The first message on every socket."""

    session_id: str
    connection_count: int
    last_close_reason: str | None
    max_observed_timestamp: int | None
    client_ts: float | None
    #: The client asked for `QueryDiff`s (our extension, see the module docstring).
    result_diffs: bool = False


@dataclass(frozen=True)
class AddQuery:
    """Subscribe `query_id` to a query; `args` is still in wire form (`[ {...} ]`)."""

    query_id: QueryId
    udf_path: str
    args: list[Any]
    journal: str | None
    component_path: str | None


@dataclass(frozen=True)
class RemoveQuery:
    """Unsubscribe `query_id`."""

    query_id: QueryId


@dataclass(frozen=True)
class ModifyQuerySet:
    """Change the query set from version `base_version` to `new_version`."""

    base_version: int
    new_version: int
    modifications: tuple[AddQuery | RemoveQuery, ...]


@dataclass(frozen=True)
class Mutation:
    """Run a mutation; answered by a MutationResponse with the same `request_id`."""

    request_id: RequestId
    udf_path: str
    args: list[Any]
    component_path: str | None


@dataclass(frozen=True)
class Action:
    """Run an action; answered by an ActionResponse with the same `request_id`."""

    request_id: RequestId
    udf_path: str
    args: list[Any]
    component_path: str | None


@dataclass(frozen=True)
class Authenticate:
    """Set the identity: a user token, an admin key (maybe acting as a user), or none."""

    base_version: int
    token_type: Literal["User", "Admin", "None"]
    value: str | None
    impersonating: Mapping[str, Any] | None


@dataclass(frozen=True)
class Event:
    """Client telemetry; servers ignore it."""

    event_type: str
    event: Any


ClientMessage: TypeAlias = Connect | ModifyQuerySet | Mutation | Action | Authenticate | Event


def parse_client_message(data: str | bytes) -> ClientMessage:
    """Decode one text frame from a client.

    Unknown fields are ignored (newer clients may add some); missing or mistyped ones are not.

    Raises:
        ProtocolError: invalid JSON, nesting deeper than `MAX_JSON_DEPTH`, an unknown message
            type, or a field of the wrong type. The message says which.
    """
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"Invalid JSON message: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"A message must be a JSON object, got {_kind(message)}")
    check_json_depth(message)
    kind = message.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None or not isinstance(kind, str):
        raise ProtocolError(f"Unknown message type {str(kind)[:40]!r}")
    return parser(_Fields(message, kind))


class _Fields:
    """Typed access to one JSON object's fields, with errors naming message and field."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data, self.where = data, where

    def _fail(self, name: str, expected: str, got: object) -> ProtocolError:
        return ProtocolError(f"{self.where}.{name} must be {expected}, got {_kind(got)}")

    def u32(self, name: str) -> int:
        value = self.data.get(name)
        if type(value) is float and value.is_integer():
            value = int(value)  # some encoders write 3.0
        if type(value) is not int or not 0 <= value <= _U32_MAX:
            raise self._fail(name, "an integer from 0 to 2**32-1", value)
        return value

    def string(self, name: str) -> str:
        value = self.data.get(name)
        if not isinstance(value, str):
            raise self._fail(name, "a string", value)
        return value

    def optional_string(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is not None and not isinstance(value, str):
            raise self._fail(name, "a string or null", value)
        return value

    def optional_number(self, name: str) -> float | None:
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(name, "a number", value)
        return float(value)

    def optional_object(self, name: str) -> dict[str, Any] | None:
        value = self.data.get(name)
        if value is not None and not isinstance(value, dict):
            raise self._fail(name, "an object", value)
        return value

    def array(self, name: str) -> list[Any]:
        value = self.data.get(name)
        if not isinstance(value, list):
            raise self._fail(name, "an array", value)
        return value

    def udf_path(self) -> str:
        try:
            return canonical_udf_path(self.data.get("udfPath"))
        except ProtocolError as exc:
            raise ProtocolError(f"{self.where}: {exc}") from None


def _parse_connect(f: _Fields) -> Connect:
    observed = f.data.get("maxObservedTimestamp")
    return Connect(
        session_id=f.string("sessionId"),
        connection_count=f.u32("connectionCount"),
        last_close_reason=f.optional_string("lastCloseReason"),
        max_observed_timestamp=(
            None if observed is None else decode_ts(observed, f"{f.where}.maxObservedTimestamp")
        ),
        client_ts=f.optional_number("clientTs"),
        result_diffs=f.data.get("resultDiffs") == RESULT_DIFFS_VERSION,
    )


def _parse_modification(data: object, index: int) -> AddQuery | RemoveQuery:
    where = f"ModifyQuerySet.modifications[{index}]"
    if not isinstance(data, dict):
        raise ProtocolError(f"{where} must be an object, got {_kind(data)}")
    f = _Fields(data, where)
    kind = data.get("type")
    if kind == "Add":
        return AddQuery(
            query_id=f.u32("queryId"),
            udf_path=f.udf_path(),
            args=f.array("args"),
            journal=f.optional_string("journal"),
            component_path=f.optional_string("componentPath"),
        )
    if kind == "Remove":
        return RemoveQuery(query_id=f.u32("queryId"))
    raise ProtocolError(f"{where}.type must be 'Add' or 'Remove', got {str(kind)[:40]!r}")


def _parse_modify_query_set(f: _Fields) -> ModifyQuerySet:
    return ModifyQuerySet(
        base_version=f.u32("baseVersion"),
        new_version=f.u32("newVersion"),
        modifications=tuple(
            _parse_modification(m, i) for i, m in enumerate(f.array("modifications"))
        ),
    )


def _request_fields(f: _Fields) -> dict[str, Any]:
    """The fields Mutation and Action share (two message types on purpose, one layout)."""
    return {
        "request_id": f.u32("requestId"),
        "udf_path": f.udf_path(),
        "args": f.array("args"),
        "component_path": f.optional_string("componentPath"),
    }


def _parse_mutation(f: _Fields) -> Mutation:
    return Mutation(**_request_fields(f))


def _parse_action(f: _Fields) -> Action:
    return Action(**_request_fields(f))


def _parse_authenticate(f: _Fields) -> Authenticate:
    token_type = f.data.get("tokenType")
    if token_type not in ("User", "Admin", "None"):
        raise f._fail("tokenType", "'User', 'Admin' or 'None'", token_type)
    value = None if token_type == "None" else f.string("value")
    # JS sends `impersonating`; the Rust encoder would send `acting_as`.
    acting = f.optional_object("impersonating")
    if acting is None:
        acting = f.optional_object("acting_as")
    return Authenticate(f.u32("baseVersion"), token_type, value, acting)


def _parse_event(f: _Fields) -> Event:
    return Event(event_type=f.string("eventType"), event=f.data.get("event"))


_PARSERS: Final[dict[str, Callable[[_Fields], ClientMessage]]] = {
    "Connect": _parse_connect,
    "ModifyQuerySet": _parse_modify_query_set,
    "Mutation": _parse_mutation,
    "Action": _parse_action,
    "Authenticate": _parse_authenticate,
    "Event": _parse_event,
}


def check_json_depth(message: Any) -> None:
    """Refuse nesting deeper than `MAX_JSON_DEPTH`, iteratively, before any recursive decoder
    sees the message.

    Raises:
        ProtocolError: the message is nested too deeply.
    """
    stack: list[tuple[Any, int]] = [(message, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ProtocolError(f"Message is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))


def _kind(value: object) -> str:
    if value is None:
        return "null (or missing)"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# Server messages


def _log_lines(outcome: Outcome) -> list[str]:
    return list(outcome.log_lines)


def query_updated(query_id: QueryId, outcome: Outcome) -> Modification:
    """A Transition entry for a query's new value (`outcome.success`)."""
    return {
        "type": "QueryUpdated",
        "queryId": query_id,
        "value": outcome.json_value,
        "logLines": _log_lines(outcome),
        "journal": None,
    }


def query_failed(query_id: QueryId, outcome: Outcome) -> Modification:
    """A Transition entry for a query that raised (`errorData` only for a ConvexError)."""
    entry: Modification = {
        "type": "QueryFailed",
        "queryId": query_id,
        "errorMessage": outcome.error_message,
        "logLines": _log_lines(outcome),
        "journal": None,
    }
    _add_error_details(entry, outcome)
    return entry


def query_diff(query_id: QueryId, log_lines: tuple[str, ...]) -> Modification:
    """An empty `QueryDiff` entry (our extension, see the module docstring); add diffs to it
    with `add_diff`."""
    return {
        "type": "QueryDiff",
        "queryId": query_id,
        "diffs": [],
        "logLines": list(log_lines),
        "journal": None,
    }


def add_diff(entry: Modification, diff: ResultDiff, *, one: bool) -> None:
    """Append `diff` (rows in Convex JSON) to a `QueryDiff` entry; `one`: the new value is
    its single row."""
    entry["diffs"].append(
        {
            "removed": list(diff.removed),
            "inserted": [[position, to_json(row)] for position, row in diff.inserted],
            "updated": [[position, to_json(row)] for position, row in diff.updated],
            "one": one,
        }
    )


def query_removed(query_id: QueryId) -> Modification:
    """A Transition entry acknowledging a client's `Remove`."""
    return {"type": "QueryRemoved", "queryId": query_id}


def transition(
    start: StateVersion, end: StateVersion, modifications: list[Modification]
) -> ServerMessage:
    """A Transition from `start` (the previous Transition's end) to `end`."""
    return {
        "type": "Transition",
        "startVersion": start.to_json(),
        "endVersion": end.to_json(),
        "modifications": modifications,
    }


def mutation_response(request_id: RequestId, outcome: Outcome, ts: int | None) -> ServerMessage:
    """The answer to a Mutation; a success carries its commit `ts` (JS requires it)."""
    message: ServerMessage = {"type": "MutationResponse", "requestId": request_id}
    if outcome.success:
        assert ts is not None, "a successful mutation has a commit ts"
        message |= {"success": True, "result": to_json(outcome.value), "ts": encode_ts(ts)}
    else:
        message |= {"success": False, "result": outcome.error_message, "ts": None}
        _add_error_details(message, outcome)
    message["logLines"] = _log_lines(outcome)
    return message


def action_response(request_id: RequestId, outcome: Outcome) -> ServerMessage:
    """The answer to an Action (never has a ts)."""
    message: ServerMessage = {
        "type": "ActionResponse",
        "requestId": request_id,
        "success": outcome.success,
        "result": to_json(outcome.value) if outcome.success else outcome.error_message,
        "logLines": _log_lines(outcome),
    }
    if not outcome.success:
        _add_error_details(message, outcome)
    return message


def _add_error_details(message: dict[str, Any], outcome: Outcome) -> None:
    """A failure's `errorData` (a ConvexError's data) and `errorCode` (the library error's
    code, our extension: Convex's clients ignore fields they do not know)."""
    if outcome.has_error_data:
        message["errorData"] = to_json(outcome.error_data)
    if outcome.error_code is not None:
        message["errorCode"] = outcome.error_code


def auth_error(error: str, base_version: int | None, *, attempted: bool) -> ServerMessage:
    """Refuse an identity: `attempted` for a rejected Authenticate, False for a token that
    expired after it was accepted. The server closes the socket after sending it."""
    return {
        "type": "AuthError",
        "error": error,
        "baseVersion": base_version,
        "authUpdateAttempted": attempted,
    }


def fatal_error(error: str) -> ServerMessage:
    """A deterministic client error; the server closes the socket after sending it."""
    return {"type": "FatalError", "error": error}


def ping() -> ServerMessage:
    """Keeps clients from declaring the server inactive (Rust gives up after 30 s)."""
    return {"type": "Ping"}


def serialize(message: ServerMessage) -> str:
    """One server message as a JSON text frame."""
    return orjson.dumps(message).decode("utf-8")

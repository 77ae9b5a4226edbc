"""The Convex HTTP API (PROTOCOL.md §1) as plain request -> response functions.

No sockets here: a transport turns its HTTP request into an `HttpRequest`, calls
`HttpApi.handle` (on a worker thread: functions block), and writes the `HttpResponse` back.

Routes (all under `/api`)::

    POST /query /mutation /action /function   {path, args, format?}
    GET  /query?path=..&args=<json>&format=..
    POST /run/<dir>/<module>/<function>        {args, format?}   (default format: json)
    POST /query_ts                             -> {"ts": "<base64 u64>"}
    POST /query_at_ts                          {path, args, ts, format?}
    POST /query_batch                          {queries: [{path, args, format?}, ...]}

A function's outcome is HTTP 200 either way (`{"status": "success" | "error", ...}`);
problems with the request itself are non-2xx with `{"code", "message"}`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypeAlias

import orjson

from kernel_ext.errors import (
    AuthenticationError,
    HistoryUnavailable,
    ProtocolError,
    StoreError,
    ValidationError,
)
from kernel_ext.store.values import Value, from_json, to_json
from kernel_ext.sync.messages import canonical_udf_path, check_json_depth, decode_ts, encode_ts
from kernel_ext.sync.outcomes import Outcome, to_clean_json
from kernel_ext.sync.protocol import Identity

__all__ = [
    "ApiRunner",
    "HeaderAuthenticator",
    "HttpApi",
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "to_clean_json",
]

_ENCODED_FORMATS: Final = {"convex_encoded_json", "convex_json"}
_CLEAN_FORMATS: Final = {"json", "convex_clean_json", "export_json"}
_CLIENT_VERSION: Final = re.compile(
    r"^[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z][A-Za-z0-9_]*)*-\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?$"
)
_CORS_METHODS: Final = "GET, POST, OPTIONS, PATCH, DELETE, PUT"


#: Names of query parameters that may hold credentials (a match anywhere in the name, any
#: case, like jupyter_server's log scrubbing): their values are never logged.
@dataclass(frozen=True)
class HttpRequest:
    """An HTTP request as the API sees it.

    Attributes:
        method: `GET`, `POST`, ...
        path: the URL path, e.g. `/api/query` (no query string).
        query: query-string parameters (the last value of each).
        headers: header values by lower-case name.
        body: the raw body.
    """

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class HttpResponse:
    """What to send back: status, JSON body and headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body, decoded (for tests and logs)."""
        return orjson.loads(self.body) if self.body else None


class HttpError(Exception):
    """A request the API refuses before running anything; becomes `{"code", "message"}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


#: The kind of function a route runs (None: any kind).
Kind: TypeAlias = Literal["query", "mutation", "action"] | None


class ApiRunner(Protocol):
    """What the API needs to run functions (`kernel_ext.sync.runner.BackendRunner`)."""

    def latest_ts(self) -> int:
        """The timestamp of the latest commit."""

    def call(
        self, kind: Kind, path: str, args: Any, identity: Identity
    ) -> tuple[Outcome, int | None]:
        """Run a function; errors come back as failed outcomes."""

    def query_batch(
        self, queries: Sequence[tuple[str, Any]], identity: Identity
    ) -> tuple[list[Outcome], int]:
        """Run queries on one snapshot; their outcomes and its ts."""

    def query_at(self, path: str, args: Any, identity: Identity, ts: int) -> Outcome:
        """Run a query as of commit `ts`.

        Raises:
            HistoryUnavailable: that result cannot be known exactly (`Store.read_as_of`).
        """


class HeaderAuthenticator(Protocol):
    """Identity from an `Authorization` header (implemented by `ServerAuthenticator`)."""

    def authenticate_header(self, value: str | None) -> Identity:
        """The caller's identity.

        Raises:
            AuthenticationError: a refused token or key.
        """


def _json_response(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(body), {"Content-Type": "application/json"})


def _error_response(error: HttpError) -> HttpResponse:
    return _json_response(error.status, {"code": error.code, "message": error.message})


class HttpApi:
    """The HTTP API over a function runner.

    Args:
        runner: runs functions (blocking).
        authenticator: turns the `Authorization` header into an identity.
    """

    def __init__(
        self,
        runner: ApiRunner,
        authenticator: HeaderAuthenticator,
        deploy: Callable[[Mapping[str, Any]], Any] | None = None,
    ) -> None:
        self._runner = runner
        self._authenticator = authenticator
        self._deploy = deploy
        self._routes: dict[str, Callable[[HttpRequest, Identity], HttpResponse]] = {
            "/api/query": self._query,
            "/api/mutation": lambda r, i: self._call(r, i, "mutation"),
            "/api/action": lambda r, i: self._call(r, i, "action"),
            "/api/function": lambda r, i: self._call(r, i, None),
            "/api/query_ts": self._query_ts,
            "/api/query_at_ts": self._query_at_ts,
            "/api/query_batch": self._query_batch,
            "/api/push": self._push,
        }

    def handles(self, path: str) -> bool:
        """True for the paths this API serves (a transport routes the rest elsewhere)."""
        return path in self._routes or path.startswith("/api/run/")

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request. Never raises for bad input: it becomes a 4xx response."""
        cors = self._cors_headers(request)
        if request.method == "OPTIONS":
            return HttpResponse(204, b"", cors)
        try:
            response = self._dispatch(request)
        except HttpError as error:
            response = _error_response(error)
        return HttpResponse(response.status, response.body, {**response.headers, **cors})

    def _dispatch(self, request: HttpRequest) -> HttpResponse:
        route = self._routes.get(request.path)
        if route is None and request.path.startswith("/api/run/"):
            route = self._run
        if route is None:
            raise HttpError(404, "NotFound", f"No route for {request.path[:200]}")
        allowed = ("GET", "POST") if request.path in ("/api/query", "/api/query_ts") else ("POST",)
        if request.method not in allowed:
            raise HttpError(405, "MethodNotAllowed", f"{request.method} is not allowed here")
        _check_client_version(request.headers.get("convex-client"))
        return route(request, self._identity(request))

    @staticmethod
    def _cors_headers(request: HttpRequest) -> dict[str, str]:
        # As the Convex backend does: mirror the origin; credentials are explicit tokens.
        origin = request.headers.get("origin")
        if not origin:
            return {}
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": _CORS_METHODS,
            "Vary": "Origin",
        }
        wanted = request.headers.get("access-control-request-headers")
        if wanted:
            headers["Access-Control-Allow-Headers"] = wanted
        return headers

    def _identity(self, request: HttpRequest) -> Identity:
        # Credentials come in headers only: a query string ends up in access logs, proxies
        # and browser history (Convex also accepts `?adminKey=`; this server does not).
        if "adminKey" in request.query:
            raise HttpError(
                401,
                "Unauthenticated",
                "The admin key is not accepted in the URL (it would be logged): send the "
                "header 'Authorization: Convex <admin key>'",
            )
        header = request.headers.get("authorization")
        try:
            return self._authenticator.authenticate_header(header)
        except AuthenticationError as exc:
            raise HttpError(401, "Unauthenticated", str(exc)) from exc

    # -- routes --------------------------------------------------------------------------

    def _query(self, request: HttpRequest, identity: Identity) -> HttpResponse:
        if request.method == "GET":
            raw_args = request.query.get("args")
            body: dict[str, Any] = {
                "path": request.query.get("path"),
                "args": _parse_json(raw_args, "args") if raw_args is not None else {},
                "format": request.query.get("format"),
            }
        else:
            body = _body(request)
        return self._run_one(body, identity, "query")

    def _call(self, request: HttpRequest, identity: Identity, kind: Kind) -> HttpResponse:
        return self._run_one(_body(request), identity, kind)

    def _run(self, request: HttpRequest, identity: Identity) -> HttpResponse:
        parts = urllib.parse.unquote(request.path[len("/api/run/") :]).strip("/").split("/")
        if len(parts) < 2 or not all(parts):
            raise HttpError(404, "NotFound", "Use /api/run/<module path>/<function>")
        body = _body(request) if request.body else {}
        body = {**body, "path": "/".join(parts[:-1]) + ":" + parts[-1]}
        body.setdefault("format", "json")
        return self._run_one(body, identity, None)

    def _run_one(self, body: Mapping[str, Any], identity: Identity, kind: Kind) -> HttpResponse:
        path, encode = _path(body), _encoder(body.get("format"))
        args = _args(body.get("args"))
        if isinstance(args, Outcome):
            return _json_response(200, _udf_response(args, encode))
        outcome, _ = self._runner.call(kind, path, args, identity)
        return _json_response(200, _udf_response(outcome, encode))

    def _query_ts(self, request: HttpRequest, identity: Identity) -> HttpResponse:
        return _json_response(200, {"ts": encode_ts(self._runner.latest_ts())})

    def _query_at_ts(self, request: HttpRequest, identity: Identity) -> HttpResponse:
        body = _body(request)
        try:
            wanted = decode_ts(body.get("ts"), "ts")
        except ProtocolError as exc:
            raise HttpError(400, "BadRequest", str(exc)) from exc
        path, encode = _path(body), _encoder(body.get("format"))
        args = _args(body.get("args"))
        if isinstance(args, Outcome):
            return _json_response(200, _udf_response(args, encode))
        try:
            outcome = self._runner.query_at(path, args, identity, wanted)
        except HistoryUnavailable as exc:
            raise HttpError(400, "HistoricalQueryUnsupported", str(exc)) from exc
        return _json_response(200, _udf_response(outcome, encode))

    def _push(self, request: HttpRequest, identity: Identity) -> HttpResponse:
        """Define functions or the schema from pushed source (admin only)."""
        if self._deploy is None:
            raise HttpError(404, "NotFound", "This server does not accept pushed functions")
        if not identity.admin:
            raise HttpError(403, "Forbidden", "This needs the admin key")
        try:
            defined = self._deploy(_body(request))
        except Exception as exc:  # bad pushed code is the pusher's problem, reported as 400
            raise _push_error(exc) from exc
        return _json_response(200, {"status": "success", "value": defined})

    def _query_batch(self, request: HttpRequest, identity: Identity) -> HttpResponse:
        items = _body(request).get("queries")
        if not isinstance(items, list) or not all(isinstance(q, dict) for q in items):
            raise HttpError(400, "BadRequest", "queries must be an array of {path, args} objects")
        prepared = [(_path(q), _args(q.get("args")), _encoder(q.get("format"))) for q in items]
        runnable = [(p, a) for p, a, _ in prepared if not isinstance(a, Outcome)]
        outcomes = iter(self._runner.query_batch(runnable, identity)[0] if runnable else [])
        results = [
            _udf_response(a if isinstance(a, Outcome) else next(outcomes), encode)
            for _, a, encode in prepared
        ]
        return _json_response(200, {"results": results})


# -- request parsing ----------------------------------------------------------------------


def _push_error(exc: Exception) -> HttpError:
    # The library's own errors (a bad schema, a bad header) keep their code, so the pusher
    # raises the same class as when it defines the cell locally.
    code = exc.code if isinstance(exc, StoreError) else "BadPush"
    return HttpError(400, code, f"{type(exc).__name__}: {exc}")


def _check_client_version(value: str | None) -> None:
    if value is not None and not _CLIENT_VERSION.match(value):
        raise HttpError(
            400, "InvalidClientVersion", f"Convex-Client must be <client>-<semver>, got {value!r}"
        )


def _parse_json(data: str | bytes, what: str) -> Any:
    try:
        value = orjson.loads(data)
        check_json_depth(value)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "BadJsonBody", f"{what} is not valid JSON: {exc}") from exc
    except ProtocolError as exc:
        raise HttpError(400, "BadJsonBody", f"{what}: {exc}") from exc
    return value


def _body(request: HttpRequest) -> dict[str, Any]:
    body = _parse_json(request.body or b"null", "The request body")
    if not isinstance(body, dict):
        raise HttpError(400, "BadJsonBody", "The request body must be a JSON object")
    return body


def _path(body: Mapping[str, Any]) -> str:
    try:
        return canonical_udf_path(body.get("path"))
    except ProtocolError as exc:
        raise HttpError(400, "BadRequest", str(exc)) from exc


def _encoder(name: object) -> Callable[[Value], Any]:
    if name is None or name in _CLEAN_FORMATS:
        return to_clean_json
    if name in _ENCODED_FORMATS:
        return to_json
    raise HttpError(400, "BadFormat", f"Unknown format {str(name)[:40]!r}")


def _args(raw: object) -> dict[str, Value] | Outcome:
    """Arguments from `{...}` or the legacy `[{...}]`; a bad value fails the call only."""
    if raw is None:
        return {}
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    if not isinstance(raw, dict):
        return Outcome.bad_arguments("the arguments must be an object")
    try:
        args = from_json(raw)
    except ValidationError as exc:
        return Outcome.bad_arguments(str(exc))
    assert isinstance(args, dict)
    return args


def _udf_response(outcome: Outcome, encode: Callable[[Value], Any]) -> dict[str, Any]:
    body: dict[str, Any]
    if outcome.success:
        body = {"status": "success", "value": encode(outcome.value)}
    else:
        body = {"status": "error", "errorMessage": outcome.error_message}
        if outcome.error_code is not None:
            body["errorCode"] = outcome.error_code
        if outcome.has_error_data:
            body["errorData"] = encode(outcome.error_data)
    if outcome.log_lines:
        body["logLines"] = list(outcome.log_lines)
    return body

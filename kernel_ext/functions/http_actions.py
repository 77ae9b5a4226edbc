"""HTTP actions: `http.py` in a functions folder routes HTTP requests to handlers.

    from kernel_ext import http_router, http_action, Response

    @http_action
    def hello(ctx, request):
        return Response(f"hello {request.json()['name']}", headers={"X-Answer": "yes"})

    http = http_router()
    http.route(path="/hello", method="POST", handler=hello)
    http.route(path_prefix="/files/", method="GET", handler=hello)

Routing is Convex's (`convex/server` `HttpRouter`): an exact `path` for the request's method
wins, else the longest `path_prefix` of that method the path starts with; HEAD runs the GET
route and sends no body; no route (also: the path is routed for another method only) is 404.
A handler gets an action's ctx (`ctx.run_query/run_mutation/run_action`, `ctx.scheduler`,
`ctx.auth`) and the `Request`; it returns a `Response`. A handler that raises, or returns
anything else, answers 500 without its error's message (the server logs it, with the
traceback): an HTTP action's caller is anyone on the network.

This module is the transport-free part: the router, the request and response types and
`run_http_action`; `kernel_ext.sync.site` serves them over HTTP.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kernel_ext.errors import ValidationError
from kernel_ext.functions.context import ActionCtx, Runner
from kernel_ext.functions.limits import contained

__all__ = [
    "MAX_BODY_SIZE",
    "ROUTABLE_METHODS",
    "Headers",
    "HttpAction",
    "HttpRouter",
    "Request",
    "Response",
    "http_action",
    "http_router",
    "run_http_action",
]

_log = logging.getLogger(__name__)

#: The methods a route may have (as Convex: HEAD runs GET; CONNECT and TRACE are not served).
ROUTABLE_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
#: Largest request or response body of an HTTP action (bytes), as Convex's 20 MiB.
MAX_BODY_SIZE: Final = 20 << 20
#: The answer's body when a handler failed: nothing of the error (it may hold secrets).
_FAILED: Final = (
    b'{"code":"InternalServerError","message":"The HTTP action failed; the server\'s log says why"}'
)


class Headers(Mapping[str, str]):
    """HTTP headers, looked up by name in any case; a name sent several times has its values
    joined with ", " (as the Fetch API's `Headers.get`).

    Args:
        items: `(name, value)` pairs, or a mapping.
    """

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._values: dict[str, tuple[str, str]] = {}  # lower name -> (name as sent, value)
        self._pairs: list[tuple[str, str]] = []
        for given_name, given_value in pairs:
            name, value = str(given_name), str(given_value)
            self._pairs.append((name, value))
            key = name.lower()
            known = self._values.get(key)
            self._values[key] = (name, value if known is None else f"{known[1]}, {value}")

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._values.values())

    def __len__(self) -> int:
        return len(self._values)

    def pairs(self) -> list[tuple[str, str]]:
        """Every `(name, value)` as given, repeats included (e.g. several `Set-Cookie`)."""
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class Request:
    """The request an HTTP action handles.

    Attributes:
        method: `GET`, `POST`, ... (a HEAD request shows as `HEAD`: it runs the GET route).
        url: the whole URL, e.g. `http://127.0.0.1:3211/hello?x=1` (inside Jupyter, the path
            is the one after `<base_url>convex/http`).
        headers: the request's headers (`request.headers["content-type"]`, any case).
    """

    method: str
    url: str
    headers: Headers = field(default_factory=Headers)
    _body: bytes = b""

    @property
    def path(self) -> str:
        """The URL's path, e.g. `/hello` (an extension: Convex handlers parse `url`)."""
        return urllib.parse.urlsplit(self.url).path

    def body(self) -> bytes:
        """The body's bytes (`b""` when there is none)."""
        return self._body

    def text(self) -> str:
        """The body decoded as UTF-8 (bad bytes replaced)."""
        return self._body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: it is not JSON (an uncaught error answers 500, as any other).
        """
        return json.loads(self._body)


class Response:
    """What an HTTP action answers.

    Args:
        body: text (sent as UTF-8, `Content-Type: text/plain;charset=UTF-8` unless given),
            bytes, or None (no body).
        status: the HTTP status, 200..599.
        headers: a mapping or `(name, value)` pairs (pairs may repeat a name).

    Raises:
        TypeError: the body is of another type.
        ValueError: the status is not an HTTP status a response may have.
    """

    def __init__(
        self,
        body: str | bytes | None = None,
        status: int = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"A Response's status must be an int from 200 to 599, got {status!r}")
        self.status = status
        self.headers = Headers(headers or ())
        if isinstance(body, str):
            self.body = body.encode("utf-8")
            if "content-type" not in self.headers:
                self.headers = Headers([*self.headers.pairs(), _TEXT])
        elif isinstance(body, bytes | bytearray | memoryview):
            self.body = bytes(body)
        elif body is None:
            self.body = b""
        else:
            raise TypeError(
                f"A Response's body is str, bytes or None, got {type(body).__name__}: for JSON "
                "use Response.json(value)"
            )

    @classmethod
    def json(
        cls,
        value: Any,
        status: int = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> Response:
        """A JSON response (`Content-Type: application/json`), as the Fetch API's
        `Response.json(value)`."""
        pairs = Headers(headers or ()).pairs()
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
        return cls(json.dumps(value).encode("utf-8"), status, pairs)

    def __repr__(self) -> str:
        return f"<Response {self.status}, {len(self.body)} bytes>"


_TEXT: Final = ("Content-Type", "text/plain;charset=UTF-8")


class HttpAction:
    """A handler made with `@http_action`: `handler(ctx, request) -> Response`."""

    def __init__(self, handler: Callable[[ActionCtx, Request], Any]) -> None:
        if not callable(handler):
            raise TypeError(f"@http_action decorates a function, got {handler!r}")
        self.handler = handler
        self.__name__ = getattr(handler, "__name__", "http_action")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """HTTP actions run when a request is routed to them, never directly."""
        raise TypeError(
            f"{self.__name__} is an HTTP action: route it in http.py with "
            "http.route(path=..., method=..., handler=...) and send it a request"
        )


def http_action(handler: Callable[[ActionCtx, Request], Any]) -> HttpAction:
    """Define an HTTP action: `@http_action def f(ctx, request): return Response(...)`."""
    return HttpAction(handler)


@dataclass(frozen=True)
class _Match:
    action: HttpAction
    route: str  # "/path" or "/prefix/*", as logs name it


class HttpRouter:
    """The routes of `http.py` (`http = http_router()`). See the module docstring."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, HttpAction]] = {}
        self._prefixes: dict[str, dict[str, HttpAction]] = {}  # method -> prefix -> action

    def route(
        self,
        *,
        method: str,
        handler: HttpAction,
        path: str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Route requests of `method` for exactly `path` (starting with "/"), or for every
        path starting with `path_prefix` (starting and ending with "/"), to `handler`.

        Raises:
            ValidationError: a method other than GET POST PUT DELETE OPTIONS PATCH, both or
                neither of `path` and `path_prefix`, a malformed or reserved one, or a route
                defined already.
            TypeError: `handler` is not made with `@http_action`.
        """
        if not isinstance(handler, HttpAction):
            raise TypeError(f"http.route handler must be an @http_action function, got {handler!r}")
        _check_method(method)
        if (path is None) == (path_prefix is None):
            raise ValidationError("http.route takes exactly one of path= and path_prefix=")
        if path is not None:
            _check_path(path, "path")
            methods = self._exact.setdefault(path, {})
            if method in methods:
                raise ValidationError(f"Path {path!r} for method {method} is already routed")
            methods[method] = handler
            return
        assert path_prefix is not None
        _check_path(path_prefix, "path_prefix")
        if not path_prefix.endswith("/"):
            raise ValidationError(f"path_prefix {path_prefix!r} must end with a /")
        prefixes = self._prefixes.setdefault(method, {})
        if path_prefix in prefixes:
            raise ValidationError(f"{method} path_prefix {path_prefix!r} is already routed")
        prefixes[path_prefix] = handler

    def routes(self) -> list[tuple[str, str]]:
        """`[(path or "prefix/*", method)]`, exact paths first, each group sorted."""
        exact = [(p, m) for p in sorted(self._exact) for m in sorted(self._exact[p])]
        prefixed = [(f"{p}*", m) for m in sorted(self._prefixes) for p in sorted(self._prefixes[m])]
        return exact + prefixed

    def lookup(self, method: str, path: str) -> _Match | None:
        """The route of a request (HEAD: GET's), or None."""
        method = "GET" if method == "HEAD" else method
        action = self._exact.get(path, {}).get(method)
        if action is not None:
            return _Match(action, path)
        prefixes = self._prefixes.get(method, {})
        for prefix in sorted(prefixes, key=len, reverse=True):
            if path.startswith(prefix):
                return _Match(prefixes[prefix], f"{prefix}*")
        return None


def http_router() -> HttpRouter:
    """A new router: `http = http_router()` in `http.py`."""
    return HttpRouter()


def _check_method(method: object) -> None:
    if method == "HEAD":
        raise ValidationError(
            "HEAD cannot be routed: a HEAD request runs the GET route and sends no body"
        )
    if method not in ROUTABLE_METHODS:
        raise ValidationError(
            f"{method!r} is not an HTTP method a route may have: use one of "
            f"{', '.join(ROUTABLE_METHODS)}"
        )


def _check_path(path: object, what: str) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValidationError(f"{what} {path!r} must be a string starting with a /")
    if path == "/.files" or path.startswith("/.files/"):
        raise ValidationError(f"{what} {path!r} is reserved (Convex serves files there)")


def run_http_action(
    router: HttpRouter | None, request: Request, identity: Any, runner: Runner
) -> Response:
    """Route `request` and run its handler with an action's ctx (blocking); never raises
    for what the handler does.

    Returns:
        The handler's `Response` (for HEAD, the GET route's: the transport sends its
        headers, with the body's Content-Length, and no body); 404 when nothing is routed
        there; 500 (the error logged here with its traceback, never sent) when the handler
        raised, returned something else than a `Response`, or a body over `MAX_BODY_SIZE`.
    """
    path = request.path
    match = None if router is None else router.lookup(request.method, path)
    if match is None:
        return Response(f"No HttpAction routed for {path}", 404)
    what = f"HTTP action {request.method} {match.route}"
    try:
        result = match.action.handler(ActionCtx(identity, runner), request)
    except BaseException as exc:
        error = contained(exc, what)
        if not isinstance(error, Exception):  # Ctrl-C on the main thread
            raise
        _log.error("%s failed", what, exc_info=error)
        return _failed()
    if not isinstance(result, Response):
        _log.error(
            "%s returned %s, not a Response: return Response(body, status, headers)",
            what,
            type(result).__name__,
        )
        return _failed()
    if len(result.body) > MAX_BODY_SIZE:
        _log.error(
            "%s returned a body of %d bytes, over the limit of %d bytes (%d MiB)",
            what,
            len(result.body),
            MAX_BODY_SIZE,
            MAX_BODY_SIZE >> 20,
        )
        return _failed()
    return result


def _failed() -> Response:
    return Response(_FAILED, 500, {"Content-Type": "application/json"})

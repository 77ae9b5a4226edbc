"""The HTTP actions site: requests on `serve --site-port` (default: the port + 1, as Convex's
3210/3211) run the routes of the functions folder's `http.py`.

Transport only (tornado, as `kernel_ext.sync.server`): `HttpActionHandler` reads a request
(bodies up to `MAX_BODY_SIZE`; a larger one gets 413 with a message), runs
`Backend.run_http` on the server's action threads and writes the `Response` back. Routing,
ctx and the 500-on-failure rule are `kernel_ext.functions.http_actions`'.

Identity: `Authorization: Bearer <JWT>` is verified as the sync server verifies tokens when
the server has an auth provider (`--auth-*`); a refused token gets 401. Without a provider,
or with another scheme (webhooks send their own `Basic ...` or signatures), the handler runs
without a user identity and reads the header itself.

Unlike the API port, the site does not refuse foreign Host headers: HTTP actions are public
endpoints meant for webhooks, which reach a development machine through tunnels (ngrok,
cloudflared) that keep their own host name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
from typing import Any, Final

import tornado.httpserver
import tornado.netutil
import tornado.web

from kernel_ext.errors import AuthenticationError
from kernel_ext.functions.backend import Backend
from kernel_ext.functions.http_actions import MAX_BODY_SIZE, Headers, Request, Response
from kernel_ext.functions.uris import scrub_uri
from kernel_ext.sync.auth import ServerAuthenticator

__all__ = ["HttpActionHandler", "SiteServer", "bind_site_sockets"]

_log = logging.getLogger(__name__)

#: A body over `MAX_BODY_SIZE` but declared at most this long is read (and dropped) before
#: its 413 goes out: clients such as urllib send it all before they read the answer.
_DRAIN_LIMIT: Final = 256 << 20


class SiteServer:
    """Runs HTTP actions for a transport (its own port, or Jupyter's routes).

    Args:
        backend: the store, its functions and `http.py`'s routes.
        authenticator: verifies `Bearer` tokens (its provider; None refuses none: see above).
        executor: the threads HTTP actions run on (actions may run long).
    """

    def __init__(
        self,
        backend: Backend,
        authenticator: ServerAuthenticator,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.backend, self.authenticator, self.executor = backend, authenticator, executor
        self._http_server: tornado.httpserver.HTTPServer | None = None

    def user_of(self, authorization: str | None) -> Any:
        """The user identity of an `Authorization` header (None: anonymous).

        Raises:
            AuthenticationError: a `Bearer` token that the configured provider refuses.
        """
        if self.authenticator.provider is None or not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.authenticator.authenticate_user(token.strip()).user

    async def run(self, request: Request) -> Response:
        """Answer `request` on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._run, request)

    def _run(self, request: Request) -> Response:
        try:
            user = self.user_of(request.headers.get("authorization"))
        except AuthenticationError as exc:
            return Response.json({"code": "Unauthenticated", "message": str(exc)}, 401)
        return self.backend.run_http(request, user)

    def application(self) -> tornado.web.Application:
        """Every path goes to the HTTP actions."""
        return tornado.web.Application([(r"/.*", HttpActionHandler, {"site": self})])

    async def start(self, host: str, port: int, *, fallback: bool = False) -> tuple[int, str]:
        """Listen on `host:port` (call on the loop); with `fallback`, a free port when that
        one is taken. Returns the port and a warning to show ("" when none is due).

        Raises:
            OSError: the port is taken (and no `fallback`) or the address is not ours.
        """
        sockets, warning = bind_site_sockets(host, port, fallback=fallback)
        self._http_server = tornado.httpserver.HTTPServer(
            self.application(), max_body_size=MAX_BODY_SIZE, xheaders=False
        )
        self._http_server.add_sockets(sockets)
        return int(sockets[0].getsockname()[1]), warning

    async def stop(self) -> None:
        """Stop accepting and close the open connections (running actions finish)."""
        if self._http_server is None:
            return
        self._http_server.stop()
        try:
            await asyncio.wait_for(self._http_server.close_all_connections(), 5.0)
        except TimeoutError:
            _log.warning("some HTTP action connections did not close in time")


def bind_site_sockets(host: str, port: int, *, fallback: bool) -> tuple[list[Any], str]:
    """Sockets listening on `host:port`; with `fallback`, on a free port when `port` is 0,
    out of range or taken (and a warning that says so; "" otherwise).

    Raises:
        OSError: the port is taken (and no `fallback`) or the address is not ours.
    """
    if fallback and not 0 < port <= 65535:
        sockets = tornado.netutil.bind_sockets(0, host)
        return sockets, (
            f"warning: HTTP actions are served on a free port, {_port(sockets)}, as the API "
            "port is 0 (choose one with --site-port)"
        )
    try:
        return tornado.netutil.bind_sockets(port, host), ""
    except OSError as exc:
        if not fallback or exc.errno != errno.EADDRINUSE:
            raise
    sockets = tornado.netutil.bind_sockets(0, host)
    return sockets, (
        f"warning: port {port} is taken, so HTTP actions are served on port {_port(sockets)} "
        "instead (choose one with --site-port)"
    )


def _port(sockets: list[Any]) -> int:
    return int(sockets[0].getsockname()[1])


@tornado.web.stream_request_body
class HttpActionHandler(tornado.web.RequestHandler):
    """Any method on any path: the routed HTTP action's answer.

    `path_prefix` (a route keyword) is cut from the path the action sees (Jupyter mounts the
    site under `<base_url>convex/http`).
    """

    site: SiteServer
    _chunks: list[bytes]
    _received = 0
    _too_large: int | None = None  # the declared (or received) size of a body over the limit

    def initialize(self, site: SiteServer, path_prefix: str = "") -> None:
        """Tornado calls this with the route's keyword arguments."""
        self.site, self.path_prefix = site, path_prefix.rstrip("/")
        # Logged URIs (access log, errors) never show credentials; the handler's URL keeps
        # them (its query was parsed already).
        self._url = self._request_url()
        self.request.uri = scrub_uri(self.request.uri or "")

    def _request_url(self) -> str:
        path = self.request.path[len(self.path_prefix) :] or "/"
        query = f"?{self.request.query}" if self.request.query else ""
        return f"{self.request.protocol}://{self.request.host}{path}{query}"

    def prepare(self) -> Any:
        """Check the declared body length (tornado's own limit would answer a bare 400)."""
        self._chunks = []
        declared = self.request.headers.get("Content-Length", "")
        size = int(declared) if declared.isdigit() else 0
        if size <= MAX_BODY_SIZE:
            return None
        self._too_large = size
        assert self.request.connection is not None
        self.request.connection.set_max_body_size(size)  # type: ignore[attr-defined]
        if size > _DRAIN_LIMIT:
            self._refuse_too_large()  # the connection closes after the answer
        return None

    def data_received(self, chunk: bytes) -> None:
        """A piece of the body (dropped once the body is over the limit)."""
        self._received += len(chunk)
        if self._too_large is None and self._received > MAX_BODY_SIZE:
            self._too_large, self._chunks = self._received, []
        if self._too_large is None:
            self._chunks.append(chunk)

    def _refuse_too_large(self) -> None:
        message = (
            f"The request body is {self._too_large:,} bytes or more, over the limit of "
            f"{MAX_BODY_SIZE:,} bytes ({MAX_BODY_SIZE >> 20} MiB) for an HTTP action. Send "
            "less per request (or upload files with ctx.storage.generate_upload_url())."
        )
        self.set_status(413)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"code": "PayloadTooLarge", "message": message}))

    async def _answer(self) -> None:
        if self._too_large is not None:
            self._refuse_too_large()
            return
        request = Request(
            method=self.request.method or "GET",
            url=self._url,
            headers=Headers(self.request.headers.get_all()),
            _body=b"".join(self._chunks),
        )
        try:
            response = await self.site.run(request)
        except (asyncio.CancelledError, concurrent.futures.CancelledError, RuntimeError):
            self.set_status(503)  # the server is stopping: the call was dropped
            self.set_header("Content-Type", "application/json")
            self.finish(b'{"code":"Unavailable","message":"The server is shutting down"}')
            return
        self.set_status(response.status)
        self.clear_header("Content-Type")  # only the action's own headers
        for name, value in response.headers.pairs():
            self.add_header(name, value)
        self.finish(response.body)  # for HEAD tornado sends the headers only

    async def get(self, *args: str) -> None:
        """Every method runs the routed action (HEAD: the GET route)."""
        await self._answer()

    head = post = put = delete = patch = options = get

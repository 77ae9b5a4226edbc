"""The standalone server: the sync WebSocket and the HTTP API on one port.

Transport: tornado (installed with jupyter-server, which is built on it). The `websockets`
library was the first choice, but its HTTP parser refuses request bodies (`Request.parse`
rejects any `Content-Length` but 0), so `POST /api/mutation {...}` cannot be served through
its `process_request` hook. Tornado serves HTTP/1.1 with bodies, keep-alive and WebSockets on
one port, and the same handlers can later be mounted in jupyter-server's own application.

The handlers are thin: `SyncSocketHandler` pumps frames into a `SyncConnection` (which
drives the sans-I/O `SyncProtocol`); `ApiHandler` turns a request into an `HttpRequest` for
`HttpApi.handle`, run on a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from socket import gethostname
from typing import Any, Final

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web
import tornado.websocket

from kernel_ext.functions.backend import Backend
from kernel_ext.functions.limits import DEFAULT_TIME_LIMIT
from kernel_ext.functions.storage_http import storage_routes
from kernel_ext.functions.uris import scrub_uri
from kernel_ext.sync.auth import AuthProvider, ServerAuthenticator
from kernel_ext.sync.connection import (
    MAX_CONCURRENT_CALLS,
    MAX_SUBSCRIPTIONS,
    SyncConnection,
)
from kernel_ext.sync.deploy import Deployer
from kernel_ext.sync.http import HttpApi, HttpRequest
from kernel_ext.sync.protocol import PING_INTERVAL
from kernel_ext.sync.runner import BackendRunner

__all__ = ["CLOSE_GOING_AWAY", "MAX_MESSAGE_SIZE", "SyncServer", "run_server", "url_for"]

_log = logging.getLogger(__name__)

#: Largest WebSocket message or HTTP body accepted (bytes); larger ones close that connection
#: (WebSocket close code 1009) or get HTTP 413.
MAX_MESSAGE_SIZE: Final = 16 << 20
#: A body over `MAX_MESSAGE_SIZE` but declared at most this long is read (and dropped) before
#: its 413 goes out, so that clients which send it all before reading see the answer.
_DRAIN_LIMIT: Final = 256 << 20
#: WebSocket close code when the server stops (1001 "going away": clients reconnect).
CLOSE_GOING_AWAY: Final = 1001
_LOOPBACK_NAMES: Final = {"localhost", "127.0.0.1", "::1"}


class _Handler(tornado.web.RequestHandler):
    """Keeps credentials out of logged URIs; refuses foreign Host headers when serving
    loopback only (DNS rebinding)."""

    server: SyncServer

    def initialize(self, server: SyncServer) -> None:
        """Tornado calls this with the route's keyword arguments, before it answers anything
        (even a 405 that comes before `prepare`)."""
        self.server = server
        # Every log line about this request (access log, errors) shows the URI: no secrets.
        # The query arguments were parsed already and keep their values.
        self.request.uri = scrub_uri(self.request.uri or "")

    def prepare(self) -> None:
        """Check the Host header before anything else."""
        if not self.server.host_allowed(self.request.host_name):
            raise tornado.web.HTTPError(403, "Unexpected Host header")


class SyncSocketHandler(tornado.websocket.WebSocketHandler, _Handler):
    """`GET /api/sync` and `GET /api/<client version>/sync`."""

    connection: SyncConnection | None = None

    def check_origin(self, origin: str) -> bool:
        """Accept browsers from any origin, as Convex does: credentials are explicit tokens
        in messages, never cookies."""
        return True

    def open(self, *args: str, **kwargs: str) -> None:
        """A client connected: start its session."""
        # Small frames go out at once: a mutation's response and its Transition are two
        # frames, and Nagle's algorithm would hold the second for the peer's delayed ACK.
        self.set_nodelay(True)
        client = self.request.headers.get("Convex-Client", "")
        keeps_session = not client.startswith(("python-", "rust-"))
        self.connection = self.server.new_connection(self._send, self._close_with, keeps_session)
        self.server.sockets.add(self)

    def on_message(self, message: str | bytes) -> None:
        """One frame from the client."""
        if self.connection is not None:
            self.connection.receive_text(message)

    def on_close(self) -> None:
        """The socket closed (either side)."""
        self.server.sockets.discard(self)
        if self.connection is not None:
            self.connection.connection_lost()

    def _send(self, text: str) -> None:
        try:
            future = self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            return
        # A write to a socket that closes meanwhile fails later; nobody needs to know.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _close_with(self, code: int, reason: str) -> None:
        self.close(code, reason)


@tornado.web.stream_request_body
class ApiHandler(_Handler):
    """Every `/api/...` route of the HTTP API.

    The body is streamed in (`data_received`) so that one over `MAX_MESSAGE_SIZE` gets a 413
    with a message instead of tornado's bare 400: a declared length up to `_DRAIN_LIMIT` is
    read and dropped first (clients such as urllib send the whole body before they read the
    answer, and would otherwise see a reset connection), a larger one is refused at once.
    """

    _chunks: list[bytes]
    _too_large: int | None = None  # the declared length of a body over the limit

    def prepare(self) -> None:
        """Check the Host header, then the declared body length."""
        super().prepare()
        self._chunks = []
        declared = self.request.headers.get("Content-Length", "")
        size = int(declared) if declared.isdigit() else 0
        if size <= MAX_MESSAGE_SIZE:
            return
        self._too_large = size
        # Never tornado's own limit: it would answer 400 with an empty body.
        assert self.request.connection is not None
        self.request.connection.set_max_body_size(size)  # type: ignore[attr-defined]
        if size > _DRAIN_LIMIT:
            self._refuse_too_large()  # the connection closes after the answer

    def data_received(self, chunk: bytes) -> None:
        """A piece of the body (dropped if the body is over the limit)."""
        if self._too_large is None:
            self._chunks.append(chunk)

    def _refuse_too_large(self) -> None:
        message = (
            f"The request body is {self._too_large:,} bytes, over this server's limit of "
            f"{MAX_MESSAGE_SIZE:,} bytes ({MAX_MESSAGE_SIZE >> 20} MiB) per request. Send less "
            "per request (split the arguments, or import rows in batches)."
        )
        self.set_status(413)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"code": "PayloadTooLarge", "message": message}))

    async def _handle(self) -> None:
        if self._too_large is not None:
            self._refuse_too_large()
            return
        request = HttpRequest(
            method=self.request.method or "GET",
            path=self.request.path,
            query={
                k: v[-1].decode("utf-8", "replace") for k, v in self.request.query_arguments.items()
            },
            headers={k.lower(): v for k, v in self.request.headers.get_all()},
            body=b"".join(self._chunks),
        )
        try:
            response = await self.server.run_http(request)
        except (asyncio.CancelledError, concurrent.futures.CancelledError, RuntimeError):
            # The call was dropped (or the pool is gone) because the server is stopping.
            self.set_status(503)
            self.set_header("Content-Type", "application/json")
            self.finish(b'{"code":"Unavailable","message":"The server is shutting down"}')
            return
        self.set_status(response.status)
        for name, value in response.headers.items():
            self.set_header(name, value)
        self.finish(response.body)

    async def get(self, *args: str) -> None:
        """GET routes (`/api/query`, `/api/query_ts`)."""
        await self._handle()

    async def post(self, *args: str) -> None:
        """POST routes."""
        await self._handle()

    async def options(self, *args: str) -> None:
        """CORS preflight."""
        await self._handle()


class NotFoundHandler(_Handler):
    """Any other URL: 404 (through `_Handler`, so its URI is logged without secrets)."""

    def prepare(self) -> None:
        """Refuse."""
        super().prepare()
        raise tornado.web.HTTPError(404)


class RootHandler(_Handler):
    """`GET /`: a sign of life."""

    def get(self) -> None:
        """Say what is running."""
        self.set_header("Content-Type", "text/plain")
        self.finish("This Convex deployment is running (convex-notebook).\n")


class SyncServer:
    """The Convex sync WebSocket and HTTP API over a backend.

    Args:
        backend: the store and its functions (not closed by the server).
        admin_key: grants internal functions and impersonation.
        auth: how user tokens are verified; None refuses them all.
        ping_interval: idle seconds before a JSON Ping.
        tick_interval: how often connections check pings and token expiry.
        workers: threads for mutations and HTTP calls (and as many for actions).
        push_dir: where modules pushed by an admin are written (a temporary folder if None).
        time_limit: seconds each query and mutation execution may run (None or 0: no limit).
        max_subscriptions: live queries one WebSocket may hold.
        max_concurrent_calls: mutations and actions one WebSocket may have running.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        admin_key: str,
        auth: AuthProvider | None = None,
        ping_interval: float = PING_INTERVAL,
        tick_interval: float = 1.0,
        workers: int = 16,
        push_dir: Path | None = None,
        time_limit: float | None = DEFAULT_TIME_LIMIT,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        max_concurrent_calls: int = MAX_CONCURRENT_CALLS,
    ) -> None:
        self.backend = backend
        self.runner = BackendRunner(backend, time_limit=time_limit)
        self.max_subscriptions, self.max_concurrent_calls = max_subscriptions, max_concurrent_calls
        self.authenticator = ServerAuthenticator(admin_key, auth)
        self.deployer = Deployer(backend, push_dir)
        self.http_api = HttpApi(self.runner, self.authenticator, self.deployer)
        self.ping_interval, self.tick_interval = ping_interval, tick_interval
        self.executor = concurrent.futures.ThreadPoolExecutor(workers, "convex-calls")
        self.action_executor = concurrent.futures.ThreadPoolExecutor(workers, "convex-actions")
        self.sockets: set[SyncSocketHandler] = set()
        self.allowed_hosts: set[str] | None = None
        self._http_server: tornado.httpserver.HTTPServer | None = None
        self._ticker: tornado.ioloop.PeriodicCallback | None = None
        self._files_url = ""  # where `start` pointed file URLs

    def application(self) -> tornado.web.Application:
        """The tornado application with every route."""
        route = {"server": self}
        return tornado.web.Application(
            [
                (r"/api/sync", SyncSocketHandler, route),
                (r"/api/[^/]+/sync", SyncSocketHandler, route),
                *storage_routes("", self.backend.storage, self.host_allowed),
                (r"/api/.*", ApiHandler, route),
                (r"/", RootHandler, route),
            ],
            default_handler_class=NotFoundHandler,
            default_handler_args=route,
            websocket_max_message_size=MAX_MESSAGE_SIZE,
            # WebSocket pings find dead peers; clients' own inactivity checks are kept happy
            # by the protocol's JSON Pings.
            websocket_ping_interval=20.0,
            websocket_ping_timeout=20.0,
        )

    def host_allowed(self, host: str) -> bool:
        """Whether a request's Host is acceptable (any, unless serving loopback only)."""
        return self.allowed_hosts is None or host.strip("[]").lower() in self.allowed_hosts

    def new_connection(
        self,
        send_text: Callable[[str], None],
        close: Callable[[int, str], None],
        keeps_session: bool = True,
    ) -> SyncConnection:
        """A pump for a new WebSocket."""
        return SyncConnection(
            self.runner,
            self.authenticator,
            send_text=send_text,
            close=close,
            executor=self.executor,
            action_executor=self.action_executor,
            ping_interval=self.ping_interval,
            keeps_session=keeps_session,
            max_subscriptions=self.max_subscriptions,
            max_concurrent_calls=self.max_concurrent_calls,
        )

    async def run_http(self, request: HttpRequest) -> Any:
        """Answer an HTTP API request on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.http_api.handle, request)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on `host:port` (0: any free port); returns the port. Call on the loop."""
        if _is_loopback(host):
            self.allowed_hosts = set(_LOOPBACK_NAMES)
        sockets = tornado.netutil.bind_sockets(port, host)
        self._http_server = tornado.httpserver.HTTPServer(
            self.application(), max_body_size=MAX_MESSAGE_SIZE, xheaders=False
        )
        self._http_server.add_sockets(sockets)
        # File URLs (`ctx.storage`) point here (until `stop`).
        self._files_url = url_for(host, int(sockets[0].getsockname()[1]))
        self.backend.storage.serve_at(self._files_url)
        self._ticker = tornado.ioloop.PeriodicCallback(self._tick, self.tick_interval * 1000)
        self._ticker.start()
        return int(sockets[0].getsockname()[1])

    def _tick(self) -> None:
        for socket in list(self.sockets):
            if socket.connection is not None:
                socket.connection.tick()

    async def stop(self) -> None:
        """Stop accepting, close every WebSocket (1001), let running calls finish (their
        commits are durable), drop calls that had not started. Does not close the backend."""
        if self._http_server is not None:
            self._http_server.stop()
            self.backend.storage.stop_serving_at(self._files_url)
        if self._ticker is not None:
            self._ticker.stop()
        self.deployer.close()
        for socket in list(self.sockets):
            socket.close(CLOSE_GOING_AWAY, "ServerShutdown")
        for executor in (self.executor, self.action_executor):
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)
        if self._http_server is not None:
            try:
                await asyncio.wait_for(self._http_server.close_all_connections(), 5.0)
            except TimeoutError:
                _log.warning("some HTTP connections did not close in time")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int) -> str:
    """The URL others reach a server bound to `host:port` at: `http://host:port`, with IPv6
    addresses in brackets, and this machine's name for a wildcard address (`0.0.0.0`, `::`),
    which no client can connect to (printed URLs and file URLs must work from elsewhere)."""
    if host in _WILDCARDS:
        host = gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


#: Addresses that mean "every interface": a server is bound there, never reached there.
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})


def run_server(
    backend: Backend,
    *,
    host: str = "127.0.0.1",
    port: int = 3210,
    admin_key: str,
    auth: AuthProvider | None = None,
    on_ready: Callable[[str], None] | None = None,
    site_port: int | None = None,
    on_site_ready: Callable[[str, str], None] | None = None,
    **options: Any,
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (see `SyncServer.stop`).

    Args:
        on_ready: called with the server's URL once it accepts connections.
        site_port: where HTTP actions are served (`kernel_ext.sync.site`): None for the
            port + 1, or a free port when that is taken or the port is 0; else that port.
        on_site_ready: called (before `on_ready`) with the HTTP actions' URL and a warning
            ("" when none: see `site.bind_site_sockets`).
        options: more `SyncServer` options.

    Raises:
        OSError: a port is taken or the address is not ours.
    """
    server = SyncServer(backend, admin_key=admin_key, auth=auth, **options)
    asyncio.run(
        _serve(server, host, port, on_ready, site_port=site_port, on_site_ready=on_site_ready)
    )


async def _serve(
    server: SyncServer,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None,
    *,
    site_port: int | None = None,
    on_site_ready: Callable[[str, str], None] | None = None,
) -> None:
    from kernel_ext.sync.site import SiteServer

    actual = await server.start(host, port)
    site = SiteServer(server.backend, server.authenticator, server.action_executor)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        wanted = actual + 1 if site_port is None and port != 0 else site_port or 0
        site_actual, warning = await site.start(host, wanted, fallback=site_port is None)
        if on_site_ready is not None:
            on_site_ready(url_for(host, site_actual), warning)
        if on_ready is not None:
            on_ready(url_for(host, actual))
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await site.stop()
        await server.stop()

"""The remote client: the same API as the embedded `Client`, over the Convex sync protocol.

A background thread runs an asyncio loop with one WebSocket (the `websockets` library) to
`ws://HOST:PORT/api/sync`. `ClientSession` (sans-I/O) holds the protocol state; this module
only pumps frames and turns events into results for blocked callers and subscriptions.

On a dropped connection it reconnects with backoff (0.1 s doubling to 5 s, with jitter),
re-sends its query set, auth and unresolved mutations (with their request ids and the same
session id, so the server answers a re-sent mutation from its record instead of running it
twice), and subscriptions report "reconnecting" until the first Transition of the new socket.

It asks the server for result diffs (`kernel_ext.sync.messages`): a query function that
returns its query or aggregate then reaches this client as its changed rows, and its
results carry `QueryResult.diff` as on an embedded store (`sub.on_diff`, `LiveTable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import websockets

from kernel_ext.client.arguments import merge_args
from kernel_ext.client.base import CallKind, ClientKind
from kernel_ext.client.subscription import CallbackHandle, Subscription
from kernel_ext.engine.subscriptions import QueryResult
from kernel_ext.errors import (
    AuthenticationError,
    ConnectionClosed,
    ConvexError,
    FunctionError,
    RemoteFunctionError,
    ServerUnreachable,
    TransactionClosed,
    ValidationError,
    remote_error,
)
from kernel_ext.functions.registry import path_of
from kernel_ext.store.rows import RowsSnapshot
from kernel_ext.sync.client_protocol import (
    ClientSession,
    QueryResultEvent,
    Reconnect,
    RequestDone,
    RequestKind,
    TransitionApplied,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RemoteClient", "RemoteFunctionError"]

T = TypeVar("T")

_CLIENT_HEADER: Final = "convex-notebook-0.1.0"
_MAX_BACKOFF: Final = 5.0
_CALL_TIMEOUT: Final = 300.0
#: How long `connect()` waits for the server's first answer.
_CONNECT_TIMEOUT: Final = 10.0
#: How long `connect()` retries a refused connection (the server may be starting).
_REFUSED_GRACE: Final = 2.0
#: How long a call waits while the connection is down before it gives up.
_OFFLINE_LIMIT: Final = 10.0


def _wire_args(args: Mapping[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments as Convex values, checked here so that a value that cannot
    travel (an unsupported type, too deep) is a `ValidationError` before anything is sent,
    and keys of a `str` subclass (enums) travel as plain strings."""
    from kernel_ext.store.values import normalize

    merged = merge_args(args, kwargs)
    if not isinstance(merged, Mapping):
        raise ValidationError(
            f"Arguments must be a dict (or keywords), not {type(merged).__name__}"
        )
    value = normalize(dict(merged), limits=False)
    assert isinstance(value, dict)
    return value


def _query_key(path: str, args: dict[str, Any]) -> tuple[str, bytes]:
    """Identical queries of one client share one server subscription under this key."""
    from kernel_ext.store.keys import encode_value
    from kernel_ext.store.values import normalize

    return (path, encode_value(normalize(args)))


def print_log_lines(kind: str, path: str, lines: tuple[str, ...]) -> None:
    """Print a call's log lines to standard output (in a notebook: the calling cell), the way
    the official clients do: `[CONVEX Q(path)] [LOG] 'text'` (Q, M or A)."""
    for line in lines:
        print(f"[CONVEX {kind}({path})] {line}", flush=True)


def _error_of(message: str | None, data: Any, has_data: bool, code: str | None) -> BaseException:
    """A failure as the caller sees it: `ConvexError` with its data, or the library's error
    class for the server's `errorCode` (`kernel_ext.errors.remote_error`)."""
    if has_data:
        return ConvexError(data)
    return remote_error(code, message or "Server Error")


@dataclass
class _Query:
    """One query id shared by every local subscription to the same (path, args)."""

    query_id: int
    key: tuple[str, bytes]
    listeners: list[Callable[[QueryResult], None]] = field(default_factory=list)
    result: QueryResult | None = None


class RemoteClient:
    """A client of a store served over HTTP/WebSocket. Create it with
    `kernel_ext.connect("http://127.0.0.1:3210")`.

    Args:
        url: the server's base URL (`http://` or `https://`, optional path prefix, optional
            query string such as Jupyter's `?token=`).
        admin_key: sent as admin auth: allows internal functions and pushing functions.
        headers: extra HTTP headers for the WebSocket upgrade (e.g. Jupyter's Authorization).
        acting_as: with `admin_key`: act as this user identity (`with_identity` makes these).
        connect_timeout: how long to wait for the server's first answer.

    The constructor returns once the server has answered (its first Transition). A call
    made while the connection is down waits for the reconnection, at most `_OFFLINE_LIMIT`
    seconds of being disconnected, then raises `ServerUnreachable`.

    Raises:
        ServerUnreachable: nothing listens at the URL, the server refuses the connection (401
            or 403: a token is needed), it is not a Convex server, or no answer came within
            `connect_timeout`; the message names the URL and the reason.
    """

    def __init__(
        self,
        url: str,
        *,
        admin_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        acting_as: Mapping[str, Any] | None = None,
        connect_timeout: float = _CONNECT_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self.location = self.url
        self._ws_url = _sync_url(self.url)
        self._headers = {"Convex-Client": _CLIENT_HEADER, **(headers or {})}
        self._session = ClientSession()
        self._lock = threading.Lock()
        self._queries: dict[int, _Query] = {}
        self._by_key: dict[tuple[str, bytes], _Query] = {}
        self._waiters: dict[int, Future[RequestDone]] = {}
        self._auth_waiters: list[Future[None]] = []  # set_auth calls awaiting the verdict
        self._status_listeners: list[Callable[[str], None]] = []
        self.status = "connecting"
        self._closed = False
        self._admin_key = admin_key
        self._acting_as = acting_as
        if admin_key is not None:
            self._session.authenticate("Admin", admin_key, acting_as)
        self._dispatcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convex-callbacks")
        self._loop = asyncio.new_event_loop()
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        # Set by the first Transition (or the first failure that retrying cannot cure).
        self._first_answer: Future[None] = Future()
        self._offline_since: float | None = time.monotonic()  # None while connected
        self._failure = "no connection attempt finished yet"  # the latest attempt's
        self._thread = threading.Thread(target=self._run_loop, name="convex-remote", daemon=True)
        self._thread.start()
        self._await_first_answer(connect_timeout)

    #: The store runs in a server (`kernel_ext.ConvexClient`).
    kind: ClientKind = "remote"

    def __repr__(self) -> str:
        return f"<kernel_ext.RemoteClient {self.url} ({self.status})>"

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    def call_as_owner(self, kind: CallKind, ref: Any, args: Mapping[str, Any]) -> Any:
        """Run any function as the owner: internal ones need the admin key."""
        return getattr(self, kind)(ref, args)

    # -- connection ----------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(self._connect_forever())
        finally:
            # `close()` may cancel this too when the loop was ending on its own (a failed
            # connect): the loop must be closed all the same.
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _await_first_answer(self, timeout: float) -> None:
        """Block until the server's first Transition; close and raise `ServerUnreachable`
        if it cannot come (see the class docstring)."""
        try:
            self._first_answer.result(timeout=timeout)
        except TimeoutError:
            self.close()
            raise ServerUnreachable(
                f"No Convex server answered at {self.url} within {timeout:g} s "
                f"({self._failure}). Check the URL and that the server is running."
            ) from None
        except ServerUnreachable:
            self.close()
            raise

    async def _connect_forever(self) -> None:
        delay, reason = 0.1, "InitialConnect"
        started = time.monotonic()
        while not self._closed:
            try:
                async with websockets.connect(
                    self._ws_url, additional_headers=self._headers, max_size=None, open_timeout=10
                ) as socket:
                    delay = 0.1
                    reason = await self._serve_socket(socket, reason)
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                reason = type(exc).__name__
                self._failure, final = _describe_failure(exc, self._ws_url)
                final = final or (
                    isinstance(exc, ConnectionRefusedError)
                    and time.monotonic() - started > _REFUSED_GRACE
                )
                if final and not self._first_answer.done():
                    self._first_answer.set_exception(
                        ServerUnreachable(f"Cannot connect to {self.url}: {self._failure}")
                    )
                    return
            with self._lock:
                self._session.disconnected()
                if self._offline_since is None:
                    self._offline_since = time.monotonic()
            if self._closed:
                return
            self._set_status("reconnecting")
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _serve_socket(self, socket: Any, reason: str) -> str:
        with self._lock:
            opening = self._session.open_messages(reason)
        for text in opening:
            await socket.send(text)
        sender = asyncio.ensure_future(self._send_outbox(socket))
        try:
            async for frame in socket:
                with self._lock:
                    events = self._session.receive(frame)
                for event in events:
                    if isinstance(event, Reconnect):
                        if event.auth:
                            self._auth_refused(event.reason)
                        return event.reason
                    self._handle(event)
            return "ServerClosed"
        finally:
            sender.cancel()

    async def _send_outbox(self, socket: Any) -> None:
        while True:
            text = await self._outbox.get()
            await socket.send(text)

    def _send(self, text: str | None) -> None:
        """Queue a frame for the current socket (None: offline, the session re-sends it).
        Once the client is closed there is no socket: nothing is sent (a subscription or a
        widget closed after its client, e.g. by the garbage collector, must not fail)."""
        if text is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed since the check
                self._loop.call_soon_threadsafe(self._outbox.put_nowait, text)

    def _set_status(self, status: str) -> None:
        if self.status == status:
            return
        self.status = status
        for listener in list(self._status_listeners):
            self._dispatcher.submit(listener, status)

    # -- events from the server ----------------------------------------------------------

    def _handle(self, event: Any) -> None:
        if isinstance(event, QueryResultEvent):
            error = (
                None
                if event.error is None
                else _error_of(
                    event.error, event.error_data, event.has_error_data, event.error_code
                )
            )
            # A diff's base is the previous result this client delivered (the session
            # applies a server's QueryDiff to it), so `Subscription.on_diff` can use it.
            result = QueryResult(event.value, error, event.ts, event.log_lines, event.diff)
            with self._lock:
                query = self._queries.get(event.query_id)
                if query is None:
                    return
                query.result = result
                listeners = list(query.listeners)
            for listener in listeners:
                listener(result)
        elif isinstance(event, TransitionApplied):
            self._offline_since = None
            if not self._first_answer.done():
                self._first_answer.set_result(None)
            self._set_status("connected")
            if event.auth_current:
                with self._lock:
                    waiters, self._auth_waiters = self._auth_waiters, []
                for waiter in waiters:
                    waiter.set_result(None)
        elif isinstance(event, RequestDone):
            future = self._waiters.pop(event.request_id, None)
            if future is not None:
                future.set_result(event)

    # -- calls ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransactionClosed("This client is closed; connect again")

    def _wait(self, result: Callable[..., T], what: str) -> T:
        """`result(timeout=...)` (a future's or a subscription's first result), waiting while
        the connection is down at most `_OFFLINE_LIMIT` seconds of being disconnected, and
        `_CALL_TIMEOUT` in all.

        Raises:
            ServerUnreachable: the server has been gone longer than `_OFFLINE_LIMIT`.
            ConnectionClosed: no answer within `_CALL_TIMEOUT`.
        """
        deadline = time.monotonic() + _CALL_TIMEOUT
        while True:
            try:
                return result(timeout=0.2)
            except TimeoutError:
                pass
            self._check_reachable(what)
            if time.monotonic() > deadline:
                raise ConnectionClosed(
                    f"No answer from {self.url} to {what} within {_CALL_TIMEOUT:.0f} s"
                )

    def _check_reachable(self, what: str) -> None:
        """Raise `ServerUnreachable` if the connection has been down too long."""
        since = self._offline_since
        if since is None or time.monotonic() - since <= _OFFLINE_LIMIT:
            return
        raise ServerUnreachable(
            f"{self.url} has been unreachable for {time.monotonic() - since:.0f} s "
            f"({self._failure}); gave up waiting for {what}, which may or may not have run. "
            "The client keeps reconnecting: call again once the server is back."
        )

    def _request(
        self, kind: RequestKind, ref: Any, args: Mapping[str, Any] | None, kwargs: dict[str, Any]
    ) -> Any:
        self._check_open()
        future: Future[RequestDone] = Future()
        path = path_of(ref)
        with self._lock:
            request_id, text = self._session.request(kind, path, _wire_args(args, kwargs))
            self._waiters[request_id] = future
        self._send(text)
        try:
            done = self._wait(future.result, f"{kind.lower()} {path}")
        except ServerUnreachable:
            with self._lock:  # given up: not to be re-sent when the server is back
                self._waiters.pop(request_id, None)
                self._session.forget_request(request_id)
            raise
        print_log_lines(kind[0], path, done.log_lines)
        if not done.success:
            raise _error_of(done.error, done.error_data, done.has_error_data, done.error_code)
        return done.value

    def mutation(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a mutation; when it returns, this client's subscriptions reflect it."""
        return self._request("Mutation", ref, args, kwargs)

    def action(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run an action."""
        return self._request("Action", ref, args, kwargs)

    def query(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a query (subscribe, take the first result, unsubscribe). Prints the log lines
        of the execution it reports, unless another subscription of this client had that
        result already (they were printed, or are kept there)."""
        self._check_open()
        path = path_of(ref)
        values = _wire_args(args, kwargs)
        key = _query_key(path, values)
        with self._lock:
            held = self._by_key.get(key)
            cached = None if held is None else held.result
        with self._subscription(path, values, key) as sub:
            result: QueryResult = self._wait(sub.result, f"query {path}")
        if result is not cached:
            print_log_lines("Q", path, result.log_lines)
        if result.error is not None:
            raise result.error
        if isinstance(result.value, RowsSnapshot):
            # A live subscription's rows (received as diffs): a call returns the consumed
            # list, as on an embedded store.
            return list(result.value)
        return result.value

    def subscribe(
        self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Subscription:
        """Subscribe to a query; the `Subscription` stays up to date (and reports
        "reconnecting" to `on_status` listeners while the connection is down)."""
        self._check_open()
        path = path_of(ref)
        values = _wire_args(args, kwargs)
        return self._subscription(path, values, _query_key(path, values))

    def _subscription(
        self, path: str, values: dict[str, Any], key: tuple[str, bytes]
    ) -> Subscription:
        """A subscription to `path` with these wire arguments (`key`: their `_query_key`)."""

        def start(on_result: Callable[[QueryResult], None]) -> Callable[[], None]:
            return self._listen(path, values, key, on_result)

        return Subscription(start, self._dispatcher, path, column_kinds=self.column_kinds)

    def _listen(
        self,
        path: str,
        args: dict[str, Any],
        key: tuple[str, bytes],
        listener: Callable[[QueryResult], None],
    ) -> Callable[[], None]:
        with self._lock:
            query = self._by_key.get(key)
            text = None
            if query is None:
                query_id, text = self._session.add_query(path, args)
                query = _Query(query_id, key)
                self._queries[query_id] = query
                self._by_key[key] = query
            query.listeners.append(listener)
            current = query.result
        self._send(text)
        if current is not None:
            # A new listener never saw the value the result's diff starts from.
            listener(current if current.diff is None else dataclasses.replace(current, diff=None))

        def stop() -> None:
            with self._lock:
                with contextlib.suppress(ValueError):
                    query.listeners.remove(listener)
                if query.listeners or self._queries.get(query.query_id) is not query:
                    return
                del self._queries[query.query_id]
                del self._by_key[query.key]
                removal = self._session.remove_query(query.query_id)
            self._send(removal)

        return stop

    def wire_stats(self) -> dict[str, int]:
        """What the server has sent this client: `frames`, `bytes`, and query modifications
        by type (`QueryUpdated`: whole values, `QueryDiff`: changes); for diagnostics."""
        with self._lock:
            return dict(self._session.received)

    def on_status(self, listener: Callable[[str], None]) -> CallbackHandle:
        """Call `listener(status)` on "connected" / "reconnecting" changes, until the
        returned handle's `remove()`."""
        self._status_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._status_listeners.remove(listener)

        return CallbackHandle(remove)

    # -- auth ----------------------------------------------------------------------------

    def set_auth(self, token: str) -> None:
        """Act as the user of a JWT. Returns once the server has accepted it.

        Raises:
            AuthenticationError: the server refused it (expired, forged, or the server verifies
                no tokens); the client carries on without it.
            ConnectionClosed: no answer within the call timeout.
        """
        verdict: Future[None] = Future()
        with self._lock:
            self._auth_waiters.append(verdict)
            text = self._session.authenticate("User", token)
        self._send(text)
        self._wait(verdict.result, "the auth token")

    def clear_auth(self) -> None:
        """Act anonymously (or as admin, if the client has an admin key)."""
        with self._lock:
            text = self._session.authenticate(*self._without_user(), self._acting_as)
        self._send(text)

    def _without_user(self) -> tuple[str, str | None]:
        return ("None", None) if self._admin_key is None else ("Admin", self._admin_key)

    def with_identity(self, claims: Mapping[str, Any]) -> RemoteClient:
        """A client (a connection of its own: close it) acting as the user with these claims
        (`sub`, `iss`, ...), without a token. Needs the admin key, as in Convex.

        Raises:
            AuthenticationError: this client has no admin key.
        """
        from kernel_ext.functions.context import identity_from_claims

        if self._admin_key is None:
            raise AuthenticationError(
                "with_identity on a server needs the admin key (it acts as a user without "
                "their token); connect with admin_key=..., or use set_auth(token)"
            )
        return RemoteClient(
            self.url,
            admin_key=self._admin_key,
            headers=self._headers,  # its Convex-Client entry is set again, the same
            acting_as=identity_from_claims(claims),
        )

    def _auth_refused(self, reason: str) -> None:
        """The server refused the token: carry on without it (as the official clients do), and
        tell whoever set it. Without that, every reconnect would be refused again."""
        with self._lock:
            refused = self._session.token_type
            if refused == "User":
                self._session.authenticate(*self._without_user(), self._acting_as)
            else:
                self._session.authenticate("None", None)  # sent when the next socket opens
            waiters, self._auth_waiters = self._auth_waiters, []
        message = reason.removeprefix("AuthError: ")
        if waiters:
            for waiter in waiters:
                waiter.set_exception(AuthenticationError(message))
        else:  # an expired token, or a refused admin key: nobody is waiting for a verdict
            warnings.warn(
                f"{self.url} refused this client's {refused.lower()} credentials ({message}); "
                "continuing without them",
                stacklevel=1,
            )

    # -- pushing functions (admin) -------------------------------------------------------

    def _admin(self, what: str, body: Mapping[str, Any]) -> Any:
        """An admin request (`/api/push`, see `kernel_ext.sync.deploy`); `what` names it in
        errors."""
        import json
        import urllib.error
        import urllib.request

        parts = urllib.parse.urlsplit(self.url)
        target = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, parts.path.rstrip("/") + "/api/push", parts.query, "")
        )
        headers = {"Content-Type": "application/json", **self._headers}
        if "Authorization" not in headers and self._admin_key is not None:
            headers["Authorization"] = f"Convex {self._admin_key}"
        request = urllib.request.Request(
            target, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=_CALL_TIMEOUT) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            with exc:
                error = json.loads(exc.read() or b"{}")
            detail = error.get("message", exc.reason)
            raised = remote_error(error.get("code"), detail)
            if type(raised) is not RemoteFunctionError:  # a library error: its own class
                raise raised from None
            if exc.code in (401, 403):
                raise AuthenticationError(
                    f"{what} needs the admin key: {self.url} answered {exc.code} ({detail}); "
                    "connect with admin_key=..."
                ) from None
            raise FunctionError(f"{self.url} refused {what} ({exc.code}): {detail}") from None

    def push_cell(self, source: str) -> list[str]:
        """Send a magic cell (`%%convex_query ...`, `%%convex_schema`) for the server to
        compile and register; needs the admin key. Returns what it defined."""
        self._check_open()
        return list(self._admin("Pushing a cell", {"cell": source}))

    def register(self, path: str, function: Any) -> str:
        """Push a function defined by a magic cell (its source travels, not its globals)."""
        source = getattr(function, "source", None)
        if not isinstance(source, str) or not source.startswith("%%convex_"):
            raise FunctionError(
                "Only functions defined by %%convex_* cells can be pushed one by one; put "
                "decorated functions in a folder and use load_functions(folder)"
            )
        return self.push_cell(source)[0]

    def load_functions(self, folder: str | Path) -> list[str]:
        """Push every module of a functions folder (and its schema.py); needs the admin key."""
        root = Path(folder)
        files = {
            p.relative_to(root).as_posix(): p.read_text()
            for p in sorted(root.rglob("*.py"))
            if not any(part.startswith((".", "__")) for part in p.relative_to(root).parts)
        }
        return list(self._admin("Pushing functions", {"files": files}))

    def functions(self) -> list[str]:
        """The paths of the server's functions (admin)."""
        return [f["path"] for f in self.describe_functions() if f["kind"] != "cron"]

    def describe_functions(self) -> list[dict[str, Any]]:
        """`[{path, kind, visibility, args}]` of the server's functions (admin)."""
        return list(self._admin("Listing the functions", {"functions": True}))

    def tables(self) -> list[str]:
        """The names of the user tables (admin)."""
        return [t["table"] for t in self.describe_tables()]

    def describe_tables(self) -> list[dict[str, Any]]:
        """`[{table, indexes}]` of the user tables (admin)."""
        return list(self._admin("Listing the tables", {"tables": True}))

    def function_info(self, path: str) -> dict[str, Any] | None:
        """`{path, kind, visibility, args}` of one function (admin), or None."""
        wanted = path_of(path)
        infos = self.describe_functions()
        return next((f for f in infos if f["path"] == wanted), None)

    def set_schema(self, schema: Any) -> None:
        """A schema object cannot travel; push its cell or its folder instead."""
        raise FunctionError(
            "A remote store takes its schema as source: run a %%convex_schema cell or "
            "load_functions(folder) with a schema.py"
        )

    # -- DataFrames ----------------------------------------------------------------------

    def table_df(self, table: str) -> pd.DataFrame:
        """Every document of `table` as a DataFrame (admin)."""
        from kernel_ext.client.dataframe import to_dataframe
        from kernel_ext.store.values import from_json

        docs = [from_json(d) for d in self._admin(f"Reading table {table!r}", {"table": table})]
        return to_dataframe(docs, self.column_kinds)

    def column_kinds(self) -> dict[int, dict[str, dict[str, Any]]]:
        """The column kinds `import_dataframe` recorded, by table number (admin; without
        the admin key DataFrames show the stored values: datetimes as float ms)."""
        from kernel_ext.store.values import from_json

        if self._admin_key is None and "Authorization" not in self._headers:
            return {}
        try:
            records = from_json(self._admin("Reading column kinds", {"columnKinds": True}))
        except (AuthenticationError, FunctionError):  # not an admin after all, or an old server
            return {}
        return {int(n): {str(k["column"]): k for k in kinds} for n, kinds in records}

    def column_info(self, document_id: str) -> dict[str, dict[str, Any]]:
        """What the store knows of the columns of the table `document_id` belongs to:
        `{column: {"validator": <the schema's validator JSON of the field>, "dtype": <the
        kind import_dataframe recorded>}}`, each key only when known: the embedded client's
        value, computed by the server (admin request `{"columnInfo": id}`). Empty without
        the admin key (the LiveTable then shows values by their types); only the recorded
        kinds from a server older than that request."""
        if self._admin_key is None and "Authorization" not in self._headers:
            return {}
        try:
            info = self._admin("Reading column info", {"columnInfo": document_id})
        except ValidationError:  # an older server: it refuses the request it does not know
            from kernel_ext.store.ids import table_number_of

            number = table_number_of(document_id)
            kinds = self.column_kinds().get(number, {}) if number is not None else {}
            return {column: {"dtype": kind.get("dtype")} for column, kind in kinds.items()}
        except (AuthenticationError, FunctionError):  # not an admin after all
            return {}
        return {str(column): dict(facts) for column, facts in info.items()}

    def import_dataframe(
        self, table: str, frame: pd.DataFrame, *, batch_size: int = 1000, progress: bool = True
    ) -> list[str]:
        """Insert every row of `frame` into `table` in batches (admin), with a progress bar;
        each batch is one transaction; returns the new ids in row order.

        Batches do not wait for the server's live queries to re-run (re-runs for several
        batches coalesce); once the import returns (or fails), every live query on the server
        reflects the rows it committed."""
        from kernel_ext.client.dataframe import import_in_batches
        from kernel_ext.store.values import normalize, to_json

        what = f"Importing into {table!r}"

        def insert(batch: list[dict[str, Any]], kinds: list[dict[str, Any]]) -> list[str]:
            rows = [to_json(normalize(row)) for row in batch]
            body = {"import": table, "rows": rows, "kinds": to_json(kinds), "wait": False}
            return list(self._admin(what, body))

        try:
            ids = import_in_batches(table, frame, insert, batch_size=batch_size, progress=progress)
        except BaseException:
            # Read your writes of the batches before the failing one; the import's error is
            # the one to see, not the sync's (when the server is gone, both fail).
            with contextlib.suppress(Exception):
                self._admin(what, {"sync": True})
            raise
        self._admin(what, {"sync": True})
        return ids

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        for future in list(self._waiters.values()):
            future.set_exception(ConnectionClosed("The client was closed"))
        self._waiters.clear()

        def stop() -> None:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()

        with contextlib.suppress(RuntimeError):  # the loop ended already (connect failed)
            self._loop.call_soon_threadsafe(stop)
        self._thread.join(timeout=5)
        self._dispatcher.shutdown(wait=False)

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe_failure(exc: BaseException, ws_url: str) -> tuple[str, bool]:
    """What a failed connection attempt says about the server, and whether it is final
    (retrying cannot help: the server answered, but not as a Convex server that lets us in)."""
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return (
                f"it answered {status} {exc.response.reason_phrase}: it needs authentication. "
                "Pass the server's token (the URL's ?token=... or headers={'Authorization': "
                "'token ...'}); for the shared store of your own running Jupyter server, "
                "kernel_ext.connect_jupyter() finds it",
                True,
            )
        return (
            f"it answered HTTP {status} {exc.response.reason_phrase} to the WebSocket at "
            f"{ws_url}: it is not a Convex server (or the URL lacks the path before /api)",
            True,
        )
    if isinstance(exc, websockets.exceptions.InvalidHandshake):
        return (
            f"it is not a Convex server: its answer to the WebSocket handshake at {ws_url} is "
            f"not a WebSocket upgrade ({exc})",
            True,
        )
    if isinstance(exc, ConnectionRefusedError):
        return ("nothing is listening there (connection refused): is the server running?", False)
    if isinstance(exc, TimeoutError):
        return ("no answer to the WebSocket handshake", False)
    return (f"{type(exc).__name__}: {exc}", False)


def _sync_url(url: str) -> str:
    """`http://host:port/prefix?q` -> `ws://host:port/prefix/api/sync?q`."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}[parts.scheme]
    path = parts.path.rstrip("/") + "/api/sync"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, ""))

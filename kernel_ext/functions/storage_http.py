"""The HTTP side of file storage: upload and download handlers, and a files-only server.

Routes (as Convex's, on the server that serves the store)::

    POST /api/storage/upload?token=...   body: the file; answers {"storageId": id}
    GET  /api/storage/<storageId>        the bytes, with the stored Content-Type (404: none)

`serve` mounts the handlers on its port (`sync.server`), the Jupyter server extension under
`<base_url>convex/` behind Jupyter's authentication (`server_ext.handlers`), and an embedded
store with no server gets a `FileServer`: these routes alone on 127.0.0.1, an ephemeral port,
started on the first URL asked for (`StorageService.base_url`). Uploads stream to the file
store as they arrive (never held whole in memory for the SQLite and PostgreSQL stores), up to
`MAX_UPLOAD_SIZE`; downloads stream in chunks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import tornado.httpserver
import tornado.netutil
import tornado.web

from kernel_ext.errors import ValidationError
from kernel_ext.functions.storage import MAX_UPLOAD_SIZE, StorageService, UploadRefused
from kernel_ext.functions.uris import scrub_uri
from kernel_ext.persistence.files import FileWriter

__all__ = ["DownloadHandler", "FileServer", "UploadHandler", "storage_routes"]

_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
#: A refused upload whose declared body is at most this long is read (and dropped) before the
#: refusal goes out: clients such as urllib send the whole body before they read the answer.
_DRAIN_LIMIT: Final = 256 << 20


class _StorageHandler(tornado.web.RequestHandler):
    """Shared set-up: the service, an optional Host check, CORS for any origin (the URLs are
    capabilities, as Convex's; the Jupyter subclasses keep Jupyter's CORS instead)."""

    storage: StorageService
    cors: bool = True

    def initialize(
        self, storage: StorageService, host_allowed: Callable[[str], bool] | None = None
    ) -> None:
        """Route kwargs: the storage service, and a Host check (None: any Host)."""
        self.storage = storage
        self._host_allowed = host_allowed
        # Logged URIs (the access log, errors) never show an upload's token; the handler
        # reads it from the query arguments, parsed already.
        self.request.uri = scrub_uri(self.request.uri or "")

    def set_default_headers(self) -> None:
        """CORS: any origin may upload and download."""
        if self.cors:
            self.set_header("Access-Control-Allow-Origin", "*")

    def check_host(self) -> None:
        """Refuse foreign Host headers where the server is loopback-only (DNS rebinding).

        Raises:
            tornado.web.HTTPError: 403.
        """
        if self._host_allowed is not None and not self._host_allowed(self.request.host_name):
            raise tornado.web.HTTPError(403, "Unexpected Host header")

    def answer(self, status: int, body: dict[str, Any]) -> None:
        """Finish with a JSON body."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


@tornado.web.stream_request_body
class UploadHandler(_StorageHandler):
    """`POST /api/storage/upload?token=...`: stream the body into a new file."""

    _writer: FileWriter | None = None
    _refusal: tuple[int, str, str] | None = None

    async def prepare(self) -> None:
        """Check the Host, the token and the declared length before the body is read."""
        self.check_host()
        if self.request.method != "POST":
            return
        declared = self.request.headers.get("Content-Length", "")
        size = int(declared) if declared.isdigit() else 0
        if size > MAX_UPLOAD_SIZE:
            self._refuse_too_large(size)  # at once: the connection closes after the answer
            return
        try:
            await asyncio.to_thread(self.storage.check_token, self._token())
        except UploadRefused as exc:
            self._refusal = (403, "InvalidUploadUrl", str(exc))
        assert self.request.connection is not None
        self.request.connection.set_max_body_size(  # type: ignore[attr-defined]
            max(size, 1) if self._refusal else MAX_UPLOAD_SIZE
        )
        if self._refusal is not None:
            if size > _DRAIN_LIMIT:
                self.answer(*self._answer_of(self._refusal))
            return
        self._writer = self.storage.writer()

    def _token(self) -> str:
        return self.get_query_argument("token", "") or ""

    @staticmethod
    def _answer_of(refusal: tuple[int, str, str]) -> tuple[int, dict[str, Any]]:
        status, code, message = refusal
        return status, {"code": code, "message": message}

    def _refuse_too_large(self, size: int) -> None:
        self.answer(
            413,
            {
                "code": "PayloadTooLarge",
                "message": f"The file is {size:,} bytes, over this server's limit of "
                f"{MAX_UPLOAD_SIZE:,} bytes per upload",
            },
        )

    def data_received(self, chunk: bytes) -> None:
        """A piece of the file: written on (dropped after a refusal)."""
        writer = self._writer
        if writer is None:
            return
        if writer.size + len(chunk) > MAX_UPLOAD_SIZE:
            writer.abort()
            self._writer = None
            self._refusal = (
                413,
                "PayloadTooLarge",
                f"The file is over this server's limit of {MAX_UPLOAD_SIZE:,} bytes per upload",
            )
            return
        writer.write(chunk)

    async def post(self) -> None:
        """The body is in: commit the file, answer `{"storageId": id}`."""
        if self._refusal is not None:
            self.answer(*self._answer_of(self._refusal))
            return
        writer, self._writer = self._writer, None
        assert writer is not None
        content_type = self.request.headers.get("Content-Type") or None
        try:
            storage_id = await asyncio.to_thread(
                self.storage.finish_upload, self._token(), writer, content_type
            )
        except UploadRefused as exc:
            self.answer(403, {"code": "InvalidUploadUrl", "message": str(exc)})
            return
        finally:
            writer.abort()  # a no-op once finished
        self.answer(200, {"storageId": storage_id})

    def options(self) -> None:
        """CORS preflight of a browser's upload."""
        self.set_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Content-Type")
        self.set_status(204)
        self.finish()

    def on_finish(self) -> None:
        """Drop a file that was not committed."""
        self._drop()

    def on_connection_close(self) -> None:
        """The client went away mid-upload."""
        self._drop()

    def _drop(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()


async def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return await asyncio.to_thread(next, chunks, None)


class DownloadHandler(_StorageHandler):
    """`GET /api/storage/<storageId>`: the file's bytes, streamed (HEAD: the headers)."""

    async def get(self, storage_id: str) -> None:
        """Stream the file with its stored Content-Type; 404 when there is none."""
        await self._send(storage_id, body=True)

    async def head(self, storage_id: str) -> None:
        """The headers a GET would send (Content-Type, Content-Length, Digest), no body."""
        await self._send(storage_id, body=False)

    async def _send(self, storage_id: str, *, body: bool) -> None:
        self.check_host()
        try:
            opened = await asyncio.to_thread(self.storage.open, storage_id)
        except ValidationError:
            opened = None
        if opened is None:
            self.answer(404, {"code": "FileNotFound", "message": f"No file {storage_id!r}"})
            return
        row, chunks = opened
        content_type = row.get("contentType")
        self.set_header(
            "Content-Type",
            content_type if isinstance(content_type, str) else "application/octet-stream",
        )
        size = row["size"]
        assert isinstance(size, float)
        self.set_header("Content-Length", str(int(size)))
        sha = row["sha256"]
        assert isinstance(sha, str)
        self.set_header("Digest", "sha-256=" + _base64_of_hex(sha))
        try:
            while body and (chunk := await _next_chunk(chunks)) is not None:
                self.write(chunk)
                await self.flush()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self.finish()


def _base64_of_hex(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def storage_routes(
    prefix: str,
    storage: StorageService,
    host_allowed: Callable[[str], bool] | None = None,
    *,
    upload: type[UploadHandler] = UploadHandler,
    download: type[DownloadHandler] = DownloadHandler,
) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado routes of the storage API under `prefix` (`""` or e.g. `/convex`)."""
    route: dict[str, Any] = {"storage": storage, "host_allowed": host_allowed}
    prefix = prefix.rstrip("/")
    return [
        (prefix + r"/api/storage/upload", upload, route),
        (prefix + r"/api/storage/([0-9a-z]+)", download, route),
    ]


class FileServer:
    """The storage routes alone, on 127.0.0.1 (an ephemeral port), on a thread of their own:
    what serves the files of an embedded store (a kernel with no server).

    Attributes:
        url: `http://127.0.0.1:PORT`.
    """

    def __init__(self, storage: StorageService) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="convex-file-server", daemon=True
        )
        self._thread.start()
        self._server: tornado.httpserver.HTTPServer | None = None
        port = asyncio.run_coroutine_threadsafe(self._start(storage), self._loop).result(30)
        self.url = f"http://127.0.0.1:{port}"

    async def _start(self, storage: StorageService) -> int:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        app = tornado.web.Application(
            storage_routes("", storage, lambda host: host.strip("[]").lower() in _LOOPBACK_NAMES)
        )
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_UPLOAD_SIZE)
        self._server.add_sockets(sockets)
        return int(sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.close_all_connections(), 5.0)

    def close(self) -> None:
        """Stop serving and end the thread."""
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

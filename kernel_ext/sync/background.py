"""Serving an embedded store from inside a kernel, on a background thread (`%convex serve`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading

from kernel_ext.functions.backend import Backend
from kernel_ext.sync.auth import generate_admin_key
from kernel_ext.sync.server import SyncServer, url_for

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """A `SyncServer` over a backend, with its own event loop thread.

    Args:
        backend: the store to serve (not closed by `stop`).
        host, port: where to listen (port 0: any free port).
    """

    def __init__(self, backend: Backend, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.admin_key = generate_admin_key()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="convex-serve", daemon=True
        )
        self._thread.start()
        self._server = SyncServer(backend, admin_key=self.admin_key)

        async def start() -> int:
            return await self._server.start(host, port)

        actual = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=30)
        self.url = url_for(host, actual)

    def stop(self) -> None:
        """Close every connection and stop listening; idempotent."""
        if not self._loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):  # stop anyway
            future.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

"""Serving an embedded store from inside a kernel, on a background thread (`%convex serve`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading

from kernel_ext.functions.backend import Backend
from kernel_ext.sync.auth import generate_admin_key
from kernel_ext.sync.server import SyncServer, url_for
from kernel_ext.sync.site import SiteServer

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """A `SyncServer` over a backend, and its HTTP actions (`site_url`), with their own event
    loop thread.

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
        self._site = SiteServer(backend, self._server.authenticator, self._server.action_executor)

        async def start() -> tuple[int, int]:
            actual = await self._server.start(host, port)
            return actual, (await self._site.start(host, 0))[0]

        actual, site = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=30)
        self.url = url_for(host, actual)
        #: Where the functions' HTTP actions (`http.py`) are served (a free port).
        self.site_url = url_for(host, site)

    def stop(self) -> None:
        """Close every connection and stop listening; idempotent."""
        if not self._loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self._stop_both(), self._loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):  # stop anyway
            future.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _stop_both(self) -> None:
        await self._site.stop()
        await self._server.stop()

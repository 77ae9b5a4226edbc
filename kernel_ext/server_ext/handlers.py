"""The sync server's handlers behind Jupyter's authentication, under `<base_url>convex/`.

A request that passes Jupyter's authentication comes from the notebook server's owner, so it
acts as admin: the HTTP API sees the admin key, WebSocket clients authenticate with it.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join

from kernel_ext.sync.server import ApiHandler, SyncServer, SyncSocketHandler

__all__ = ["JupyterApiHandler", "JupyterSyncSocketHandler", "handlers_for"]


class JupyterSyncSocketHandler(SyncSocketHandler, JupyterHandler):  # type: ignore[misc]
    """The sync WebSocket; the upgrade request must pass Jupyter's authentication."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Authenticate with Jupyter (no login redirect for a WebSocket)."""
        await JupyterHandler.prepare(self, _redirect_to_login=False)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Refuse unauthenticated upgrades."""
        if self.current_user is None:
            raise tornado.web.HTTPError(403, "Jupyter authentication required")
        await super().get(*args, **kwargs)


class JupyterApiHandler(JupyterHandler, ApiHandler):
    """The HTTP API; requests must pass Jupyter's authentication and then act as admin."""

    def initialize(self, server: SyncServer, prefix: str, admin_key: str) -> None:  # type: ignore[override]
        """Route kwargs: the sync server, the URL prefix to strip, the admin key."""
        ApiHandler.initialize(self, server)
        self.prefix = prefix.rstrip("/")
        self.admin_key = admin_key

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Authenticate with Jupyter, then present the request to the API as the owner's."""
        await JupyterHandler.prepare(self, _redirect_to_login=False)
        if self.current_user is None:
            raise tornado.web.HTTPError(403, "Jupyter authentication required")
        self.request.path = self.request.path[len(self.prefix) :] or "/"
        self.request.headers["Authorization"] = f"Convex {self.admin_key}"

    def check_xsrf_cookie(self) -> None:
        """Jupyter's token authentication is not cookie based; see prepare()."""


def handlers_for(
    server: SyncServer, prefix: str, admin_key: str
) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado routes for the shared store under `prefix` (e.g. `/convex`)."""
    route = {"server": server}
    return [
        (url_path_join(prefix, "api/sync"), JupyterSyncSocketHandler, route),
        (url_path_join(prefix, r"api/[^/]+/sync"), JupyterSyncSocketHandler, route),
        (
            url_path_join(prefix, r"api/.*"),
            JupyterApiHandler,
            {**route, "prefix": prefix, "admin_key": admin_key},
        ),
    ]

"""The sync server's handlers behind Jupyter's authentication, under `<base_url>convex/`
(file storage's upload and download routes too, `functions.storage_http`).

A request that passes Jupyter's authentication comes from the notebook server's owner, so the
HTTP API acts as admin. That makes these routes as powerful as Jupyter's own kernel API, so
they keep every check Jupyter's own API handlers make:

- A request authenticated by the login *cookie* (a browser) must come from the server's own
  origin and carry the XSRF token (`X-XSRFToken` header or `_xsrf` argument), on every method
  that reads or writes data; a GET may show a same-origin `Referer` instead, as in Jupyter.
  A foreign `Origin` is refused with 403 before anything runs. Without this, any web page
  open in a browser logged into Jupyter could POST to `convex/api/push` and run code here.
- A request authenticated by Jupyter's token (`Authorization: token ...`, as kernels and
  scripts send it) skips the XSRF and origin checks, as Jupyter's API does: a token is never
  sent by a browser on its own.
- CORS is Jupyter's (`ServerApp.allow_origin`...), never an echo of the caller's `Origin`
  with credentials.
- The WebSocket upgrade passes Jupyter's origin check (`WebSocketMixin.check_origin`): a
  cross-origin page cannot open it with the login cookie.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join

from kernel_ext.functions.storage import StorageService
from kernel_ext.functions.storage_http import DownloadHandler, UploadHandler, storage_routes
from kernel_ext.sync.server import ApiHandler, SyncServer, SyncSocketHandler

__all__ = [
    "JupyterApiHandler",
    "JupyterDownloadHandler",
    "JupyterSyncSocketHandler",
    "JupyterUploadHandler",
    "check_same_origin",
    "handlers_for",
    "require_login",
]

_CROSS_ORIGIN = (
    "Cross-origin request refused: the shared store only answers pages of this Jupyter "
    "server, or clients that send Jupyter's token (Authorization: token ...)"
)


async def require_login(handler: JupyterHandler) -> None:
    """Jupyter's authentication of `handler`'s request, without a login redirect.

    Raises:
        tornado.web.HTTPError: 403 without Jupyter's login (token or cookie).
    """
    await JupyterHandler.prepare(handler, _redirect_to_login=False)
    if handler.current_user is None:
        raise tornado.web.HTTPError(403, "Jupyter authentication required")


def check_same_origin(handler: JupyterHandler, refusal: str) -> None:
    """Jupyter's XSRF check (`JupyterHandler.check_xsrf_cookie`: none for a token, a
    same-origin `Referer` is enough for a GET), with a login-cookie request from a foreign
    origin refused as 403 with the message `refusal` (Jupyter would answer a POST with 404).

    Raises:
        tornado.web.HTTPError: 403 from a foreign origin or without the XSRF token.
    """
    if (
        hasattr(handler, "_jupyter_current_user")  # else too early: checked in prepare()
        and not handler.token_authenticated
        and not handler.settings.get("disable_check_xsrf", False)
        and not handler.check_origin()
    ):
        raise tornado.web.HTTPError(403, refusal)
    JupyterHandler.check_xsrf_cookie(handler)


class JupyterSyncSocketHandler(SyncSocketHandler, JupyterHandler):
    """The sync WebSocket; the upgrade request must pass Jupyter's authentication and, when
    it comes from a browser, Jupyter's origin check."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Authenticate with Jupyter (no login redirect for a WebSocket)."""
        await JupyterHandler.prepare(self, _redirect_to_login=False)

    def check_origin(self, origin: str = "") -> bool:
        """Jupyter's WebSocket origin check: the server's own origin, `allow_origin`, or a
        token-authenticated upgrade (tornado answers 403 when this is False)."""
        return bool(WebSocketMixin.check_origin(self, origin or None))

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Refuse unauthenticated upgrades."""
        if self.current_user is None:
            raise tornado.web.HTTPError(403, "Jupyter authentication required")
        await super().get(*args, **kwargs)


class JupyterApiHandler(APIHandler, ApiHandler):  # type: ignore[misc]
    """The HTTP API; requests must pass Jupyter's authentication, origin and XSRF checks, and
    then act as admin."""

    def initialize(self, server: SyncServer, prefix: str, admin_key: str) -> None:  # type: ignore[override]
        """Route kwargs: the sync server, the URL prefix to strip, the admin key."""
        ApiHandler.initialize(self, server)
        self.prefix = prefix.rstrip("/")
        self.admin_key = admin_key

    async def prepare(self) -> None:  # type: ignore[override]
        """Authenticate with Jupyter and check origin and XSRF, then present the request to
        the API as the owner's.

        Raises:
            tornado.web.HTTPError: 403 without Jupyter's login, from a foreign origin, or
                (login cookie only) without the XSRF token.
        """
        # Checks the Host, authenticates, and runs check_xsrf_cookie() on POST and the like.
        await JupyterHandler.prepare(self, _redirect_to_login=False)
        if self.request.method == "OPTIONS":
            return  # a CORS preflight, answered by Jupyter's APIHandler.options
        if self.current_user is None:
            raise tornado.web.HTTPError(403, "Jupyter authentication required")
        if self.request.method in ("GET", "HEAD"):
            self.check_xsrf_cookie()  # GET /api/query reads data: same checks as a POST
        self.request.path = self.request.path[len(self.prefix) :] or "/"
        self.request.headers["Authorization"] = f"Convex {self.admin_key}"
        # CORS headers are Jupyter's (set in prepare); the API must not add its own echo.
        self.request.headers.pop("Origin", None)

    def check_xsrf_cookie(self) -> None:
        """`check_same_origin`: Jupyter's XSRF check, a foreign origin refused as 403."""
        check_same_origin(self, _CROSS_ORIGIN)


class JupyterUploadHandler(APIHandler, UploadHandler):  # type: ignore[misc]
    """`POST <base_url>convex/api/storage/upload?token=...`, behind Jupyter's
    authentication (and its XSRF check for a browser's login cookie)."""

    cors = False  # Jupyter's CORS

    def initialize(self, storage: StorageService, host_allowed: Any = None) -> None:
        """Route kwargs: the storage service."""
        UploadHandler.initialize(self, storage, host_allowed)

    def get_argument(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Tornado's, except that the URL's `token` is the upload's, never Jupyter's login
        token: Jupyter reads its token from the URL first (`?token=`), so the upload token
        would shadow the `Authorization` header and the request be refused. The handler
        reads the upload token with `get_query_argument`."""
        if name == "token":
            return args[0] if args else kwargs.get("default", "")
        return super().get_argument(name, *args, **kwargs)

    async def prepare(self) -> None:  # type: ignore[override]
        """Authenticate with Jupyter, then check the upload (`UploadHandler.prepare`).

        Raises:
            tornado.web.HTTPError: 403 without Jupyter's login.
        """
        await JupyterHandler.prepare(self, _redirect_to_login=False)
        if self.request.method == "OPTIONS":
            return
        if self.current_user is None:
            raise tornado.web.HTTPError(403, "Jupyter authentication required")
        await UploadHandler.prepare(self)


class JupyterDownloadHandler(APIHandler, DownloadHandler):  # type: ignore[misc]
    """`GET <base_url>convex/api/storage/<storageId>`, behind Jupyter's authentication."""

    cors = False  # Jupyter's CORS

    def initialize(self, storage: StorageService, host_allowed: Any = None) -> None:
        """Route kwargs: the storage service."""
        DownloadHandler.initialize(self, storage, host_allowed)

    async def prepare(self) -> None:  # type: ignore[override]
        """Authenticate with Jupyter (`require_login`: 403 without its login)."""
        await require_login(self)


def handlers_for(
    server: SyncServer, prefix: str, admin_key: str
) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado routes for the shared store under `prefix` (e.g. `/convex`)."""
    route = {"server": server}
    return [
        *storage_routes(
            prefix,
            server.backend.storage,
            upload=JupyterUploadHandler,
            download=JupyterDownloadHandler,
        ),
        (url_path_join(prefix, "api/sync"), JupyterSyncSocketHandler, route),
        (url_path_join(prefix, r"api/[^/]+/sync"), JupyterSyncSocketHandler, route),
        (
            url_path_join(prefix, r"api/.*"),
            JupyterApiHandler,
            {**route, "prefix": prefix, "admin_key": admin_key},
        ),
    ]

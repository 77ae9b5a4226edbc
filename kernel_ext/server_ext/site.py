"""HTTP actions inside Jupyter: `<base_url>convex/http/<path>` runs the route of `<path>`.

Behind Jupyter's authentication like the shared store's other routes (`handlers`): a request
needs Jupyter's token (`Authorization: token ...` or `?token=`) or, from the server's own
pages, the login cookie with the XSRF token; a foreign origin is refused. The action sees the
path after the prefix (`/hello` for `<base_url>convex/http/hello`) and neither Jupyter's
token header nor its `token` query parameter.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join

from kernel_ext.server_ext.handlers import check_same_origin, require_login
from kernel_ext.sync.site import HttpActionHandler, SiteServer

__all__ = ["SITE_PATH", "JupyterHttpActionHandler", "site_handlers"]

#: Where HTTP actions are mounted, under the shared store's prefix (`<base_url>convex`).
SITE_PATH = "http"

_CROSS_ORIGIN = (
    "Cross-origin request refused: the shared store's HTTP actions only answer pages of this "
    "Jupyter server, or clients that send Jupyter's token (Authorization: token ...)"
)


class JupyterHttpActionHandler(HttpActionHandler, JupyterHandler):
    """HTTP actions behind Jupyter's authentication, origin and XSRF checks."""

    def _request_url(self) -> str:
        url = urllib.parse.urlsplit(super()._request_url())
        query = [(k, v) for k, v in urllib.parse.parse_qsl(url.query, True) if k != "token"]
        return url._replace(query=urllib.parse.urlencode(query)).geturl()

    async def prepare(self) -> None:  # type: ignore[override]
        """Authenticate with Jupyter, check origin and XSRF, then check the body's size.

        Raises:
            tornado.web.HTTPError: 403 without Jupyter's login, from a foreign origin, or
                (login cookie only) without the XSRF token.
        """
        await require_login(self)
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            self.check_xsrf_cookie()  # an action may read data on any method
        authorization = self.request.headers.get("Authorization", "")
        if authorization.lower().startswith("token "):  # Jupyter's, not the action's
            del self.request.headers["Authorization"]
        HttpActionHandler.prepare(self)

    def check_xsrf_cookie(self) -> None:
        """`handlers.check_same_origin`: Jupyter's XSRF check, a foreign origin refused as
        403."""
        check_same_origin(self, _CROSS_ORIGIN)


def site_handlers(site: SiteServer, prefix: str) -> list[tuple[str, type, dict[str, Any]]]:
    """The route of HTTP actions under `prefix` (e.g. `/convex`): `<prefix>/http/...`."""
    mount = url_path_join(prefix, SITE_PATH)
    return [(mount + r"(?:/.*)?", JupyterHttpActionHandler, {"site": site, "path_prefix": mount})]

"""What the servers log of a request's URI: credentials in its query string masked.

Every HTTP server of the package (`serve`'s API, its HTTP actions site, the file servers)
logs request URIs through `scrub_uri`, so that an admin key, a token or an upload URL's token
never reaches a log.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["scrub_uri"]

_CREDENTIAL: Final = re.compile("token|auth|key|secret|password|xsrf", re.IGNORECASE)


def scrub_uri(uri: str) -> str:
    """`uri` with the value of every credential-like query parameter (`adminKey`, `token`,
    `auth`, `secret`, `password`, `_xsrf`...) replaced by `[secret]`, for logs."""
    path, question, query = uri.partition("?")
    if not question:
        return uri
    parts = [
        name + "=[secret]" if _CREDENTIAL.search(name) else part
        for part in query.split("&")
        for name in [part.partition("=")[0]]
    ]
    return f"{path}?{'&'.join(parts)}"

"""`connect()`: open an embedded store (file or memory) or a remote one by URL."""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from kernel_ext.client.base import ConvexClient
from kernel_ext.client.embedded import Client
from kernel_ext.engine.store import Store
from kernel_ext.errors import StoreError, SyncError
from kernel_ext.functions.auth import AuthConfig
from kernel_ext.functions.backend import Backend
from kernel_ext.persistence.sqlite import SqlitePersistence

__all__ = ["DEFAULT_PATH", "connect", "resolve_location"]

DEFAULT_PATH: Final = Path(".convex") / "store.db"

_open: dict[Path, tuple[Backend, int]] = {}
_open_lock = threading.Lock()


def resolve_location(url: str | os.PathLike[str] | None) -> Path | None:
    """The store file a URL names (None for `memory`).

    `None` -> `./.convex/store.db`; `"memory"`; `"sqlite:///relative.db"`;
    `"sqlite:////absolute.db"`; a plain path or `Path`.
    """
    if url is None:
        return DEFAULT_PATH.resolve()
    if isinstance(url, os.PathLike):
        return Path(url).resolve()
    if not isinstance(url, str) or not url:
        raise StoreError(f"connect() takes a URL or path, got {url!r}")
    if url == "memory":
        return None
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).resolve()
    if "://" in url:
        raise StoreError(
            f"Unsupported store URL {url!r}: use memory, sqlite:///path, a file path or http://HOST:PORT"
        )
    return Path(url).resolve()


def connect(
    url: str | os.PathLike[str] | None = None,
    *,
    auth: Mapping[str, Any] | AuthConfig | None = None,
    admin_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ConvexClient:
    """Connect to a store.

    Args:
        url: None for `./.convex/store.db`, `"memory"` for a store that writes nothing lasting,
            `"sqlite:///path"` or a path for a store file, `"http://host:port"` for a server.
        auth: `{"issuer", "secret" | "public_key", "audience"?}` to verify tokens passed to
            `client.set_auth`; without it the embedded client trusts the token's claims.
        admin_key: for a server URL: act as admin (internal functions, pushing functions).
        headers: for a server URL: extra headers of the WebSocket upgrade (e.g. Jupyter's
            `Authorization: token ...`).

    Returns:
        a `Client` (embedded) or a `RemoteClient` (server URL): both are a
        `kernel_ext.ConvexClient` (`client.kind` says which).

    Clients of the same file in one process share one store (one process owns a file; a
    second process gets `StoreLocked` naming the owner).
    """
    config = AuthConfig.from_mapping(auth) if isinstance(auth, Mapping) else auth
    if isinstance(url, str) and url.startswith(("http://", "https://", "ws://", "wss://")):
        if auth is not None:
            raise SyncError(
                "auth= configures token checks of an embedded store; a server checks its own"
            )
        from kernel_ext.client.remote import RemoteClient

        return RemoteClient(url, admin_key=admin_key, headers=headers)
    path = resolve_location(url)
    if path is None:
        backend = Backend(Store(SqlitePersistence(None)))
        return Client(backend, location="memory", release=backend.close, auth=config)
    with _open_lock:
        backend, count = _open.get(path, (None, 0))  # type: ignore[assignment]
        if backend is None:
            backend = Backend(Store(SqlitePersistence(path)))
        _open[path] = (backend, count + 1)
    return Client(backend, location=str(path), release=lambda: _release(path), auth=config)


def _release(path: Path) -> None:
    with _open_lock:
        backend, count = _open[path]
        if count > 1:
            _open[path] = (backend, count - 1)
            return
        del _open[path]
    backend.close()


@atexit.register
def _close_all() -> None:
    with _open_lock:
        backends = [b for b, _ in _open.values()]
        _open.clear()
    for backend in backends:
        backend.close()

"""`connect()`: open an embedded store (file or memory) or a remote one by URL."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from kernel_ext.client.base import ConvexClient
from kernel_ext.client.embedded import Client
from kernel_ext.engine.store import Store
from kernel_ext.errors import PersistenceError, SyncError
from kernel_ext.functions.auth import AuthConfig
from kernel_ext.functions.backend import Backend
from kernel_ext.persistence.urls import (
    StoreLocation,
    mask_password,
    open_persistence,
    parse_store_url,
)

# `mask_password` is re-exported for the adapters above the client (magics), which show
# store URLs and may not import `persistence`.
__all__ = ["DEFAULT_PATH", "connect", "mask_password", "resolve_location"]

DEFAULT_PATH: Final = Path(".convex") / "store.db"

_open: dict[Path, tuple[Backend, int]] = {}
_open_lock = threading.Lock()
#: Open stores that are not files (memory, PostgreSQL): closed at exit too, so that their
#: threads (a PostgreSQL store's follower, the scheduler) stop before the interpreter does.
_unshared: weakref.WeakSet[Backend] = weakref.WeakSet()


def resolve_location(url: str | os.PathLike[str] | None) -> Path | None:
    """The store file a URL names (None for `memory`).

    `None` -> `./.convex/store.db`; `"memory"`; `"sqlite:///relative.db"`;
    `"sqlite:////absolute.db"`; a plain path or `Path`.

    Raises:
        PersistenceError: the URL names no store file (another scheme, or a database).
    """
    location = _location(url)
    if location.kind == "postgresql":
        raise PersistenceError(f"{location.describe()} names a database, not a store file")
    return location.path


def _location(url: str | os.PathLike[str] | None) -> StoreLocation:
    if url is None:
        return StoreLocation("sqlite", DEFAULT_PATH.resolve())
    return parse_store_url(url)


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
            `"sqlite:///path"` or a path for a store file, `"http://host:port"` for a server
            (`kernel_ext.persistence.urls` lists the store URLs).
        auth: `{"issuer", "secret" | "public_key", "audience"?}` to verify tokens passed to
            `client.set_auth`; without it the embedded client trusts the token's claims.
        admin_key: for a server URL: act as admin (internal functions, pushing functions).
        headers: for a server URL: extra headers of the WebSocket upgrade (e.g. Jupyter's
            `Authorization: token ...`).

    Returns:
        a `Client` (embedded) or a `RemoteClient` (server URL): both are a
        `kernel_ext.ConvexClient` (`client.kind` says which).

    Raises:
        PersistenceError: the URL names no store (an unknown scheme is refused, never taken
            for a file path), or the store cannot be opened; the message never shows a
            password.

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
    location = _location(url)
    path = location.path
    if location.kind != "sqlite" or path is None:
        backend = Backend(Store(open_persistence(location)))
        _unshared.add(backend)
        return Client(backend, location=location.describe(), release=backend.close, auth=config)
    with _open_lock:
        backend, count = _open.get(path, (None, 0))  # type: ignore[assignment]
        if backend is None:
            backend = Backend(Store(open_persistence(location)))
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
    for backend in [*backends, *list(_unshared)]:
        try:
            backend.close()
        except Exception:  # one store's failure must not keep the others open
            logging.getLogger(__name__).exception("Closing a store at exit failed")

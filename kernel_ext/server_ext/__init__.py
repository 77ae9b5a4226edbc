"""The jupyter-server extension: one shared store for every notebook of a Jupyter server.

The store lives in the Jupyter server process (kernel restarts don't touch it), at
`<root_dir>/.convex/shared.db` (or `$CONVEX_JUPYTER_DB`, else `c.ConvexNotebook.db` in the
server's config: a path or a store URL, see `kernel_ext.persistence.urls`), with the
functions folder `<root_dir>/convex/` loaded when it exists (or `$CONVEX_JUPYTER_FUNCTIONS`).
A PostgreSQL store may be open in other processes too (other Jupyter servers, `serve`
processes, kernels): its admin key and pushed functions are kept in the database and shared
with them. It is served under the server's base URL, behind Jupyter's own authentication:

    <base_url>convex/api/sync, <base_url>convex/api/<version>/sync   the sync WebSocket
    <base_url>convex/api/...                                          the HTTP API
    <base_url>convex/http/<path>                                      HTTP actions (http.py)

Kernels started by this server find it through environment variables the extension sets in
the server process (kernels inherit them): `CONVEX_JUPYTER_URL`, `CONVEX_JUPYTER_TOKEN` and
`CONVEX_ADMIN_KEY` (the notebook owner may push functions and call internal ones). Other
processes of the same user find it with `kernel_ext.connect_jupyter()`, through
`<runtime dir>/convex-notebook-<pid>.json` (mode 0600) beside Jupyter's `jpserver-<pid>.json`;
the admin key stays in `<db>.admin-key` (mode 0600; for a store without a file, `<root_dir>/
.convex/shared.db.admin-key`).

Browsers may use these routes only from the server's own pages (Jupyter's origin and XSRF
checks, see `handlers`); kernels and scripts send Jupyter's token.

Enable it with `jupyter server extension enable kernel_ext.server_ext`, or start a server
with `--ServerApp.jpserver_extensions="{'kernel_ext.server_ext': True}"`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from kernel_ext.persistence.urls import StoreLocation

__all__ = ["SHARED_DB", "_jupyter_server_extension_points", "_load_jupyter_server_extension"]

#: The shared store's file, relative to the Jupyter server's root directory.
SHARED_DB = Path(".convex") / "shared.db"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kernel_ext.server_ext"}]


#: Limits configurable as `c.ConvexNotebook.<name> = value` in jupyter_server_config.py (or
#: `--ConvexNotebook.<name>=value`): `SyncServer` options of the same name.
_LIMIT_OPTIONS = {
    "function_time_limit": ("time_limit", float),
    "max_subscriptions": ("max_subscriptions", int),
    "max_concurrent_calls": ("max_concurrent_calls", int),
}


def _limits(serverapp: Any) -> dict[str, Any]:
    """The `SyncServer` limits set in the Jupyter server's `ConvexNotebook` config section
    (a time limit of 0 means none).

    Raises:
        ValueError: a limit is not a number of 0 or more.
    """
    section = serverapp.config.get("ConvexNotebook", {})
    options: dict[str, Any] = {}
    for name, (option, kind) in _LIMIT_OPTIONS.items():
        if name in section:
            value = kind(section[name])
            if not value >= 0:  # `not >=`: also refuses NaN
                raise ValueError(f"c.ConvexNotebook.{name} is {value!r}: give 0 or more")
            options[option] = value
    return options


def _publish(serverapp: Any, url: str, db: Path) -> None:
    """Tell other processes of this user where the shared store is (`connect_jupyter()`), and
    keep credentials out of Jupyter's request log."""
    import atexit

    from kernel_ext.functions.auth import jupyter_record_path
    from kernel_ext.sync.auth import admin_key_path

    record = jupyter_record_path(serverapp.runtime_dir, os.getpid())
    info = {"url": url, "admin_key_file": str(admin_key_path(db))}
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(info, file)
    atexit.register(record.unlink, missing_ok=True)
    # Our handlers log scrubbed URIs; Jupyter's own (its 404 for other URLs under the prefix,
    # the Referer in its error logs) scrub parameters containing "key", case-sensitively.
    settings = serverapp.web_app.settings
    settings["extra_log_scrub_param_keys"] = [
        *settings.get("extra_log_scrub_param_keys", []),
        "Key",
        "secret",
    ]


def _store_location(root: Path, config: Any = None) -> StoreLocation:
    """The shared store: `$CONVEX_JUPYTER_DB`, else `c.ConvexNotebook.db` of the server's
    `config` (a path, relative to the current folder, or any store URL `kernel_ext.connect()`
    takes, e.g. `postgresql://user:password@host/dbname`), else `<root>/.convex/shared.db`.

    Raises:
        PersistenceError: the setting holds a URL of no store (never taken for a file).
    """
    from kernel_ext.persistence.urls import parse_store_url

    configured = (config or {}).get("ConvexNotebook", {}).get("db")
    return parse_store_url(os.environ.get("CONVEX_JUPYTER_DB") or configured or root / SHARED_DB)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Open the shared store, mount its routes, and tell future kernels where it is."""
    import tornado.ioloop
    from jupyter_server.utils import url_path_join

    from kernel_ext.engine.store import Store
    from kernel_ext.functions.backend import Backend
    from kernel_ext.persistence.urls import open_persistence
    from kernel_ext.server_ext.handlers import handlers_for
    from kernel_ext.server_ext.site import site_handlers
    from kernel_ext.sync.auth import (
        SharedSettings,
        admin_key_path,
        generate_admin_key,
        stored_admin_key,
        write_admin_key,
    )
    from kernel_ext.sync.server import SyncServer
    from kernel_ext.sync.site import SiteServer

    root = Path(serverapp.root_dir)
    location = _store_location(root, serverapp.config)
    # Absolute: other processes, in other folders, read the key file's path from the record.
    # A store without a file (memory) keeps its key and pushed modules where the file would be.
    db = location.path or (root / SHARED_DB).resolve()
    persistence = open_persistence(location)
    backend = Backend(Store(persistence))
    functions = Path(os.environ.get("CONVEX_JUPYTER_FUNCTIONS") or root / "convex")
    if functions.is_dir():
        backend.load_functions(functions)
    if backend.store.shared:  # the key every process serving the database has
        settings = cast("SharedSettings", persistence)
        admin_key = stored_admin_key(settings, None, location.describe())
    else:
        admin_key = generate_admin_key()
    write_admin_key(admin_key_path(db), admin_key)
    server = SyncServer(
        backend, admin_key=admin_key, push_dir=db.parent / "pushed", **_limits(serverapp)
    )
    prefix = url_path_join(serverapp.base_url, "convex")
    site = SiteServer(backend, server.authenticator, server.action_executor)
    serverapp.web_app.add_handlers(
        ".*$", [*handlers_for(server, prefix, admin_key), *site_handlers(site, prefix)]
    )
    ticker = tornado.ioloop.PeriodicCallback(server._tick, server.tick_interval * 1000)
    ticker.start()
    url = url_path_join(serverapp.connection_url, "convex")
    backend.storage.serve_at(url)  # file URLs: <url>/api/storage/...
    persistence.set_owner_info(url)
    os.environ["CONVEX_JUPYTER_URL"] = url
    os.environ["CONVEX_JUPYTER_STORE"] = location.describe()  # what `%convex status` shows
    os.environ["CONVEX_JUPYTER_TOKEN"] = getattr(serverapp.identity_provider, "token", "") or ""
    os.environ["CONVEX_ADMIN_KEY"] = admin_key
    _publish(serverapp, url, db)
    serverapp.log.info("convex-notebook: shared store %s served at %s", location.describe(), url)
    serverapp._convex_backend = backend  # closed with the process

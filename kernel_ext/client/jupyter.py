"""`connect_jupyter()`: reach the shared store of a running Jupyter server from a script or
any other process of the same user.

    import kernel_ext
    with kernel_ext.connect_jupyter() as convex:
        convex.query("tasks:list")

The server extension records, beside Jupyter's own `jpserver-<pid>.json` in the Jupyter
runtime directory, where its store is served and where its admin key is kept (both files are
readable by their user only). This module reads them: it needs no token or key from the user.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_ext.errors import StoreError
from kernel_ext.functions.auth import jupyter_record_path

if TYPE_CHECKING:
    from kernel_ext.client.remote import RemoteClient

__all__ = ["JupyterStore", "connect_jupyter", "running_jupyter_stores"]

_START_HINT = (
    "start one with `jupyter lab` (the extension is enabled when convex-notebook is "
    "installed) or `jupyter server --ServerApp.jpserver_extensions="
    "\"{'kernel_ext.server_ext': True}\"`"
)


@dataclass(frozen=True)
class JupyterStore:
    """A running Jupyter server with the extension, as its runtime files describe it.

    Attributes:
        server_url: the Jupyter server's URL (`http://127.0.0.1:8888/`).
        root_dir: the folder it serves.
        url: the shared store's URL (`<server_url>convex`).
        token: Jupyter's token ("" when the server has none).
        admin_key_file: where the store's admin key is kept.
    """

    server_url: str
    root_dir: str
    url: str
    token: str
    admin_key_file: Path

    def admin_key(self) -> str:
        """The store's admin key.

        Raises:
            StoreError: the key file is missing, not ours, or readable by others.
        """
        try:
            info = self.admin_key_file.stat()
            if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise StoreError(
                    f"The admin key file {self.admin_key_file} is not private to you (mode "
                    f"{stat.filemode(info.st_mode)}): restart the Jupyter server, which "
                    "writes a new key with mode 0600"
                )
            return self.admin_key_file.read_text().strip()
        except OSError as exc:
            raise StoreError(
                f"Cannot read the shared store's admin key {self.admin_key_file}: {exc}"
            ) from exc


def running_jupyter_stores(runtime_dir: str | os.PathLike[str] | None = None) -> list[JupyterStore]:
    """The running Jupyter servers of this user that serve a shared store.

    Args:
        runtime_dir: Jupyter's runtime directory (default: `jupyter --runtime-dir`, which
            honours `JUPYTER_RUNTIME_DIR`).
    """
    from jupyter_core.paths import jupyter_runtime_dir
    from jupyter_server.serverapp import list_running_servers

    folder = Path(runtime_dir) if runtime_dir is not None else Path(jupyter_runtime_dir())
    return [
        store for server in list_running_servers(str(folder)) for store in _store(folder, server)
    ]


def _store(folder: Path, server: dict[str, Any]) -> Iterator[JupyterStore]:
    try:
        record = json.loads(jupyter_record_path(folder, int(server["pid"])).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return  # a server without the extension (or one still starting)
    yield JupyterStore(
        server_url=str(server.get("url", "")),
        root_dir=str(server.get("root_dir", "")),
        url=str(record["url"]),
        token=str(server.get("token") or ""),
        admin_key_file=Path(record["admin_key_file"]),
    )


def connect_jupyter(
    url: str | None = None,
    *,
    root_dir: str | os.PathLike[str] | None = None,
    runtime_dir: str | os.PathLike[str] | None = None,
) -> RemoteClient:
    """Connect to the shared store of a running Jupyter server of this user, as its owner
    (admin: internal functions and pushing functions are allowed).

    Args:
        url: choose the server with this URL (e.g. `http://127.0.0.1:8888`), or the store URL.
        root_dir: choose the server serving this folder.
        runtime_dir: where to look for running servers (default: Jupyter's runtime directory).

    Returns:
        a connected `RemoteClient` (close it, or use it in a `with` block).

    Raises:
        StoreError: no such server is running, several match (the message lists them), or
            its admin key cannot be read.
    """
    stores = running_jupyter_stores(runtime_dir)
    if not stores:
        raise StoreError(
            "No running Jupyter server with the convex-notebook extension was found (looked "
            f"in the Jupyter runtime directory{_where(runtime_dir)}): {_START_HINT}, as the "
            "same user as this process"
        )
    chosen = [s for s in stores if _matches(s, url, root_dir)]
    if len(chosen) != 1:
        listing = "; ".join(f"url={s.server_url!r} root_dir={s.root_dir!r}" for s in stores)
        problem = "None of" if not chosen else "Several of"
        raise StoreError(
            f"{problem} the running Jupyter servers match: {listing}. Choose one with "
            "connect_jupyter(url=...) or connect_jupyter(root_dir=...)"
        )
    store = chosen[0]
    from kernel_ext.client.remote import RemoteClient

    headers = {"Authorization": f"token {store.token}"} if store.token else None
    return RemoteClient(store.url, admin_key=store.admin_key(), headers=headers)


def _matches(store: JupyterStore, url: str | None, root_dir: str | os.PathLike[str] | None) -> bool:
    if url is not None:
        wanted = url.rstrip("/")
        if not any(
            u == wanted or u.startswith(wanted + "/") for u in (store.server_url, store.url)
        ):
            return False
    return root_dir is None or Path(store.root_dir).resolve() == Path(root_dir).resolve()


def _where(runtime_dir: str | os.PathLike[str] | None) -> str:
    if runtime_dir is not None:
        return f" {runtime_dir}"
    from jupyter_core.paths import jupyter_runtime_dir

    return f" {jupyter_runtime_dir()}"

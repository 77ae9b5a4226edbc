"""What `%convex status` says: which store, where it is, and how another process reaches it."""

from __future__ import annotations

import os

from kernel_ext.client.base import ConvexClient
from kernel_ext.client.connect import mask_password

__all__ = ["describe_store"]


def describe_store(client: ConvexClient, *, serving: str | None = None) -> str:
    """A few lines naming the store `client` uses, its file or URL, its state, and how a
    script or another process reaches the same store. Never shows a token or key.

    Args:
        client: the notebook's client.
        serving: the URL `%convex serve` serves this kernel's store at, if it does.
    """
    if client.kind == "embedded":
        return "\n".join(_embedded(client, serving))
    return "\n".join(_remote(client))


def _embedded(client: ConvexClient, serving: str | None) -> list[str]:
    database = "://" in client.location
    if client.location == "memory":
        lines = ["convex: embedded store in this kernel's memory (nothing is written to disk)"]
    elif database:
        lines = [f"convex: store in database {mask_password(client.location)}"]
    else:
        lines = [f"convex: embedded store in this kernel, file {client.location}"]
    lines.append(f"  {len(client.tables())} tables, {len(client.functions())} functions")
    if database:  # a shared store: no owner, every process opens it itself
        lines.append(
            "  other processes open the same database at once and see its changes live: "
            "kernel_ext.connect(URL) (with the password), `python -m kernel_ext serve --db URL`"
        )
        if serving is not None:
            lines.append(f"  also served at {serving} by this kernel (`%convex serve`)")
    elif serving is not None:
        lines.append(
            f"  served at {serving}: from a script or another process, "
            f"kernel_ext.connect({serving!r}) (admin: admin_key=convex_admin_key's value)"
        )
    else:
        lines.append(
            "  this kernel owns it: another process cannot open it while the kernel runs; "
            "`%convex serve` serves it and prints the URL to connect to"
        )
    return lines


def _without_query(url: str) -> str:
    """A URL without its query string (Jupyter's `?token=` must not be printed) or the
    password of its user part."""
    return mask_password(url.partition("?")[0])


def _remote(client: ConvexClient) -> list[str]:
    state = "" if client.status == "connected" else f" ({_waiting(client)})"
    shared = os.environ.get("CONVEX_JUPYTER_URL", "").rstrip("/")
    url = _without_query(client.url)
    if shared and client.url == shared:
        lines = [f"convex: the Jupyter server's shared store, served at {url}{state}"]
        if store := os.environ.get("CONVEX_JUPYTER_STORE"):
            if "://" in store:  # a database other processes may open too
                masked = mask_password(store)
                lines.append(f"  store: {masked} (PostgreSQL: other processes may open it too)")
            else:
                what = "store" if store == "memory" else "file"
                lines.append(f"  {what}: {store} (owned by the Jupyter server process)")
        lines.append(
            "  every notebook of this Jupyter server uses it; from a script or another "
            "process run as the same user: kernel_ext.connect_jupyter()"
        )
        return lines
    lines = [f"convex: store served at {url}{state}"]
    lines.append(
        f"  from a script or another process: kernel_ext.connect({url!r}) "
        "(admin: admin_key=..., or $CONVEX_ADMIN_KEY for %load_ext)"
    )
    return lines


def _waiting(client: ConvexClient) -> str:
    if client.status == "reconnecting":
        return "reconnecting: the server does not answer, retrying"
    return "still connecting: waiting for the server to answer"

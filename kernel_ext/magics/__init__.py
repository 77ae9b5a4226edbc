"""IPython magics: `%%convex_schema`, `%%convex_query`, `%%convex_mutation`, `%%convex_action`
and the `%convex` line magic. Thin adapters: parse (`kernel_ext.functions.headers`), compile
(`kernel_ext.functions.cells`), hand to the client (`kernel_ext.ConvexClient`), display.

The magics class itself is `kernel_ext.magics.shell.ConvexMagics`; that module imports IPython,
so it is imported only by `load_ipython_extension`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from kernel_ext.client.base import ConvexClient

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = [
    "PROMISED_NAMES",
    "default_client",
    "load_ipython_extension",
    "promised_names",
    "unload_ipython_extension",
]

#: The names `%load_ext kernel_ext` puts in the notebook (besides `convex`, the client).
PROMISED_NAMES: Final = ("api", "v", "define_schema", "define_table", "UNDEFINED")


def promised_names() -> dict[str, Any]:
    """`{name: object}` for `PROMISED_NAMES`."""
    from kernel_ext.functions.cells import base_namespace

    namespace = base_namespace()
    return {name: namespace[name] for name in PROMISED_NAMES}


def default_client() -> ConvexClient:
    """The store `%load_ext` uses, in order: `$CONVEX_URL` (with `$CONVEX_ADMIN_KEY`), the
    shared store of the Jupyter server this kernel runs under (`$CONVEX_JUPYTER_URL`), the
    embedded store at `./.convex/store.db`."""
    import kernel_ext

    admin_key = os.environ.get("CONVEX_ADMIN_KEY")
    if url := os.environ.get("CONVEX_URL"):
        client: ConvexClient = kernel_ext.connect(url, admin_key=admin_key)
    elif shared := os.environ.get("CONVEX_JUPYTER_URL"):
        token = os.environ.get("CONVEX_JUPYTER_TOKEN", "")
        headers = {"Authorization": f"token {token}"} if token else {}
        client = kernel_ext.connect(shared, admin_key=admin_key, headers=headers)
    else:
        client = kernel_ext.connect()
    return client


def load_ipython_extension(shell: InteractiveShell) -> None:
    """`%load_ext kernel_ext`: connect the default client and inject `convex`, `api`, `v`,
    `define_schema`, `define_table`, `UNDEFINED`. Loading again keeps the existing client."""
    from kernel_ext.magics.shell import ConvexMagics

    client = shell.user_ns.get("convex")
    if not isinstance(client, ConvexClient) or client.closed:
        shell.user_ns["convex"] = default_client()
    shell.user_ns.update(promised_names())
    magics = ConvexMagics(shell)
    shell.register_magics(magics)
    magics.install_traceback_filter()


def unload_ipython_extension(shell: InteractiveShell) -> None:
    """Close the client that `load_ipython_extension` opened (and stop hiding frames)."""
    from kernel_ext.magics.shell import remove_traceback_filter

    remove_traceback_filter(shell)
    client = shell.user_ns.pop("convex", None)
    if isinstance(client, ConvexClient):
        client.close()

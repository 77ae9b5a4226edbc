"""convex-notebook: a Convex-style reactive document store, functions and live tables.

    import kernel_ext
    from kernel_ext import v, define_schema, define_table, query, mutation

    client = kernel_ext.connect("memory")

`%load_ext kernel_ext` is the notebook entry point; `python -m kernel_ext` the command line.
"""

from __future__ import annotations

from typing import Any

from kernel_ext.client.base import ConvexClient
from kernel_ext.client.connect import connect
from kernel_ext.client.embedded import Client
from kernel_ext.client.jupyter import connect_jupyter
from kernel_ext.client.subscription import CallbackHandle, Subscription
from kernel_ext.engine.subscriptions import QueryResult
from kernel_ext.errors import ConvexError
from kernel_ext.functions.auth import make_dev_token
from kernel_ext.functions.crons import cron_jobs
from kernel_ext.functions.http_actions import Response, http_action, http_router
from kernel_ext.functions.registration import (
    action,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)
from kernel_ext.functions.registry import FunctionReference, api, internal, path_of
from kernel_ext.store.schema import define_schema, define_table
from kernel_ext.store.validators import v
from kernel_ext.store.values import UNDEFINED
from kernel_ext.store.values import compare as compare_values

__all__ = [
    "UNDEFINED",
    "CallbackHandle",
    "Client",
    "ConvexClient",
    "ConvexError",
    "FunctionReference",
    "QueryResult",
    "Response",
    "Subscription",
    "action",
    "api",
    "compare_values",
    "connect",
    "connect_jupyter",
    "cron_jobs",
    "define_schema",
    "define_table",
    "http_action",
    "http_router",
    "internal",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "make_dev_token",
    "mutation",
    "path_of",
    "query",
    "v",
]

__version__ = "0.1.0"


def load_ipython_extension(shell: Any) -> None:
    """`%load_ext kernel_ext` (see `kernel_ext.magics`)."""
    from kernel_ext.magics import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    """`%unload_ext kernel_ext`."""
    from kernel_ext.magics import unload_ipython_extension as unload

    unload(shell)

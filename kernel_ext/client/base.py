"""The one client interface: what `kernel_ext.connect()` returns, embedded or remote.

Adapters (the magics, the widgets) program against `ConvexClient` and ask it what they need
(`kind`, `location`, `status`, `call_as_owner`, ...) instead of probing for attributes of one
implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from kernel_ext.client.subscription import CallbackHandle, Subscription

__all__ = ["CallKind", "ClientKind", "ConvexClient"]

#: `"embedded"`: the store runs in this process; `"remote"`: a server over HTTP/WebSocket.
ClientKind = Literal["embedded", "remote"]
CallKind = Literal["query", "mutation", "action"]


@runtime_checkable
class ConvexClient(Protocol):
    """A client of one store (`kernel_ext.connect(...)`); both clients implement it.

    Attributes:
        kind: where the store runs (`"embedded"` or `"remote"`).
        location: a store file's path, `"memory"`, or the server's URL.
        url: how another process names the store (`sqlite:///path`, `memory`, `http://...`).
        status: `"connected"` (always, embedded), or `"connecting"` / `"connected"` /
            `"reconnecting"` for a remote client.
        closed: True once `close()` ran.
    """

    @property
    def kind(self) -> ClientKind: ...
    @property
    def location(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def closed(self) -> bool: ...

    def query(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a public query."""
        ...

    def mutation(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a public mutation (read your writes when it returns)."""
        ...

    def action(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a public action."""
        ...

    def subscribe(
        self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Subscription:
        """Subscribe to a public query."""
        ...

    def call_as_owner(self, kind: CallKind, ref: Any, args: Mapping[str, Any]) -> Any:
        """Run any function, internal ones too, as the store's owner (the line magics);
        a mutation's commit is visible to this client's subscriptions when it returns.

        Raises:
            AuthenticationError: remote, without the admin key.
        """
        ...

    def register(self, path: str, function: Any) -> str:
        """Define one function (a remote store gets the source of a `%%convex_*` cell)."""
        ...

    def set_schema(self, schema: Any) -> None:
        """Install a schema object (embedded; a remote store takes a schema cell's source).

        Raises:
            SchemaError: an existing document does not match it.
        """
        ...

    def load_functions(self, folder: str | Path) -> list[str]:
        """Load (or push) every module of a functions folder."""
        ...

    def function_info(self, path: str) -> dict[str, Any] | None:
        """`{path, kind, visibility, args}` of one function, or None."""
        ...

    def describe_functions(self) -> list[dict[str, Any]]:
        """`[{path, kind, visibility, args}]`."""
        ...

    def describe_tables(self) -> list[dict[str, Any]]:
        """`[{table, indexes}]` of the user tables."""
        ...

    def tables(self) -> list[str]:
        """The user tables' names."""
        ...

    def functions(self) -> list[str]:
        """The functions' paths."""
        ...

    def on_status(self, listener: Callable[[str], None]) -> CallbackHandle:
        """Call `listener(status)` when `status` changes (never, for an embedded store),
        until the returned handle's `remove()`."""
        ...

    def table_df(self, table: str) -> pd.DataFrame:
        """Every document of `table` as a DataFrame."""
        ...

    def column_kinds(self) -> dict[int, dict[str, dict[str, Any]]]:
        """The pandas column kinds `import_dataframe` recorded, by table number, for
        `kernel_ext.client.dataframe.to_dataframe` (empty when they cannot be read)."""
        ...

    def column_info(self, document_id: str) -> dict[str, dict[str, Any]]:
        """What the store knows of the columns of the table `document_id` belongs to (for
        the LiveTable): `{column: {"validator": <the schema's JSON validator of the field>,
        "dtype": <the kind import_dataframe recorded>}}`, each key only when known. Embedded
        and remote clients give the same value for the same store (a remote client asks
        the server with the admin key, and gets `{}` without it)."""
        ...

    def import_dataframe(
        self, table: str, frame: pd.DataFrame, *, batch_size: int = 1000, progress: bool = True
    ) -> list[str]:
        """Insert every row of `frame` into `table` in batches; returns the new ids."""
        ...

    def set_auth(self, token: str) -> None:
        """Act as the user of a JWT."""
        ...

    def clear_auth(self) -> None:
        """Act anonymously again."""
        ...

    def with_identity(self, claims: Mapping[str, Any]) -> ConvexClient:
        """A client of the same store acting as the user with these claims."""
        ...

    def close(self) -> None:
        """Close the client; idempotent."""
        ...

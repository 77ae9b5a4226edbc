"""The embedded client: the store runs inside this process (the notebook's kernel)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_ext.client.arguments import merge_args
from kernel_ext.client.base import CallKind, ClientKind
from kernel_ext.client.subscription import CallbackHandle, Subscription
from kernel_ext.errors import TransactionClosed
from kernel_ext.functions.auth import AuthConfig, claims_of
from kernel_ext.functions.backend import Backend
from kernel_ext.functions.context import identity_from_claims
from kernel_ext.functions.registration import FunctionDefinition
from kernel_ext.functions.registry import path_of
from kernel_ext.store.catalog import BY_CREATION_TIME
from kernel_ext.store.column_kinds import column_kinds_by_number, insert_rows
from kernel_ext.store.schema import SchemaDefinition

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

__all__ = ["Client"]


class Client:
    """A client of an embedded store. Create it with `kernel_ext.connect()`.

    Args:
        backend: the store and its functions (shared by clients of the same file).
        location: what `status` shows (a file path or "memory").
        release: called once when the client closes (to close an unshared backend).
        auth: verifies tokens given to `set_auth`; without it their claims are trusted.
        identity: the user this client acts as (None: anonymous).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        location: str,
        release: Callable[[], None],
        auth: AuthConfig | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.location = location
        self._release = release
        self._auth = auth
        self._identity = identity
        self._subscriptions: set[Subscription] = set()
        self._dispatcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convex-callbacks")
        self._closed = False
        self._lock = threading.Lock()

    #: The store runs in this process (`kernel_ext.ConvexClient`).
    kind: ClientKind = "embedded"

    def __repr__(self) -> str:
        return f"<kernel_ext.Client embedded store at {self.location}>"

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    @property
    def status(self) -> str:
        """ "connected"; on a PostgreSQL store, "reconnecting" while its server cannot be
        reached (`backend.store.unreachable` says why)."""
        return self.backend.store.status

    def on_status(self, listener: Callable[[str], None]) -> CallbackHandle:
        """Call `listener(status)` when `status` changes (only a PostgreSQL store's does:
        "reconnecting" while its server cannot be reached, then "connected")."""
        return CallbackHandle(self.backend.store.on_status(listener))

    def call_as_owner(self, kind: CallKind, ref: Any, args: Mapping[str, Any]) -> Any:
        """Run any function, internal ones too, as the store's owner; read your writes."""
        return self._call(kind, ref, dict(args), None, public_only=False)

    def function_info(self, path: str) -> dict[str, Any] | None:
        """`{path, kind, visibility, args}` of one function, or None."""
        return self.backend.describe_function(path_of(path))

    @property
    def url(self) -> str:
        """Where the store is: `memory`, `sqlite:///path`, or the PostgreSQL URL with its
        password masked."""
        if self.location == "memory" or self.location.startswith(("postgresql:", "postgres:")):
            return self.location
        return f"sqlite:///{self.location}"

    def _check_open(self) -> None:
        if self._closed:
            raise TransactionClosed(
                "This client is closed; create a new one with kernel_ext.connect()"
            )

    # -- calling functions ---------------------------------------------------------------

    def query(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a public query and return its result."""
        return self._call("query", ref, merge_args(args, kwargs), self._identity, public_only=True)

    def mutation(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a public mutation and return its result. When it returns, every subscription
        already reflects the commit (read your writes)."""
        return self._call(
            "mutation", ref, merge_args(args, kwargs), self._identity, public_only=True
        )

    def action(self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run a public action and return its result (its mutations are visible to every
        subscription when it returns)."""
        return self._call("action", ref, merge_args(args, kwargs), self._identity, public_only=True)

    def _call(
        self,
        kind: CallKind,
        ref: Any,
        args: Any,
        identity: dict[str, Any] | None,
        *,
        public_only: bool,
    ) -> Any:
        """Run a function as `identity` (None: anonymous or the owner). After a
        mutation or an action, wait until every subscription reflects its writes (read your
        writes); a query does not wait: it would wait behind slow live queries for nothing."""
        self._check_open()
        value, ts = self.backend.call_with_ts(
            ref,
            args,
            kind=kind,
            identity=identity,
            public_only=public_only,
        )
        if kind != "query":
            # An action's mutations committed in transactions of their own: the latest ts.
            self.backend.subscriptions.wait_processed(
                ts if ts is not None else self.backend.store.ts
            )
        return value

    def subscribe(
        self, ref: Any, args: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Subscription:
        """Subscribe to a public query: the returned `Subscription` stays up to date."""
        self._check_open()
        values = merge_args(args, kwargs)
        path = path_of(ref)
        # Fail now (unknown function, bad args) rather than in the first result.
        self.backend.registry.lookup(path, "query", public_only=True)

        def start(on_result: Any) -> Any:
            return self.backend.subscribe(path, values, self._identity, on_result)

        sub = Subscription(start, self._dispatcher, path, column_kinds=self.column_kinds)
        with self._lock:
            self._subscriptions.add(sub)
        return sub

    def load_functions(self, folder: str | Path) -> list[str]:
        """Load every module of a functions folder (and `schema.py`); returns the paths."""
        self._check_open()
        return self.backend.load_functions(folder)

    def register(self, path: str, function: FunctionDefinition) -> str:
        """Register one function (defined with `@query`, `@mutation`, ...) at `path`
        (`"module:name"`); live subscriptions to that path re-run. Returns the canonical path."""
        self._check_open()
        return self.backend.register(path, function)

    def set_schema(self, schema: SchemaDefinition | None) -> None:
        """Install a schema (validation and indexes); existing documents must match it.

        Raises:
            SchemaError: an existing document does not match; nothing changed.
        """
        self._check_open()
        self.backend.store.set_schema(schema)

    # -- identity ------------------------------------------------------------------------

    def set_auth(self, token: str) -> None:
        """Act as the user of a JWT (verified if the client was given `auth=`); live
        subscriptions re-run with the new identity."""
        self._set_identity(identity_from_claims(claims_of(token, self._auth)))

    def clear_auth(self) -> None:
        """Act anonymously again."""
        self._set_identity(None)

    def _set_identity(self, identity: dict[str, Any] | None) -> None:
        self._identity = identity
        with self._lock:
            subscriptions = list(self._subscriptions)
        for sub in subscriptions:
            sub.restart()

    def with_identity(self, claims: Mapping[str, Any]) -> Client:
        """A client of the same store acting as the user with these claims (`sub`, `iss`,
        ...), without a token."""
        self._check_open()
        return Client(
            self.backend,
            location=self.location,
            release=lambda: None,
            auth=self._auth,
            identity=identity_from_claims(claims),
        )

    # -- data frames ---------------------------------------------------------------------

    def import_dataframe(
        self, table: str, frame: pd.DataFrame, *, batch_size: int = 1000, progress: bool = True
    ) -> list[str]:
        """Insert every row of `frame` as a document of `table`, in mutations of `batch_size`
        rows, with a progress bar. Missing values leave the field out. Each batch is atomic;
        returns the new ids in row order. Datetime, nullable and categorical columns keep
        their dtype in `table_df` / `sub.df` (datetimes are stored as float ms since the
        epoch, UTC; see `kernel_ext.client.dataframe`).

        Live queries do not slow the import down: it does not wait for them between batches
        (they re-run in the background, once for all the batches committed while a re-run was
        under way), and it waits once at the end, so that when it returns (or raises) every
        subscription reflects every imported row (read your writes)."""
        from kernel_ext.client.dataframe import import_in_batches

        self._check_open()
        last_ts = [0]

        def insert(batch: list[dict[str, Any]], kinds: list[dict[str, Any]]) -> list[str]:
            # No wait for live queries here: they catch up in the background, and the batches
            # committed while one of their rounds runs are merged into the next round.
            new_ids, last_ts[0] = self.backend.store.mutate(
                lambda txn: insert_rows(txn, table, batch, kinds)
            )
            return new_ids

        try:
            return import_in_batches(table, frame, insert, batch_size=batch_size, progress=progress)
        finally:
            # Read your writes (also of the batches before a failing one): one wait, at the end.
            self.backend.subscriptions.wait_processed(last_ts[0])

    def table_df(self, table: str) -> pd.DataFrame:
        """Every document of `table` (in creation order) as a DataFrame."""
        from kernel_ext.client.dataframe import to_dataframe

        self._check_open()
        docs, _, _ = self.backend.store.read(
            lambda txn: txn.query(table).with_index(BY_CREATION_TIME).collect()
        )
        return to_dataframe(docs, self.column_kinds)

    def column_kinds(self) -> dict[int, dict[str, dict[str, Any]]]:
        """The column kinds `import_dataframe` recorded, by table number."""
        return self.backend.store.read(column_kinds_by_number)[0]

    def column_info(self, document_id: str) -> dict[str, dict[str, Any]]:
        """What the store knows of the columns of the table `document_id` belongs to:
        `{column: {"validator": <the schema's JSON validator of the field>, "dtype": <the
        kind import_dataframe recorded>}}`, each key only when known (empty for an id of no
        table)."""
        from kernel_ext.functions.columns import column_info  # shared with served stores

        return column_info(self.backend.store, document_id)

    def tables(self) -> list[str]:
        """The names of the user tables."""
        return [t.name for t in self.backend.store.catalog.tables() if not t.name.startswith("_")]

    def functions(self) -> list[str]:
        """The paths of the registered functions."""
        return self.backend.registry.paths()

    def describe_functions(self) -> list[dict[str, Any]]:
        """`[{path, kind, visibility, args}]` of the registered functions."""
        return self.backend.describe_functions()

    def describe_tables(self) -> list[dict[str, Any]]:
        """`[{table, indexes}]` of the user tables."""
        return self.backend.describe_tables()

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the subscriptions and release the store; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
        for sub in subscriptions:
            sub.close()
        self._dispatcher.shutdown(wait=False)
        self._release()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

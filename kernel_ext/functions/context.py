"""The `ctx` objects handed to function handlers, and `ctx.db`.

- query: `ctx.db` (reader), `ctx.auth`, `ctx.storage` (reader), `ctx.run_query`
- mutation: `ctx.db` (writer), `ctx.auth`, `ctx.storage` (writer), `ctx.scheduler`,
  `ctx.run_query`, `ctx.run_mutation`
- action: `ctx.auth`, `ctx.storage` (all of it), `ctx.scheduler`, `ctx.run_query`,
  `ctx.run_mutation`, `ctx.run_action` (no `db`: actions are not transactional).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from kernel_ext.errors import ValidationError
from kernel_ext.functions.limits import check_deadline
from kernel_ext.functions.storage import (
    ActionStorage,
    MutationStorage,
    QueryStorage,
    StorageService,
)
from kernel_ext.store.ids import decode_id
from kernel_ext.store.query import Query
from kernel_ext.store.transaction import Transaction
from kernel_ext.store.values import Value

if TYPE_CHECKING:
    from kernel_ext.engine.store import Store
    from kernel_ext.functions.scheduling import Scheduler

__all__ = [
    "ActionCtx",
    "Auth",
    "DatabaseReader",
    "DatabaseWriter",
    "MutationCtx",
    "QueryCtx",
    "Runner",
    "USER_SYSTEM_TABLES",
    "identity_from_claims",
]

_OIDC_NAMES = {
    "given_name": "givenName",
    "family_name": "familyName",
    "preferred_username": "preferredUsername",
    "profile": "profileUrl",
    "picture": "pictureUrl",
    "email_verified": "emailVerified",
    "zoneinfo": "timezone",
    "locale": "language",
    "phone_number": "phoneNumber",
    "phone_number_verified": "phoneNumberVerified",
    "updated_at": "updatedAt",
}
_JWT_ONLY = {"sub", "iss", "aud", "exp", "iat", "nbf", "jti"}


def identity_from_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """A user identity from token claims: `subject` = `sub`, `issuer` = `iss`,
    `tokenIdentifier` = `iss|sub`, OIDC claims renamed as Convex does, other claims as they
    are (JWT bookkeeping claims such as `exp` are dropped).

    Raises:
        ValidationError: `sub` or `iss` is missing.
    """
    subject, issuer = claims.get("sub"), claims.get("iss")
    if not isinstance(subject, str) or not isinstance(issuer, str):
        raise ValidationError("An identity needs string claims 'sub' (subject) and 'iss' (issuer)")
    identity: dict[str, Any] = {
        "tokenIdentifier": f"{issuer}|{subject}",
        "subject": subject,
        "issuer": issuer,
    }
    for name, value in claims.items():
        if name not in _JWT_ONLY:
            identity[_OIDC_NAMES.get(name, name)] = value
    return identity


class Auth:
    """`ctx.auth`: who is calling."""

    def __init__(self, identity: dict[str, Any] | None) -> None:
        self._identity = identity

    def get_user_identity(self) -> dict[str, Any] | None:
        """The caller's identity (`tokenIdentifier`, `subject`, `issuer`, claims) or None."""
        return None if self._identity is None else dict(self._identity)


class Runner(Protocol):
    """What the ctx objects call to run other functions (implemented by the backend)."""

    def nested_query(self, txn: Transaction, ref: Any, args: Any, identity: Any) -> Value:
        """Run a query inside `txn` (same snapshot)."""

    def nested_mutation(self, txn: Transaction, ref: Any, args: Any, identity: Any) -> Value:
        """Run a mutation as a sub-transaction of `txn`."""

    def call(self, ref: Any, args: Any, *, kind: str, identity: Any) -> Value:
        """Run a function in its own transaction (from an action)."""

    def scheduler_for(self, txn: Transaction | None) -> Scheduler:
        """`ctx.scheduler` for a mutation's `txn` (None: an action's)."""

    @property
    def storage(self) -> StorageService:
        """The store's files (`ctx.storage`)."""

    @property
    def store(self) -> Store:
        """The store (`ctx.vector_search` reads it)."""


def _split(txn: Transaction, method: str, args: tuple[Any, ...], count: int) -> tuple[Any, ...]:
    """Accept both Convex call forms, `(id, ...)` and `(table, id, ...)`; in the second the id
    must belong to the table."""
    if len(args) == count:
        return args
    if len(args) != count + 1:
        raise TypeError(f"db.{method}() takes {count} argument(s) (or a table name first)")
    table, rest = args[0], args[1:]
    try:
        matches = txn.normalize_id(table, rest[0]) is not None
    except ValidationError:
        matches = False
    if not matches:
        raise ValidationError(
            f"Invalid argument `id` for `db.{method}`: expected to be an Id<{table!r}>, got "
            f"{rest[0]!r}"
        )
    return rest


class _SystemReader:
    """`ctx.db.system`: read access to system tables such as `_scheduled_functions`."""

    def __init__(self, txn: Transaction) -> None:
        self._txn = txn

    def get(self, doc_id: str) -> dict[str, Value] | None:
        """A system document by id (of a table functions may read), or None."""
        check_deadline()
        decoded = decode_id(doc_id)
        table = None if decoded is None else self._txn.catalog.table_by_number(decoded[0])
        if table is not None:
            _readable(table.name)
        return self._txn.get(doc_id, system=True)

    def query(self, table: str) -> Query:
        """Query a system table that functions may read (`USER_SYSTEM_TABLES`)."""
        check_deadline()
        return self._txn.query(_readable(table), system=True)

    def normalize_id(self, table: str, doc_id: str) -> str | None:
        """`doc_id` if it is an id of that system table, else None."""
        check_deadline()
        return self._txn.normalize_id(_readable(table), doc_id, system=True)


#: The system tables `db.system` lets functions read, as Convex does; the store's own
#: bookkeeping (`_mutation_receipts`, `_column_kinds`) stays private.
USER_SYSTEM_TABLES: Final = frozenset({"_scheduled_functions", "_storage"})


def _readable(table: str) -> str:
    if isinstance(table, str) and table.startswith("_") and table not in USER_SYSTEM_TABLES:
        raise ValidationError(
            f"db.system cannot read {table!r}: functions may read "
            f"{', '.join(sorted(USER_SYSTEM_TABLES))}"
        )
    return table


class DatabaseReader:
    """`ctx.db` in a query: `get`, `query`, `normalize_id`, `system`."""

    def __init__(self, txn: Transaction) -> None:
        self._txn = txn

    @functools.cached_property
    def system(self) -> _SystemReader:
        """Read access to system tables (made on first use: few functions need it)."""
        return _SystemReader(self._txn)

    def get(self, *args: Any) -> dict[str, Value] | None:
        """`get(id)` (or `get(table, id)`): the document or None."""
        (doc_id,) = _split(self._txn, "get", args, 1)
        check_deadline()
        return self._txn.get(doc_id)

    def query(self, table: str) -> Query:
        """Start a query over `table`."""
        check_deadline()
        return self._txn.query(table)

    def normalize_id(self, table: str, doc_id: str) -> str | None:
        """`doc_id` if it is an id of `table`, else None."""
        check_deadline()
        return self._txn.normalize_id(table, doc_id)


class DatabaseWriter(DatabaseReader):
    """`ctx.db` in a mutation: the reader plus `insert`, `patch`, `replace`, `delete`."""

    def insert(self, table: str, value: Mapping[str, Any]) -> str:
        """Insert a document; returns its id."""
        check_deadline()
        return self._txn.insert(table, value)

    def patch(self, *args: Any) -> None:
        """`patch(id, fields)`: shallow merge; a field set to `UNDEFINED` is removed."""
        doc_id, value = _split(self._txn, "patch", args, 2)
        check_deadline()
        self._txn.patch(doc_id, value)

    def replace(self, *args: Any) -> None:
        """`replace(id, fields)`: replace every user field."""
        doc_id, value = _split(self._txn, "replace", args, 2)
        check_deadline()
        self._txn.replace(doc_id, value)

    def delete(self, *args: Any) -> None:
        """`delete(id)`."""
        (doc_id,) = _split(self._txn, "delete", args, 1)
        check_deadline()
        self._txn.delete(doc_id)


class QueryCtx:
    """The ctx of a query. Parts other than `db` are made on first use (a ctx is made for
    every function call, and most functions use only `db`)."""

    _database: type[DatabaseReader] = DatabaseReader

    def __init__(self, txn: Transaction, identity: Any, runner: Runner) -> None:
        self._txn, self._identity, self._runner = txn, identity, runner
        self.db = self._database(txn)

    @functools.cached_property
    def auth(self) -> Auth:
        """Who is calling (made on first use)."""
        return Auth(self._identity)

    @functools.cached_property
    def storage(self) -> QueryStorage:
        """`ctx.storage`: `get_url`, `get_metadata` (made on first use)."""
        return QueryStorage(self._runner.storage, self._txn)

    def run_query(self, ref: Any, args: Mapping[str, Any] | None = None) -> Value:
        """Run another query in this transaction (same snapshot)."""
        return self._runner.nested_query(self._txn, ref, args, self._identity)


class MutationCtx(QueryCtx):
    """The ctx of a mutation."""

    _database = DatabaseWriter
    db: DatabaseWriter

    def __init__(self, txn: Transaction, identity: Any, runner: Runner) -> None:
        super().__init__(txn, identity, runner)
        self._scheduler: Scheduler | None = None

    @property
    def scheduler(self) -> Scheduler:
        """Schedule functions; the jobs commit with this mutation."""
        if self._scheduler is None:
            self._scheduler = self._runner.scheduler_for(self._txn)
        return self._scheduler

    @functools.cached_property
    def storage(self) -> MutationStorage:
        """`ctx.storage`: also `generate_upload_url`, `delete` (made on first use)."""
        return MutationStorage(self._runner.storage, self._txn)

    def run_mutation(self, ref: Any, args: Mapping[str, Any] | None = None) -> Value:
        """Run another mutation as a sub-transaction: if it raises, only its writes are
        undone (and the error propagates); if it returns, its writes join this mutation's."""
        return self._runner.nested_mutation(self._txn, ref, args, self._identity)


class ActionCtx:
    """The ctx of an action: no `db`; each `run_*` call is its own transaction."""

    def __init__(self, identity: Any, runner: Runner) -> None:
        self._identity, self._runner = identity, runner
        self.auth = Auth(identity)
        self.scheduler = runner.scheduler_for(None)

    @functools.cached_property
    def storage(self) -> ActionStorage:
        """`ctx.storage`: every storage method (made on first use)."""
        return ActionStorage(self._runner.storage)

    def run_query(self, ref: Any, args: Mapping[str, Any] | None = None) -> Value:
        """Run a query (its own snapshot)."""
        return self._runner.call(ref, args, kind="query", identity=self._identity)

    def run_mutation(self, ref: Any, args: Mapping[str, Any] | None = None) -> Value:
        """Run a mutation (its own transaction)."""
        return self._runner.call(ref, args, kind="mutation", identity=self._identity)

    def run_action(self, ref: Any, args: Mapping[str, Any] | None = None) -> Value:
        """Run another action."""
        return self._runner.call(ref, args, kind="action", identity=self._identity)

    def vector_search(self, table: str, index: str, query: Mapping[str, Any]) -> list[Value]:
        """`[{"_id", "_score"}]` of the documents most similar to `query["vector"]` in
        vector index `index` of `table`, best first (cosine similarity), as of the latest
        commit. `query`: `vector` (of the index's dimensions), `limit` (1..256, default 10),
        `filter` (`lambda q: q.eq(field, value)`, OR-ed with `|` or `q.or_`, on declared
        filter fields). Raises `QueryError` for a bad request (see `store.vector`)."""
        from kernel_ext.store.vector_query import vector_search

        hits, _, _ = self._runner.store.read(lambda txn: vector_search(txn, table, index, query))
        return [{"_id": doc["_id"], "_score": score} for doc, score in hits]

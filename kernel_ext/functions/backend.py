"""The backend: a store plus its functions, live queries and scheduler.

It validates arguments, runs handlers in the right kind of transaction, validates and
normalizes results, and keeps subscriptions live. Clients (embedded now, the sync server later)
call `call()` and `subscribe()`.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, Final

from kernel_ext.engine.store import Store
from kernel_ext.engine.subscriptions import QueryResult, SubscriptionManager, Unsubscribe
from kernel_ext.errors import (
    ArgumentError,
    ConvexError,
    FunctionAborted,
    FunctionTimeout,
    ReturnsError,
    ValidationError,
)
from kernel_ext.functions import limits
from kernel_ext.functions.context import ActionCtx, MutationCtx, QueryCtx
from kernel_ext.functions.cron_service import CronService
from kernel_ext.functions.http_actions import HttpRouter, Request, Response, run_http_action
from kernel_ext.functions.limits import check_deadline, contained, run_armed
from kernel_ext.functions.receipts import MutationReceipts
from kernel_ext.functions.registration import FunctionDefinition, FunctionKind
from kernel_ext.functions.registry import FunctionRegistry, load_folder
from kernel_ext.functions.scheduling import Scheduler, SchedulerService
from kernel_ext.functions.storage import StorageService
from kernel_ext.store.keys import encode_value
from kernel_ext.store.query import LazyResult
from kernel_ext.store.readset import ReadSet
from kernel_ext.store.transaction import Transaction, copy_value
from kernel_ext.store.values import UNDEFINED, Value, normalize
from kernel_ext.store.views import ViewSeed

__all__ = ["Backend", "SubscriptionKey", "call_time_limit"]

#: (function path, encoded args, encoded identity): identical subscriptions share one run.
SubscriptionKey = tuple[str, bytes, bytes]


def _note(exc: BaseException, text: str) -> None:
    if text not in getattr(exc, "__notes__", ()):
        exc.add_note(text)


def _failure(function: FunctionDefinition, error: BaseException) -> BaseException:
    """What the caller of `function` is given for `error`, raised by its handler (or while
    consuming its lazy result): `limits.contained`, with a note naming the function."""
    error = contained(error, f"{function.kind} {function.path}")
    # The library's own verdicts on the call name the function already.
    if isinstance(error, Exception) and not isinstance(
        error, ConvexError | FunctionTimeout | FunctionAborted
    ):
        _note(error, f"raised by {function.kind} {function.path}")
    return error


class Backend:
    """A store with its functions. Thread-safe; close it with `close()`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = FunctionRegistry()
        # A query's family is its function (`SubscriptionKey`): new arguments to a function
        # that was slow lately start in the slow lane.
        self.subscriptions = SubscriptionManager(store, family=_function_of)
        self.scheduler = SchedulerService(self)
        self.crons = CronService(self)
        self.receipts = MutationReceipts(store)
        #: The store's files (`ctx.storage`, the storage HTTP routes).
        self.storage = StorageService(store)
        #: The routes of the functions folder's `http.py` (None: no HTTP actions).
        self.http_router: HttpRouter | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    def close(self) -> None:
        """Stop the scheduler and live queries, then close the store; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.crons.close()
        self.scheduler.close()
        self.storage.close()
        self.subscriptions.close()
        self.store.close()

    # -- functions -----------------------------------------------------------------------

    def load_functions(self, folder: str | Path) -> list[str]:
        """Load a functions folder: install its schema, register its functions (replacing
        those of the same paths), re-run live queries and, if it has a `crons.py`, make its
        crons the store's (`CronService.define`). Returns the paths registered."""
        loaded = load_folder(folder)
        crons = None  # checked before anything changes; without crons.py they stay
        if loaded.crons is not None:
            crons = self.crons.resolve(loaded.crons, loaded.functions)
        if loaded.schema is not None:
            self.store.set_schema(loaded.schema)
        if loaded.http is not None:  # a folder without http.py keeps the routes there are
            self.http_router = loaded.http

        def register_all() -> None:
            for path, function in loaded.functions.items():
                self.registry.register(path, function)

        # A commit of its own: reads as of an earlier ts must not run the new code.
        self.store.record_change(register_all)
        self.subscriptions.rerun(lambda key: True)
        self.scheduler.functions_changed()
        if crons is not None:
            self.crons.define(crons)
        self.crons.wake()
        return sorted(loaded.functions)

    def register(self, path: str, function: FunctionDefinition) -> str:
        """Register one function and re-run the live queries of that path."""
        # A commit of its own: reads as of an earlier ts must not run the new code.
        canonical = self.store.record_change(lambda: self.registry.register(path, function))
        self.subscriptions.rerun(lambda key: isinstance(key, tuple) and key[0] == canonical)
        self.scheduler.functions_changed()
        self.crons.wake()
        return canonical

    def describe_functions(self) -> list[dict[str, Any]]:
        """`[{path, kind, visibility, args, live}]` of the registered functions (see
        `describe_function`), then the crons (`CronService.describe`: kind "cron")."""
        modes = self._live_modes()
        described = (self.describe_function(path, modes) for path in self.registry.paths())
        return [info for info in described if info is not None] + self.crons.describe()

    def describe_function(
        self, path: str, modes: dict[str, set[bool]] | None = None
    ) -> dict[str, Any] | None:
        """`{path, kind, visibility, args, live}` of the function at (canonical) `path`, or
        None. `args`: validator JSON or None. `live`: how its live subscriptions are kept
        up to date: "incremental" (it returns its query or aggregate: a maintained view),
        "re-run" (re-run on each relevant commit), "mixed", or None (none is live)."""
        fn = self.registry.get(path)
        if fn is None:
            return None
        args = None if fn.args is None else fn.args.to_json()
        incremental = (self._live_modes() if modes is None else modes).get(path, set())
        live = {frozenset({True}): "incremental", frozenset({False}): "re-run"}.get(
            frozenset(incremental), "mixed" if incremental else None
        )
        return {
            "path": path,
            "kind": fn.kind,
            "visibility": fn.visibility,
            "args": args,
            "live": live,
        }

    def _live_modes(self) -> dict[str, set[bool]]:
        """Per function path: whether each of its live queries is a maintained view."""
        modes: dict[str, set[bool]] = {}
        for key, incremental in self.subscriptions.modes().items():
            modes.setdefault(str(_function_of(key)), set()).add(incremental)
        return modes

    def describe_tables(self) -> list[dict[str, Any]]:
        """`[{table, indexes, searchIndexes, vectorIndexes}]` of the user tables (system tables
        start with `_`): index names of each kind, sorted."""
        return [
            {
                "table": t.name,
                "indexes": sorted(t.indexes),
                **{
                    f"{kind}Indexes": sorted(
                        name for name, i in t.search_indexes.items() if i.kind == kind
                    )
                    for kind in ("search", "vector")
                },
            }
            for t in self.store.catalog.tables()
            if not t.name.startswith("_")
        ]

    def prepare_args(self, function: FunctionDefinition, args: Any) -> dict[str, Value]:
        """Normalized, validated arguments.

        Raises:
            ArgumentError: not an object, or not matching the function's validator.
        """
        if args is None:
            args = {}
        if type(args) is not dict and not isinstance(args, Mapping):
            raise ArgumentError(
                f"The arguments to a Convex function must be an object (a dict), got {args!r}"
            )
        try:
            values = normalize(args)
            if function.args is not None:
                values = function.args.check(values, "", self.store.catalog.table_name)
        except ValidationError as exc:
            raise ArgumentError(f"ArgumentValidationError for {function.path}: {exc}") from exc
        assert isinstance(values, dict)
        return values

    def invoke(
        self,
        function: FunctionDefinition,
        args: Any,
        txn: Transaction | None,
        identity: Any,
        *,
        prepared: bool = False,
        view: bool = False,
    ) -> Value | ViewSeed:
        """Validate `args` (unless `prepared`: they came from `prepare_args` for this very
        function), run the handler (in `txn` for queries and mutations), check and normalize
        its result. With `view` (a live subscription's run), a query whose handler returns a
        maintainable lazy result (`LazyResult.open_view`) gives a `ViewSeed` instead of the
        value (only without `returns=`, whose check would need the whole value per change).
        Exceptions from the handler propagate with a note naming the function; a
        `ConvexError` propagates as it is; any other `BaseException` becomes `FunctionAborted`
        (`limits.contained`: a `KeyboardInterrupt` on the main thread propagates).

        Raises:
            FunctionTimeout: the call's time limit (`time_limit`) ran out.
        """
        # Prepared arguments are copied all the same: a handler may change what it is given.
        values = copy_value(args) if prepared else self.prepare_args(function, args)
        ctx: QueryCtx | ActionCtx
        if function.kind == "action":
            ctx = ActionCtx(identity, self)
        else:
            assert txn is not None
            saved, txn.paginated = txn.paginated, False  # one paginate() per execution
            ctx = (
                MutationCtx(txn, identity, self)
                if function.kind == "mutation"
                else QueryCtx(txn, identity, self)
            )
        try:
            check_deadline()  # a retried mutation whose time is up does not start again
            result, error = run_armed(lambda: function.handler(ctx, **values))
        finally:
            if txn is not None and function.kind != "action":
                txn.paginated = saved
        if error is not None:
            raise _failure(function, error)
        if view and txn is not None and function.returns is None:
            seed = self._view_seed(function, result, txn)
            if seed is not None:
                return seed
        return self._result(function, result)

    def _view_seed(
        self, function: FunctionDefinition, result: Any, txn: Transaction
    ) -> ViewSeed | None:
        """The maintained view of a returned lazy result (None: it has none), built in the
        function's transaction; the reads before it are its prelude."""
        if not isinstance(result, LazyResult):
            return None
        prelude = ReadSet()
        prelude.merge(copy.deepcopy(txn.read_set))
        # Not under the function's time limit: the scan that builds the view is the
        # engine's work (an index range and filter expressions, no user code), done once
        # per subscription, and on a large table it may take longer than a query may run.
        error: Exception | None = None
        try:
            built = result.open_view()
        except Exception as exc:
            built, error = None, exc
        if error is not None:
            raise _failure(function, error)
        return None if built is None else ViewSeed(built, prelude)

    def _result(self, function: FunctionDefinition, result: Any) -> Value:
        """The function's value: `result` normalized and checked against `returns=`.

        A returned `LazyResult` (a query, an aggregate) is consumed here, still inside the
        function's transaction and under its time limit, so the documents it reads are in the
        read set and the caller gets the consumed value (a query: its `collect()` list). This
        holds for mutations and actions too: Convex refuses a returned query there, but
        consuming is friendlier, and for a mutation it happens before the commit, so its reads
        count for conflicts like any other read of the mutation.
        """
        if isinstance(result, LazyResult):
            result, error = run_armed(result.consume)
            if error is not None:
                raise _failure(function, error)
        value = None if result is UNDEFINED else normalize(result, limits=False)
        if function.returns is not None:
            try:
                value = function.returns.check(value, "", self.store.catalog.table_name)
            except ValidationError as exc:
                raise ReturnsError(f"ReturnsValidationError for {function.path}: {exc}") from exc
        return value

    def run_http(self, request: Request, identity: Any) -> Response:
        """Answer an HTTP request with the routed HTTP action (`http_actions.run_http_action`:
        404 without a route, 500 when the handler fails); blocks while it runs."""
        return run_http_action(self.http_router, request, identity, self)

    # Runner protocol (for ctx.run_* and ctx.scheduler) -------------------------------

    def scheduler_for(self, txn: Transaction | None) -> Scheduler:
        """`ctx.scheduler` of a mutation running in `txn` (None: of an action)."""
        return Scheduler(self, txn)

    def nested_query(self, txn: Transaction, ref: Any, args: Any, identity: Any) -> Value:
        """Run a query inside `txn`."""
        function = self.registry.lookup(ref, "query", public_only=False)
        return self.invoke(function, args, txn, identity)

    def nested_mutation(self, txn: Transaction, ref: Any, args: Any, identity: Any) -> Value:
        """Run a mutation as a sub-transaction of `txn`."""
        function = self.registry.lookup(ref, "mutation", public_only=False)
        txn.begin_nested()
        try:
            result = self.invoke(function, args, txn, identity)
        except BaseException:
            txn.rollback_nested()
            raise
        txn.commit_nested()
        return result

    def call(
        self, ref: Any, args: Any, *, kind: str, identity: Any, public_only: bool = False
    ) -> Value:
        """Run a function in its own transaction and return its result."""
        return self.call_with_ts(ref, args, kind=kind, identity=identity, public_only=public_only)[
            0
        ]

    def call_with_ts(
        self,
        ref: Any,
        args: Any,
        *,
        kind: str | None,
        identity: Any,
        public_only: bool,
        time_limit: float | None = None,
        receipt: str | None = None,
    ) -> tuple[Value, int | None]:
        """Like `call`, also returning the commit ts of a mutation (else the read ts / None).

        Args:
            time_limit: seconds a query or mutation may run (all its retries together);
                None: no limit. Actions have none.
            receipt: for a mutation, its receipt key (`receipts.receipt_key`): if a mutation
                with that key committed, its recorded result is returned and nothing runs.

        Raises:
            FunctionTimeout: it ran out of time (a mutation committed nothing).
        """
        function = self.registry.lookup(ref, _kind(kind), public_only=public_only)
        with call_time_limit(function, None if function.kind == "action" else time_limit):
            return self._call(function, args, identity, receipt)

    def _call(
        self, function: FunctionDefinition, args: Any, identity: Any, receipt: str | None = None
    ) -> tuple[Value, int | None]:
        if function.kind == "query":
            value, _, ts = self.store.read(lambda txn: self.invoke(function, args, txn, identity))
            return value, ts
        if function.kind == "mutation" and receipt is not None:
            return self.receipts.mutate(
                receipt, lambda txn: self.invoke(function, args, txn, identity)
            )
        if function.kind == "mutation":
            return self.store.mutate(lambda txn: self.invoke(function, args, txn, identity))
        return self.invoke(function, args, None, identity), None

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(
        self,
        ref: Any,
        args: Any,
        identity: Any,
        on_update: Callable[[QueryResult], None],
        *,
        public_only: bool = True,
        time_limit: float | None = None,
    ) -> Unsubscribe:
        """Subscribe to a query; `on_update(result)` gets the current result and each change
        (on a worker thread). Returns the unsubscribe function (its `key` names the live
        query, for `subscriptions.call_when_processed`). Each execution has
        `time_limit` seconds (None: no limit); one that runs out fails with `FunctionTimeout`.

        Raises:
            UnknownFunction, WrongFunctionKind, ArgumentError: before subscribing.
        """
        function = self.registry.lookup(ref, "query", public_only=public_only)
        path = function.path
        assert path is not None
        values = self.prepare_args(function, args)
        key: Hashable = (path, encode_value(values), encode_value(identity or {}))

        def run(txn: Transaction) -> Value:
            # Every re-run looks the function up (it may have been redefined); the arguments
            # were validated for this definition already (a redefined one checks them again).
            current = self.registry.lookup(path, "query", public_only=False)
            with call_time_limit(current, time_limit):
                return self.invoke(
                    current, values, txn, identity, prepared=current is function, view=True
                )

        return self.subscriptions.subscribe(key, run, on_update)


def _function_of(key: Hashable) -> Hashable:
    """The function path of a `SubscriptionKey`."""
    return key[0] if isinstance(key, tuple) else key


def call_time_limit(function: FunctionDefinition, seconds: float | None) -> Any:
    """The time limit of one call of `function` (see `limits.time_limit`); without a limit
    (an embedded store) a shared no-op context, on the path of every live query re-run."""
    if seconds is None:
        return _NO_LIMIT
    return limits.time_limit(f"{function.kind} {function.path}", seconds)


_NO_LIMIT: Final = contextlib.nullcontext()


def _kind(kind: str | None) -> FunctionKind | None:
    if kind not in (None, "query", "mutation", "action"):
        raise ValueError(f"unknown function kind {kind!r}")
    return kind  # type: ignore[return-value]

"""LiveTable: an anywidget that shows a subscription's result and changes in place.

Python keeps every row and the `TableModel`; the browser holds only the rows of its window
(plus a margin) and receives, on each change, the changed rows of that window and the new row
count, as a binary buffer. Updates are coalesced (at most ~30 messages a second). Sorting runs
in the kernel on all rows; the selection is kept by row id.

Over a maintained view (a query function that returns its query or aggregate) the table
applies each result's `diff` instead of taking the whole value: the rows stay the view's
immutable snapshot, and a one-row change costs O(log n) in the kernel, sorted or not
("live · incremental" in the header); other queries replace the rows ("live · re-run").
Columns are shown by what the store declares (`client.column_info`): ids, int64/float64
numbers, and the datetime columns `import_dataframe` recorded.

`set_args` points the table at the same function with other arguments without a flash of
emptiness (as convex-helpers' `useStableQuery`): the current rows stay until the new
arguments' first result arrives, which then reaches the browser as an ordinary row diff.
Every source of results (a subscription, or the pages of a paginated query) carries a
generation number: results of a source that is neither the one shown nor the one awaited
are ignored, so a late result of the previous arguments never shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anywidget
import orjson
import traitlets

from kernel_ext import CallbackHandle, QueryResult, Subscription, compare_values
from kernel_ext.errors import StoreError
from widgets.paging import PagedQuery
from widgets.table_model import TableModel, declared_kinds

__all__ = ["LiveTable"]

_STATIC: Final = Path(__file__).parent / "static"
_MIN_INTERVAL: Final = 1 / 30


@dataclass
class _Source:
    """Where a table's results come from: one subscription, or the pages of a paginated
    query (`paged`), for one set of arguments."""

    generation: int
    args: dict[str, Any]
    subscription: Subscription | None = None
    paged: PagedQuery | None = None
    handle: CallbackHandle | None = None
    owned: bool = True  # False: the caller's subscription, which the caller closes

    def retire(self) -> None:
        """Stop delivering results; close what the table opened. Idempotent."""
        if self.handle is not None:
            self.handle.remove()
        if self.owned and self.subscription is not None:
            self.subscription.close()
        if self.paged is not None:
            self.paged.close()


class LiveTable(anywidget.AnyWidget):
    """A live table of a query's result.

    `LiveTable(sub)` shows a `Subscription`; `LiveTable(client, ref, args)` subscribes first
    (and closes that subscription with the widget), and `table.set_args(args)` changes its
    arguments in place. `table.selection` holds the ids of the selected rows; `table.sort` is
    `[column, "asc" | "desc"]` or `[]`.
    """

    _esm = _STATIC / "live_table.js"
    _css = _STATIC / "live_table.css"

    columns = traitlets.List(traitlets.Unicode()).tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)
    status = traitlets.Unicode("loading").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    sort: traitlets.List[Any] = traitlets.List().tag(sync=True)
    selection = traitlets.List(traitlets.Unicode()).tag(sync=True)
    show_system = traitlets.Bool(False).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    row_height = traitlets.Int(28).tag(sync=True)
    complete = traitlets.Bool(True).tag(sync=True)  # False while a paginated query has more
    sortable = traitlets.Bool(True).tag(sync=True)
    height = traitlets.Int(360).tag(sync=True)
    #: "incremental" (a maintained view's row changes), "re-run" (whole results), or "".
    mode = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        source: Any,
        ref: Any = None,
        args: dict[str, Any] | None = None,
        *,
        show_system: bool = False,
        title: str | Callable[[dict[str, Any]], str] | None = None,
        client: Any = None,
        **kwargs: Any,
    ) -> None:
        """`client`: where to read the columns' declared types when `source` is a
        `Subscription` (with `LiveTable(client, ref, args)` it is `source`). `title`: the
        caption, or a function of the arguments giving it (called again when `set_args`
        shows other arguments); default: the function's path."""
        paged = not isinstance(source, Subscription) and _is_paginated(source, ref)
        if isinstance(source, Subscription):
            subscription, self._owns = source, False
        elif paged:
            subscription, self._owns = None, True
        else:
            subscription, self._owns = source.subscribe(ref, args or {}), True
        self._ref = ref
        self._is_paged = paged
        self._title_of = title if callable(title) else None
        if callable(title):  # e.g. the magic's `path(k=v)`, which follows set_args
            title = title(dict(args or {}))
        elif title is None:
            title = subscription.description if subscription is not None else str(_path(ref))
        super().__init__(
            show_system=show_system, title=title, sortable=not paged, complete=not paged, **kwargs
        )
        self.subscription = subscription
        self.model = TableModel(show_system=show_system)
        self._client = client if isinstance(source, Subscription) else source
        self._last_ts: int | None = None  # the result the model holds (a diff must start there)
        self._described = False  # column kinds read from the store (once, at the first rows)
        self._lock = threading.Lock()
        self._dirty = False
        self._full = True
        self._reason = "view"  # "data" when the pending patch carries a new result (flash it)
        self._state = "loading"  # what the last result says: loading, ready or error
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None
        self.on_msg(self._on_front_end_message)
        self._paged: PagedQuery | None = None  # the shown source's pages (paginated queries)
        self._generation = 0
        self._pending: _Source | None = None  # set_args' source, until its first result
        with self._lock:  # (its callbacks wait until `_shown` is set)
            self._shown = self._open(dict(args or {}), subscription)
            self._paged = self._shown.paged
        self._status_handle: CallbackHandle | None = None
        on_status = getattr(source, "on_status", None)  # remote clients report reconnects
        if callable(on_status):
            self._status_handle = on_status(self._on_connection_status)

    # -- arguments -----------------------------------------------------------------------

    @property
    def args(self) -> dict[str, Any]:
        """The query's current arguments (a copy): the latest `set_args` ones, even while
        the table still shows the previous arguments' rows (until their first result)."""
        with self._lock:
            source = self._pending or self._shown
            return dict(source.args)

    def set_args(self, args: dict[str, Any]) -> None:
        """Show the same query with other arguments, in place.

        The current rows stay until the new arguments' first result arrives; then the table
        changes like on any new result (same widget, the user's sort kept, unchanged rows
        kept in place) and the previous subscription is closed. `subscription` is the new one
        at once (its `value` waits for that first result). Arguments equal to the current
        ones (as Convex values) change nothing. A paginated query starts again from its first
        page.

        Raises:
            StoreError: the table shows a `Subscription` it was given (build it with
                `LiveTable(client, ref, args)` to change arguments), or it is closed.
            ArgumentError: the arguments do not match the function's validator (nothing
                changed).
        """
        args = dict(args)
        with self._lock:
            if not self._owns:
                raise StoreError(
                    "set_args needs a LiveTable that owns its subscription: this one shows a "
                    "Subscription it was given. Build it with LiveTable(client, ref, args) "
                    "to change its arguments."
                )
            if self._shown.generation < 0:
                raise StoreError("This LiveTable is closed: build a new one to show a query.")
            if _same_args(args, (self._pending or self._shown).args):
                return
            stale = self._pending
            if _same_args(args, self._shown.args):  # back to what is shown: stop waiting
                self._pending = None
                self.subscription = self._shown.subscription
            else:
                self._pending = self._open(args)
                self.subscription = self._pending.subscription
        if stale is not None:
            stale.retire()

    def _open(self, args: dict[str, Any], given: Subscription | None = None) -> _Source:
        """Start a source of results for `args` under a new generation (call with the lock
        held: its first result may arrive at once and looks for it in `_shown`/`_pending`).
        `given`: the caller's (or the constructor's) subscription to follow instead."""
        generation = self._generation = self._generation + 1
        source = _Source(generation, args, owned=self._owns)
        if self._is_paged:
            client, ref = self._client, self._ref
            source.paged = PagedQuery(
                lambda page_args: client.subscribe(ref, page_args),
                args,
                lambda rows, done, error: self._on_pages_of(generation, rows, done, error),
            )
            return source
        if given is None:
            given = self._client.subscribe(self._ref, args)
        source.subscription = given
        source.handle = given.on_result(lambda result: self._on_result_of(generation, result))
        return source

    def _admit(self, generation: int) -> tuple[bool, _Source | None]:
        """Whether a result of `generation` is to be shown (call with the lock held), and
        the source it replaces: the awaited source's first result makes it the shown one."""
        if generation == self._shown.generation:
            return True, None
        pending = self._pending
        if pending is None or generation != pending.generation:
            return False, None  # a retired source's late result
        retired, self._shown, self._pending = self._shown, pending, None
        if self._title_of is not None:
            self.title = self._title_of(pending.args)
        self._paged = pending.paged
        self._last_ts = None  # another live query: its diffs never start from the old rows
        self._described = False  # (the new rows may come from another table)
        return True, retired

    # -- results from the store ----------------------------------------------------------

    def _on_result_of(self, generation: int, result: QueryResult) -> None:
        with self._lock:
            shown, retired = self._admit(generation)
            if shown:
                self._show_result(result)
        if retired is not None:
            retired.retire()
        if shown:
            self._schedule()

    def _on_result(self, result: QueryResult) -> None:
        with self._lock:
            self._show_result(result)
        self._schedule()

    def _show_result(self, result: QueryResult) -> None:
        """Take a result of the shown source into the model (call with the lock held)."""
        if result.error is not None:
            # Keep the last rows visible under the error, as Convex clients keep stale data.
            self._state = "error"
            self.status, self.error = "error", f"{type(result.error).__name__}: {result.error}"
            return
        diff = result.diff
        if diff is not None and diff.base_ts is not None and diff.base_ts == self._last_ts:
            self.model.apply_diff(result.value, diff)
        else:
            self.model.set_rows(result.value)
            self._describe_columns()
        self._last_ts = result.ts
        # A maintained view's value is an immutable snapshot (served ones too), and only
        # views have diffs.
        self.mode = "incremental" if diff is not None or _is_snapshot(result.value) else "re-run"
        self._state = "ready"
        self.error = ""
        self._dirty = True
        self._reason = "data"

    def _describe_columns(self) -> None:
        """Read the declared column kinds of the rows' table, once (call with the lock)."""
        if self._described or not len(self.model.rows):
            return
        self._described = True
        first = self.model.rows[0]
        column_info = getattr(self._client, "column_info", None)
        if not isinstance(first, dict) or not isinstance(first.get("_id"), str):
            return
        info: dict[str, Any] = {}
        if callable(column_info):
            try:
                info = column_info(first["_id"]) or {}
            except Exception:  # a remote client without the admin key: values' own types
                info = {}
        self.model.column_kinds = declared_kinds(info)

    def _on_connection_status(self, status: str) -> None:
        """Show "reconnecting" (keeping the last rows) until the connection is back."""
        with self._lock:
            self.status = "reconnecting" if status == "reconnecting" else self._state

    def _on_pages_of(
        self, generation: int, rows: list[Any], done: bool, error: BaseException | None
    ) -> None:
        with self._lock:
            shown, retired = self._admit(generation)
        if retired is not None:
            retired.retire()
        if shown:
            self._on_pages(rows, done, error)

    def _on_pages(self, rows: list[Any], done: bool, error: BaseException | None) -> None:
        if error is not None:
            self._on_result(QueryResult(None, error, 0))
            return
        with self._lock:
            self.model.set_rows(rows)
            self._state = "ready"
            self.error = ""
            self.complete = done
            self._dirty = True
            self._reason = "data"
            wanted = self.model.offset + 2 * self.model.limit
        if self._paged is not None:  # the window may still reach past the loaded rows
            self._paged.ensure(wanted)
        self._schedule()

    def _schedule(self) -> None:
        with self._lock:
            if self._timer is not None:
                return  # a flush is already pending: it will carry this change too
            wait = max(0.0, self._last_flush + _MIN_INTERVAL - time.monotonic())
            if wait == 0.0:
                inline = True  # no flush in the last 1/30 s: send now, no timer thread
            else:
                inline = False
                self._timer = threading.Timer(wait, self._flush)
                self._timer.daemon = True
                self._timer.start()
        if inline:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            if not self._dirty:
                return
            self._dirty = False
            patch = self.model.window_patch(full=self._full)
            self._full = False
            self._last_flush = time.monotonic()
            message = {**patch.to_message(), "reason": self._reason}
            self._reason = "view"
            with self.hold_sync():
                self.columns = list(self.model.columns)
                self.total = patch.total
                self.status = self._state
        self.send({"type": "rows"}, buffers=[orjson.dumps(message)])

    # -- messages from the browser -------------------------------------------------------

    def _on_front_end_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        kind = content.get("type")
        with self._lock:
            if kind == "window":
                self.model.set_window(int(content.get("offset", 0)), int(content.get("limit", 100)))
                if self._paged is not None:  # load the next page before the user reaches it
                    self._paged.ensure(self.model.offset + 2 * self.model.limit)
            elif kind == "sort" and self.sortable:
                self.model.toggle_sort(str(content["column"]))
                column, desc = self.model.sort_column, self.model.sort_descending
                self.sort = [] if column is None else [column, "desc" if desc else "asc"]
            elif kind == "select":
                self.selection = [str(k) for k in content.get("keys", [])]
                return
            elif kind == "ready":
                self._full = True
            else:
                return
            self._dirty = True
        self._schedule()

    # -- display -------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            with self._lock:
                data["text/html"] = self.model.snapshot_html(complete=self.complete)
        return bundle

    def close(self) -> None:
        """Stop following the query (and close the subscriptions the table opened)."""
        if self._status_handle is not None:
            self._status_handle.remove()
        with self._lock:
            sources = [s for s in (self._shown, self._pending) if s is not None]
            self._pending = None
            self._shown = _Source(-1, self._shown.args)  # closed: results and set_args refused
        for source in sources:
            source.retire()
        super().close()


def _same_args(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal as Convex values (1 and 1.0 differ); not comparable (not Convex values yet,
    e.g. a tuple): different, and the subscription validates them."""
    try:
        return compare_values(a, b) == 0
    except StoreError:
        return False


def _is_snapshot(value: Any) -> bool:
    """A maintained view's value: an immutable row sequence (not a list)."""
    return hasattr(value, "position_of") and not isinstance(value, list)


def _path(ref: Any) -> str:
    from kernel_ext import path_of

    return path_of(ref)


def _is_paginated(client: Any, ref: Any) -> bool:
    """True if the query declares a `paginationOpts` argument (`kernel_ext.ConvexClient`)."""
    try:
        info = client.function_info(_path(ref))
    except Exception:  # a remote client without the admin key: show it unpaged
        return False
    fields = ((info or {}).get("args") or {}).get("value") or {}
    return "paginationOpts" in fields

"""Live pagination: a paginated query as a list of pages, each its own subscription.

A query that takes `paginationOpts` is read page by page. Page `i` starts at the cursor where
page `i - 1` ended. Once a page has answered, it is re-subscribed with `endCursor` set to the
position where it ended, so its boundaries stay put while documents come and go (it may grow
or shrink). More pages load only when the table needs more rows, so a table over millions of
documents re-runs just the pages that a commit touches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from kernel_ext import CallbackHandle, QueryResult, Subscription

__all__ = ["PAGE_SIZE", "PagedQuery"]

PAGE_SIZE: Final = 200


@dataclass
class _Page:
    cursor: str | None
    subscription: Subscription
    handle: CallbackHandle
    result: dict[str, Any] | None = None
    pinned: bool = False


class PagedQuery:
    """The pages of a paginated query, concatenated.

    Args:
        subscribe: `subscribe(args) -> Subscription` for the query with those arguments.
        args: the query's other arguments.
        on_change: called with `(rows, done, error)` whenever a page changes.
        page_size: `numItems` of each page.
    """

    def __init__(
        self,
        subscribe: Callable[[dict[str, Any]], Subscription],
        args: dict[str, Any],
        on_change: Callable[[list[Any], bool, BaseException | None], None],
        *,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._subscribe = subscribe
        self._args = dict(args)
        self._on_change = on_change
        self._page_size = page_size
        self._pages: list[_Page] = []
        self._lock = threading.RLock()
        self._closed = False
        self._add_page(None)

    # -- pages ---------------------------------------------------------------------------

    def _options(self, cursor: str | None, end: str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"numItems": self._page_size, "cursor": cursor}
        if end is not None:
            options["endCursor"] = end
        return {**self._args, "paginationOpts": options}

    def _add_page(self, cursor: str | None) -> None:
        subscription = self._subscribe(self._options(cursor))
        page = _Page(cursor, subscription, CallbackHandle(lambda: None))
        self._pages.append(page)
        page.handle = subscription.on_result(lambda result: self._on_result(page, result))

    def _on_result(self, page: _Page, result: QueryResult) -> None:
        with self._lock:
            if self._closed or page not in self._pages:
                return
            if result.error is None and isinstance(result.value, dict):
                page.result = result.value
                if not page.pinned and not result.value.get("isDone"):
                    self._pin(page, str(result.value["continueCursor"]))
            rows, done, error = self._rows(result.error)
        self._on_change(rows, done, error)

    def _pin(self, page: _Page, end: str) -> None:
        """Re-subscribe a page with its end fixed where its first answer ended."""
        page.pinned = True
        old, old_handle = page.subscription, page.handle
        page.subscription = self._subscribe(self._options(page.cursor, end))
        page.handle = page.subscription.on_result(lambda result: self._on_result(page, result))
        old_handle.remove()
        old.close()

    def _rows(self, error: BaseException | None) -> tuple[list[Any], bool, BaseException | None]:
        rows: list[Any] = []
        done = False
        for page in self._pages:
            if page.result is None:
                break
            rows.extend(page.result.get("page", []))
            done = bool(page.result.get("isDone"))
        return rows, done, error

    def ensure(self, wanted_rows: int) -> None:
        """Load another page if no more than `wanted_rows` rows are loaded and more may exist."""
        with self._lock:
            if self._closed:
                return
            last = self._pages[-1]
            if last.result is None or last.result.get("isDone"):
                return
            loaded = sum(len(p.result["page"]) for p in self._pages if p.result is not None)
            if loaded <= wanted_rows:  # at the end of what is loaded: see if there is more
                self._add_page(str(last.result["continueCursor"]))

    @property
    def page_count(self) -> int:
        """How many pages are subscribed."""
        return len(self._pages)

    def close(self) -> None:
        """Close every page's subscription; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pages, self._pages = self._pages, []
        for page in pages:
            page.handle.remove()
            page.subscription.close()

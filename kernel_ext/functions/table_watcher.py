"""A background thread that makes passes over one system table, woken by its commits.

The scheduler (`_scheduled_functions`) and the crons (`_cron_jobs`) both work this way: a
pass reads the table, acts on what is due and says how long until the next thing is; the
thread sleeps that long, or until a commit writes to the table or `wake()` is called. A pass
that fails (the store is unreachable, or a bug) is logged and tried again a second later, so
one failure never ends the thread.
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import Final

from kernel_ext.engine.store import Commit, Store

__all__ = ["TableWatcher"]

_log = logging.getLogger(__name__)
_RETRY_S: Final = 1.0


class TableWatcher(abc.ABC):
    """Runs `_pass()` on a thread of its own, again after each commit that writes `table`.

    A subclass sets up its own state first, then calls `_watch(...)` (last: the thread may
    run a pass at once), and implements `_pass`.
    """

    _wake: threading.Event
    _closed: bool
    _thread: threading.Thread

    def _watch(self, store: Store, table: str, thread_name: str, failure: str) -> None:
        """Start: listen for commits to `table` and run passes on a thread `thread_name`;
        a failed pass is logged as `failure`."""
        self._wake = threading.Event()
        self._closed = False
        self._table = table
        self._failure = failure
        store.add_listener(self._on_commit)
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self._thread.start()

    @abc.abstractmethod
    def _pass(self) -> float:
        """Act on the table once; the seconds until the next pass is due."""

    def wake(self) -> None:
        """Run a pass now (something changed that the table's commits do not show)."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (a pass under way finishes first); idempotent."""
        self._closed = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _on_commit(self, commit: Commit) -> None:
        for write in commit.writes.values():  # a loop, not any(): this runs on every commit
            if write.table == self._table:
                self._wake.set()
                return

    def _loop(self) -> None:
        while not self._closed:
            self._wake.clear()
            try:
                wait = self._pass()
            except Exception:  # a bug or a storage failure: say so, keep going
                if self._closed:
                    return
                _log.exception("%s; retrying in %s s", self._failure, _RETRY_S)
                wait = _RETRY_S
            self._wake.wait(wait)

"""Scheduled functions: `ctx.scheduler` and the service that runs due jobs.

Jobs are documents of the system table `_scheduled_functions` (`name`, `args: [args]`,
`scheduledTime`, `completedTime`, `state: {"kind": ...}`). From a mutation, scheduling is part
of its transaction (rolled back with it, run only after it commits). Scheduled mutations run
exactly once: the job is marked `success` in the same transaction as the mutation's writes.
Actions run at most once: marked `inProgress` first; one interrupted by a restart is marked
`failed` (on a store shared by several processes, PostgreSQL, it stays `inProgress`: another
process may be running it). Jobs are durable, so pending ones run after a restart; a job
whose function is not registered (yet: after a restart, functions are registered when the
user loads them) stays pending until it is, and is passed over meanwhile: jobs due after it
still run. On a shared store every process runs due jobs whose function it has registered;
the mutation that marks a job claimed is serialized with every other process's, so each
job runs in one process only.

Contention slows a scheduled mutation, never fails it, as in Convex: the store guarantees
the commit (`Store.mutate`). One whose handler fails, or raises any `BaseException`
(`SystemExit`, ...), runs once and is marked `failed` with the error.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from kernel_ext.engine.store import SCHEDULED_FUNCTIONS
from kernel_ext.errors import (
    ConvexError,
    ValidationError,
)
from kernel_ext.functions.limits import contained
from kernel_ext.functions.registry import path_of
from kernel_ext.functions.table_watcher import TableWatcher
from kernel_ext.store.transaction import Transaction
from kernel_ext.store.values import Value, normalize

if TYPE_CHECKING:
    from kernel_ext.functions.backend import Backend

__all__ = ["Scheduler", "SchedulerService"]

_log = logging.getLogger(__name__)
_BATCH: Final = 64
_IDLE_WAIT: Final = 3600.0


def _now_ms() -> float:
    return time.time() * 1000.0


class Scheduler:
    """`ctx.scheduler`: schedule functions to run later.

    Args:
        backend: runs transactions for actions (which schedule immediately).
        txn: the mutation's transaction (jobs commit with it), or None in an action.
    """

    def __init__(self, backend: Backend, txn: Transaction | None) -> None:
        self._backend = backend
        self._txn = txn

    def run_after(self, delay_ms: float, ref: Any, args: Mapping[str, Any] | None = None) -> str:
        """Run `ref(args)` after `delay_ms` milliseconds; returns the job id."""
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, int | float):
            raise ValidationError(
                f"run_after(delay_ms, ...): delay must be a number, got {delay_ms!r}"
            )
        if not math.isfinite(delay_ms) or delay_ms < 0:
            raise ValidationError(
                f"run_after(): delay must be a finite number >= 0, got {delay_ms}"
            )
        return self.run_at(_now_ms() + delay_ms, ref, args)

    def run_at(
        self, when: float | dt.datetime, ref: Any, args: Mapping[str, Any] | None = None
    ) -> str:
        """Run `ref(args)` at `when` (ms since epoch, or a datetime); returns the job id."""
        if isinstance(when, dt.datetime):
            when = when.timestamp() * 1000.0
        if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
            raise ValidationError(
                f"run_at(): time must be ms since epoch or a datetime, got {when!r}"
            )
        path = path_of(ref)
        self._backend.registry.lookup(path, None, public_only=False)
        job = {
            "name": path,
            "args": [normalize(args or {})],
            "scheduledTime": float(when),
            "state": {"kind": "pending"},
        }
        return str(self._write(lambda txn: txn.insert(SCHEDULED_FUNCTIONS, job, system=True)))

    def cancel(self, job_id: str) -> None:
        """Cancel a job that has not run yet (no-op once it ran)."""

        def cancel(txn: Transaction) -> None:
            job = txn.get(job_id, system=True)
            if job is None:
                raise ValidationError(f"No scheduled function with id {job_id!r}")
            if job["state"]["kind"] in ("pending", "inProgress"):
                txn.patch(
                    job_id, {"state": {"kind": "canceled"}, "completedTime": _now_ms()}, system=True
                )

        self._write(cancel)

    def _write(self, fn: Any) -> Any:
        if self._txn is not None:
            return fn(self._txn)
        return self._backend.store.mutate(fn)[0]


class SchedulerService(TableWatcher):
    """Runs due jobs in a thread pool; wakes on commits that touch `_scheduled_functions`."""

    def __init__(self, backend: Backend, *, workers: int = 4) -> None:
        self._backend = backend
        self._claimed: set[str] = set()
        self._claimed_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convex-job")
        if not backend.store.shared:
            # On a shared store another process may be running an action right now: an
            # `inProgress` job there is not known to be interrupted.
            self._fail_interrupted()
        failure = "scheduler could not read its jobs"
        self._watch(backend.store, SCHEDULED_FUNCTIONS, "convex-scheduler", failure)

    def close(self) -> None:
        """Stop running jobs (running ones finish); idempotent."""
        super().close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def functions_changed(self) -> None:
        """Run jobs that were waiting for their function to be registered."""
        self.wake()

    def _jobs(self, kind: str) -> list[dict[str, Value]]:
        def read(txn: Transaction) -> list[dict[str, Value]]:
            q = txn.query(SCHEDULED_FUNCTIONS, system=True)
            return q.with_index("by_state", lambda r: r.eq("state.kind", kind)).take(_BATCH)

        return self._backend.store.read(read)[0]

    def _fail_interrupted(self) -> None:
        for job in self._jobs("inProgress"):
            self._finish(str(job["_id"]), "failed", "The action was interrupted by a restart")

    def _pass(self) -> float:
        """Start the due jobs; the seconds until the next one is due."""
        now = _now_ms()
        jobs, next_due = self._due_jobs(now)
        for job in jobs:
            with self._claimed_lock:
                if str(job["_id"]) in self._claimed:
                    continue  # claimed since it was read
                self._claimed.add(str(job["_id"]))
            self._pool.submit(self._run_job, job)
        return _IDLE_WAIT if next_due == math.inf else max(0.0, (next_due - now) / 1000.0)

    def _due_jobs(self, now: float) -> tuple[list[dict[str, Value]], float]:
        """Up to `_BATCH` due jobs that can run now, and when the first later one is due.

        Jobs already running and jobs whose function is not registered are passed over, not
        counted: however many of them there are, they never hold back a job due after them
        (each pass reads past them, a cost in proportion to their number)."""
        registry = self._backend.registry
        with self._claimed_lock:
            claimed = set(self._claimed)

        def read(txn: Transaction) -> tuple[list[dict[str, Value]], float]:
            pending = txn.query(SCHEDULED_FUNCTIONS, system=True).with_index(
                "by_state", lambda r: r.eq("state.kind", "pending")
            )
            due: list[dict[str, Value]] = []
            for job in pending:  # ordered by scheduledTime
                if job["scheduledTime"] > now:
                    return due, float(job["scheduledTime"])
                if str(job["_id"]) in claimed or registry.get(str(job["name"])) is None:
                    continue
                due.append(job)
                if len(due) == _BATCH:
                    break  # each finished job wakes the loop for the next batch
            return due, math.inf

        return self._backend.store.read(read)[0]

    def _run_job(self, job: dict[str, Value]) -> None:
        job_id = str(job["_id"])
        try:
            self._execute(job_id, str(job["name"]), job["args"][0])
        except BaseException as raised:
            exc = contained(raised, f"scheduled function {job['name']}")
            if not isinstance(exc, Exception):
                raise  # Ctrl-C on the main thread (a job never runs there)
            message = exc.data if isinstance(exc, ConvexError) else f"{type(exc).__name__}: {exc}"
            _log.info("scheduled function %s failed: %s", job["name"], message)
            self._finish(job_id, "failed", str(message))
        finally:
            with self._claimed_lock:
                self._claimed.discard(job_id)
            self._wake.set()

    def _execute(self, job_id: str, name: str, args: Any) -> None:
        backend = self._backend
        function = backend.registry.get(name)
        if function is None:
            return  # unregistered since it was read: it stays pending until it is again
        if function.kind == "action":
            if not self._start_action(job_id):
                return
            backend.call(name, args, kind="action", identity=None, public_only=False)
            self._finish(job_id, "success")
            return

        def run(txn: Transaction) -> None:
            current = txn.get(job_id, system=True)
            if current is None or current["state"]["kind"] != "pending":
                return  # canceled meanwhile, or already ran
            backend.invoke(function, args, txn, identity=None)
            self._mark(txn, job_id, "success")

        backend.store.mutate(run)

    def _start_action(self, job_id: str) -> bool:
        def start(txn: Transaction) -> bool:
            current = txn.get(job_id, system=True)
            if current is None or current["state"]["kind"] != "pending":
                return False
            txn.patch(job_id, {"state": {"kind": "inProgress"}}, system=True)
            return True

        return self._backend.store.mutate(start)[0]

    @staticmethod
    def _mark(txn: Transaction, job_id: str, kind: str, error: str | None = None) -> None:
        state: dict[str, Value] = {"kind": kind}
        if error is not None:
            state["error"] = error
        txn.patch(job_id, {"state": state, "completedTime": _now_ms()}, system=True)

    def _finish(self, job_id: str, kind: str, error: str | None = None) -> None:
        def finish(txn: Transaction) -> None:
            if txn.get(job_id, system=True) is not None:
                self._mark(txn, job_id, kind, error)

        self._backend.store.mutate(finish)

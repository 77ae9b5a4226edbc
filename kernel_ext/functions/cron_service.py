"""Runs the crons of `crons.py`, durably: their state is in the system table `_cron_jobs`.

A cron is a document `{name, function, args: [args], schedule, nextRun, lastJob?}`. Loading a
folder with a `crons.py` replaces the set (in one mutation: new crons are added, changed ones
start over, removed ones are deleted; an unchanged one keeps its next run, also across
restarts). When a cron is due, one mutation inserts its run, a `_scheduled_functions` job due
at that time (run by the scheduler like any other, so it shows in that table's history), and
moves `nextRun` on. That mutation runs only if `nextRun` is still the due time it read, and it
is serialized with every other process's (OCC), so each due time gets at most one job, across
restarts and on a store shared by several processes.

Convex's rules: runs missed while the store was closed are not made up, the next one after
a restart runs once (`crons.next_due`); a run due while the cron's previous one is still
pending or running is skipped (logged); a cron whose function is not registered in this
process (a restarted kernel that has not loaded its folder yet) waits for it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from kernel_ext.engine.store import SCHEDULED_FUNCTIONS
from kernel_ext.errors import (
    ArgumentError,
    UnknownFunction,
    ValidationError,
    WrongFunctionKind,
)
from kernel_ext.functions.crons import CronJob, CronJobs, describe_schedule, first_due, next_due
from kernel_ext.functions.registration import FunctionDefinition
from kernel_ext.functions.registry import path_of
from kernel_ext.functions.table_watcher import TableWatcher
from kernel_ext.store.keys import encode_value
from kernel_ext.store.transaction import Transaction
from kernel_ext.store.values import Value

if TYPE_CHECKING:
    from kernel_ext.functions.backend import Backend

__all__ = ["CRON_JOBS", "CronService", "ResolvedCron"]

#: The system table of the crons' durable state.
CRON_JOBS: Final = "_cron_jobs"
_log = logging.getLogger(__name__)
_IDLE_WAIT: Final = 3600.0
_SPEC_FIELDS: Final = ("function", "args", "schedule")


def _now_ms() -> float:
    return time.time() * 1000.0


@dataclass(frozen=True)
class ResolvedCron:
    """A cron whose function was found and whose args passed its validator."""

    name: str
    schedule: dict[str, Value]
    function: str
    args: dict[str, Value]

    def spec(self) -> dict[str, Value]:
        """The fields of its `_cron_jobs` document that define it."""
        return {
            "name": self.name,
            "function": self.function,
            "args": [self.args],
            "schedule": self.schedule,
        }


class CronService(TableWatcher):
    """Keeps the crons of a backend and runs them when due (a thread of its own).

    Attributes:
        clock: ms since the epoch, `time.time()`'s by default; a test may replace it (then
            `wake()`) to act as if time had passed.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.clock: Callable[[], float] = _now_ms
        self._watch(
            backend.store, CRON_JOBS, "convex-crons", "the crons could not be read or scheduled"
        )

    # -- defining ------------------------------------------------------------------------

    def resolve(
        self, crons: CronJobs, loaded: Mapping[str, FunctionDefinition]
    ) -> list[ResolvedCron]:
        """Check each cron against the functions being `loaded` (by path) and those already
        registered: its function exists, is a mutation or an action, and takes its args.

        Raises:
            UnknownFunction: no function at the cron's reference.
            WrongFunctionKind: the function is a query.
            ArgumentError: the args do not pass the function's validator.
        """
        return [self._resolve(job, loaded) for job in crons]

    def _resolve(self, job: CronJob, loaded: Mapping[str, FunctionDefinition]) -> ResolvedCron:
        ref = job.ref
        if isinstance(ref, FunctionDefinition):
            # Registered at the path the load will give it (the last one it is found at).
            paths = [path for path, fn in loaded.items() if fn is ref]
            ref = paths[-1] if paths else ref
        path = path_of(ref)
        function = loaded.get(path) or self._backend.registry.get(path)
        if function is None:
            raise UnknownFunction(
                f"Cron {job.name!r} runs {path!r}, which is not defined: name a mutation or "
                "an action of the functions folder (e.g. api.module.function)"
            )
        if function.kind == "query":
            raise WrongFunctionKind(
                f"Cron {job.name!r} runs {path}, a query: a cron runs a mutation or an action"
            )
        args = job.args
        if function.args is not None:
            try:
                checked = function.args.check(args, "", self._backend.store.catalog.table_name)
            except ValidationError as exc:
                raise ArgumentError(
                    f"Cron {job.name!r}: its args do not match {path}'s validator: {exc}"
                ) from exc
            assert isinstance(checked, dict)
            args = checked
        return ResolvedCron(job.name, job.schedule, path, args)

    def define(self, crons: list[ResolvedCron]) -> None:
        """Make `crons` the store's set of crons, in one mutation (see the module
        docstring)."""

        def replace(txn: Transaction) -> None:
            now = self.clock()
            existing = {str(d["name"]): d for d in txn.query(CRON_JOBS, system=True).collect()}
            for cron in crons:
                spec = cron.spec()
                doc = existing.pop(cron.name, None)
                if doc is None:
                    spec["nextRun"] = float(first_due(cron.schedule, now))
                    txn.insert(CRON_JOBS, spec, system=True)
                elif any(encode_value(doc[f]) != encode_value(spec[f]) for f in _SPEC_FIELDS):
                    spec["nextRun"] = float(first_due(cron.schedule, now))
                    txn.patch(str(doc["_id"]), spec, system=True)
            for doc in existing.values():
                txn.delete(str(doc["_id"]), system=True)

        self._backend.store.mutate(replace)
        self._wake.set()

    def describe(self) -> list[dict[str, Any]]:
        """`[{path: name, kind: "cron", visibility: "internal", args: None, live: None,
        function, schedule, nextRun}]` of the store's crons, by name (for
        `describe_functions`; `schedule` in words, `nextRun` in ms)."""
        docs = self._backend.store.read(self._crons)[0]
        return [
            {
                "path": doc["name"],
                "kind": "cron",
                "visibility": "internal",
                "args": None,
                "live": None,
                "function": doc["function"],
                "schedule": describe_schedule(doc["schedule"]),
                "nextRun": doc["nextRun"],
            }
            for doc in sorted(docs, key=lambda d: str(d["name"]))
        ]

    # -- running -------------------------------------------------------------------------

    @staticmethod
    def _crons(txn: Transaction) -> list[dict[str, Value]]:
        return txn.query(CRON_JOBS, system=True).collect()

    def _pass(self) -> float:
        """Schedule the due crons' runs; the seconds until the next one is due."""
        now = self.clock()
        registry = self._backend.registry
        following = math.inf
        for doc in self._backend.store.read(self._crons)[0]:
            if registry.get(str(doc["function"])) is None:
                continue  # runs once its function is registered (`wake`)
            due = float(cast("float", doc["nextRun"]))
            if due <= now:
                self._backend.store.mutate(functools.partial(self._schedule_run, seen=doc, due=due))
                following = now  # look again: it may be due again already
            else:
                following = min(following, due)
        return _IDLE_WAIT if following == math.inf else max(0.0, (following - now) / 1000.0)

    def _schedule_run(self, txn: Transaction, seen: dict[str, Value], due: float) -> None:
        """Insert the run due at `due` and move the cron on, unless another process (or a
        redefinition) did already."""
        cron_id = str(seen["_id"])
        cron = txn.get(cron_id, system=True)
        if cron is None or cron["nextRun"] != due:
            return
        schedule = cron["schedule"]
        assert isinstance(schedule, dict)
        following = float(next_due(schedule, due, self.clock()))
        last = cron.get("lastJob")
        previous = None if last is None else txn.get(str(last), system=True)
        if previous is not None and _running(previous):
            _log.info("cron %s: skipped a run, the previous one is still running", cron["name"])
            txn.patch(cron_id, {"nextRun": following}, system=True)
            return
        job = {
            "name": cron["function"],
            "args": cron["args"],
            "scheduledTime": due,
            "state": {"kind": "pending"},
        }
        job_id = txn.insert(SCHEDULED_FUNCTIONS, job, system=True)
        txn.patch(cron_id, {"nextRun": following, "lastJob": job_id}, system=True)


def _running(job: dict[str, Value]) -> bool:
    state = job.get("state")
    return isinstance(state, dict) and state.get("kind") in ("pending", "inProgress")

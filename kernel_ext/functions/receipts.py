"""Mutation receipts: a mutation that a sync client re-sends is answered, never run twice.

The JavaScript client and this project's remote client keep their session id across sockets
and, after a reconnect, re-send every mutation they have not seen confirmed, including ones
that ran (the socket dropped, or the server restarted, before the answer arrived). A receipt
is a document of the system table `_mutation_receipts` (`key`: a digest of session id,
request id, path and caller; `result`: the Convex JSON bytes of the result) written IN THE
SAME TRANSACTION as the mutation's writes: it exists exactly when they do, across restarts,
SIGKILLs and dropped sockets. A mutation with a receipt key looks it up in its own
transaction before running; a copy that runs concurrently (re-sent on a new socket while the
first still runs) wrote the same key, so OCC re-runs the later one, which then finds it.

A failed mutation wrote nothing, so it has no receipt: re-sent, it runs again (it left no
trace). A re-sent mutation is answered with its first result and no log lines, at a ts at
or after its commit.

Bounds: results larger than `MAX_RESULT_BYTES` are not kept (re-sending such a mutation
gets an error saying it already ran); receipts older than `MAX_AGE_MS` and all but the
newest `MAX_RECEIPTS` are deleted in small transactions of their own, at most once every
`PRUNE_EVERY` receipts (`prune_if_due`), so user mutations never wait for pruning or
conflict with it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import orjson

from kernel_ext.engine.store import MUTATION_RECEIPTS, Store
from kernel_ext.errors import FunctionError, StoreError
from kernel_ext.store.transaction import Transaction
from kernel_ext.store.values import Value, dumps_json, from_json

__all__ = [
    "MAX_AGE_MS",
    "MAX_RECEIPTS",
    "MAX_RESULT_BYTES",
    "PRUNE_EVERY",
    "MutationReceipts",
    "receipt_key",
]

_log = logging.getLogger(__name__)

#: Receipts older than this (ms) are deleted: a client re-sends when it reconnects.
MAX_AGE_MS: Final = 24 * 3600 * 1000.0
#: At most this many receipts are kept (the oldest go first).
MAX_RECEIPTS: Final = 10_000
#: A result whose Convex JSON is larger than this is not kept in its receipt.
MAX_RESULT_BYTES: Final = 64 << 10
#: Pruning runs after this many new receipts (or when the count is this far over the cap).
PRUNE_EVERY: Final = 500


def receipt_key(session_id: str, request_id: int, path: str, caller: Any) -> str:
    """The receipt key of a mutation: a digest of who sent it and as what request. `caller`
    is any JSON-able description of the identity (the same mutation re-sent under another
    identity is another mutation)."""
    data = orjson.dumps([session_id, request_id, path, caller])
    return hashlib.sha256(data).hexdigest()


class MutationReceipts:
    """The receipts of one store (thread-safe).

    Args:
        store: the store.
        max_receipts: how many receipts to keep at most.
        max_age_ms: how old a receipt may get.
        prune_every: new receipts between two prunings.
        clock: ms since the epoch.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_receipts: int = MAX_RECEIPTS,
        max_age_ms: float = MAX_AGE_MS,
        prune_every: int = PRUNE_EVERY,
        clock: Callable[[], float] = lambda: time.time() * 1000.0,
    ) -> None:
        self._store = store
        self._max, self._max_age, self._every = max_receipts, max_age_ms, prune_every
        self._clock = clock
        self._lock = threading.Lock()
        self._pruning = threading.Lock()
        self._count: int | None = None  # unknown until the first pruning counts them
        self._since_prune = 0

    def mutate(self, key: str, run: Callable[[Transaction], Value]) -> tuple[Value, int]:
        """`store.mutate(run)` for the mutation `key`: its recorded result if it committed,
        else `run`'s result, recorded in the same transaction (so it commits with the
        writes); then prunes if due. Returns `(result, commit ts)`.

        Raises:
            FunctionError: it ran, but its result was too large to keep.
            Exception: whatever `run` raises (nothing is recorded).
        """
        recorded = False  # by the attempt that committed (the last one run)

        def once(txn: Transaction) -> Value:
            nonlocal recorded
            found = (
                txn.query(MUTATION_RECEIPTS, system=True)
                .with_index("by_key", lambda q: q.eq("key", key))
                .first()
            )
            recorded = found is None
            if found is not None:
                return _replay(found)
            value = run(txn)
            encoded = dumps_json(value)
            receipt: dict[str, Value] = {"key": key}
            if len(encoded) <= MAX_RESULT_BYTES:
                receipt["result"] = encoded
            else:
                receipt["resultSize"] = len(encoded)
            txn.insert(MUTATION_RECEIPTS, receipt, system=True)
            return value

        result = self._store.mutate(once)
        if recorded:
            with self._lock:
                self._since_prune += 1
                if self._count is not None:
                    self._count += 1
        self.prune_if_due()
        return result

    def prune_if_due(self) -> None:
        """Delete old receipts if enough were written since the last pruning (`mutate` calls
        it; cheap otherwise). Failures are logged, never raised: pruning
        is retried after the next `prune_every` receipts."""
        with self._lock:
            due = self._since_prune >= self._every or (
                self._count is not None and self._count > self._max + self._every
            )
        if not due or not self._pruning.acquire(blocking=False):
            return
        try:
            self.prune()
        except StoreError as exc:
            _log.warning("pruning mutation receipts failed (retried later): %s", exc)
        finally:
            self._pruning.release()

    def prune(self) -> int:
        """Delete receipts older than the age limit and beyond the count limit, oldest first,
        in transactions of at most `prune_every` deletions; returns how many were deleted."""
        with self._lock:
            self._since_prune = 0
        if self._count is None:
            counted = self._store.read(_count)[0]
            with self._lock:
                # Receipts recorded between the read and now may be missing from the count or
                # (once set) counted twice: close enough for a cap.
                self._count = counted
        deleted = 0
        while True:
            with self._lock:
                excess = max(0, (self._count or 0) - self._max)
            cutoff = self._clock() - self._max_age
            prune = functools.partial(
                _delete_oldest, excess=excess, cutoff_ms=cutoff, limit=self._every
            )
            count, _ = self._store.mutate(prune)
            deleted += count
            with self._lock:
                self._count = (self._count or 0) - count
            if count < self._every:
                return deleted

    @property
    def count(self) -> int | None:
        """How many receipts the store holds (None: not counted yet)."""
        return self._count


def _replay(receipt: dict[str, Value]) -> Value:
    encoded = receipt.get("result")
    if isinstance(encoded, bytes):
        return from_json(orjson.loads(encoded))
    raise FunctionError(
        "This mutation already ran (the client re-sent it after a reconnect), and its result "
        f"({receipt.get('resultSize')} bytes of JSON, more than {MAX_RESULT_BYTES:,} kept) "
        "cannot be sent again. Its writes are committed; read them with a query. Return a "
        "smaller result (an id instead of documents) to get it back after reconnects."
    )


def _count(txn: Transaction) -> int:
    return sum(1 for _ in txn.query(MUTATION_RECEIPTS, system=True))


def _delete_oldest(txn: Transaction, *, excess: int, cutoff_ms: float, limit: int) -> int:
    """Delete, oldest first, the `excess` oldest receipts and any created before
    `cutoff_ms`, at most `limit`; stops at the first one to keep (so that the read set ends
    there, and new receipts do not conflict with the pruning)."""
    deleted = 0
    for receipt in txn.query(MUTATION_RECEIPTS, system=True):
        if deleted >= limit or (deleted >= excess and receipt["_creationTime"] >= cutoff_ms):
            break
        txn.delete(str(receipt["_id"]), system=True)
        deleted += 1
    return deleted

"""File storage: `ctx.storage` and the service behind it.

Each stored file is a document of the system table `_storage` (`sha256`: hex, `size`,
`contentType` when one was given; `_id` is the storage id) plus its bytes in the store's
`FileStore` (`persistence.files`), keyed by that id. The bytes are made durable before the
row commits; a file whose row never committed is removed when the store next opens; deleting
the row frees the bytes once the deleting commit is stored (a listener on commits).

Upload URLs are single-use and expire after `UPLOAD_TTL_S`: `generate_upload_url` inserts a
row `{hash, expiresAt}` into the private system table `_upload_tokens` (in the mutation's
transaction: a mutation that raises, or a discarded OCC re-run, leaves no usable URL), and
the URL carries the token, of which only the SHA-256 is stored. An upload claims the token
(deletes its row) in the same commit as the `_storage` row, so a second upload with the same
URL finds no token and is refused.

URLs point at the HTTP server that serves the store (`serve`'s port, the Jupyter server's
`<base_url>convex/`), set with `serve_at`; an embedded store without one starts a small
files-only server on 127.0.0.1 (an ephemeral port) on the first URL asked for
(`storage_http.FileServer`).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from kernel_ext.engine.store import Commit, Store
from kernel_ext.errors import CommitOutcomeUnknown, ValidationError
from kernel_ext.functions.limits import check_deadline
from kernel_ext.persistence.files import FileWriter
from kernel_ext.store.ids import new_id
from kernel_ext.store.transaction import Transaction
from kernel_ext.store.values import Value

if TYPE_CHECKING:
    from kernel_ext.functions.storage_http import FileServer

__all__ = [
    "MAX_UPLOAD_SIZE",
    "STORAGE",
    "UPLOAD_TOKENS",
    "UPLOAD_TTL_S",
    "ActionStorage",
    "MutationStorage",
    "QueryStorage",
    "StorageService",
    "UploadRefused",
]

STORAGE: Final = "_storage"
UPLOAD_TOKENS: Final = "_upload_tokens"
#: How long an upload URL stays valid (s), as Convex's.
UPLOAD_TTL_S: Final = 3600
#: The largest upload accepted (bytes): 1 GiB. Convex sets no small cap; this one only
#: guards the disk against a runaway client.
MAX_UPLOAD_SIZE: Final = 1 << 30
#: Expired, unused upload tokens removed by each upload (they are removed a few at a time).
_PRUNE: Final = 16

_log = logging.getLogger(__name__)


class UploadRefused(ValidationError):
    """An upload URL that is unknown, used already, or expired (HTTP 403)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class StorageService:
    """The files of one store: URLs, uploads, reads, and freeing deleted files' bytes.

    Args:
        store: the store (its `files` hold the bytes).

    Attributes:
        clock: seconds since the epoch (tests move it to expire upload URLs).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock: Callable[[], float] = time.time
        self._base_url: str | None = None
        self._server: FileServer | None = None
        self._lock = threading.Lock()
        self._freed: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._sweep()
        store.add_listener(self._on_commit)
        self._freer = threading.Thread(target=self._free, name="convex-files", daemon=True)
        self._freer.start()

    def close(self) -> None:
        """Stop the files-only server (if one started) and the freeing thread."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()
        self._freed.put(None)
        self._freer.join(timeout=10)

    # -- URLs ----------------------------------------------------------------------------

    def serve_at(self, url: str) -> None:
        """Give out URLs under `url` (the server's address, without a trailing `/`)."""
        self._base_url = url.rstrip("/")

    def stop_serving_at(self, url: str) -> None:
        """The server at `url` stopped: give out URLs of the files-only server from now on
        (unless another server took over meanwhile)."""
        if self._base_url == url.rstrip("/"):
            self._base_url = None

    def base_url(self) -> str:
        """Where files are served: the server set by `serve_at`, else a files-only server
        on 127.0.0.1 started now (once)."""
        if self._base_url is not None:
            return self._base_url
        with self._lock:
            if self._server is None:
                from kernel_ext.functions.storage_http import FileServer

                self._server = FileServer(self)
            return self._server.url

    def url_for(self, storage_id: str) -> str:
        """The download URL of a file."""
        return f"{self.base_url()}/api/storage/{storage_id}"

    def new_upload_url(self, txn: Transaction) -> str:
        """Record a new upload token in `txn` and return its URL."""
        token = secrets.token_urlsafe(32)
        expires = (self.clock() + UPLOAD_TTL_S) * 1000.0
        txn.insert(UPLOAD_TOKENS, {"hash": _hash(token), "expiresAt": expires}, system=True)
        return f"{self.base_url()}/api/storage/upload?token={token}"

    # -- uploads -------------------------------------------------------------------------

    def check_token(self, token: str) -> None:
        """Refuse an upload early (before its body is read) if its token is not valid now.

        Raises:
            UploadRefused: unknown, used or expired.
        """
        self.store.read(lambda txn: self._token_row(txn, token))

    def _token_row(self, txn: Transaction, token: str) -> dict[str, Value]:
        rows = (
            txn.query(UPLOAD_TOKENS, system=True)
            .with_index("by_hash", lambda q: q.eq("hash", _hash(token or "")))
            .take(1)
        )
        if not rows:
            raise UploadRefused(
                "This upload URL is not valid: it was used already (upload URLs are "
                "single-use) or never issued; generate a new one with "
                "ctx.storage.generate_upload_url()"
            )
        row = rows[0]
        expires = row["expiresAt"]
        assert isinstance(expires, float)
        if expires <= self.clock() * 1000.0:
            raise UploadRefused(
                f"This upload URL expired (upload URLs are valid for {UPLOAD_TTL_S // 60} "
                "minutes); generate a new one with ctx.storage.generate_upload_url()"
            )
        return row

    def writer(self) -> FileWriter:
        """A new file to stream bytes into (then `finish_upload` or `commit_file`)."""
        return self.store.files.writer()

    def finish_upload(self, token: str, writer: FileWriter, content_type: str | None) -> str:
        """Store an uploaded file: claim `token` and commit its `_storage` row. Returns the
        storage id.

        Raises:
            UploadRefused: the token is unknown, used or expired (nothing is stored).
        """

        def claim(txn: Transaction) -> None:
            row = self._token_row(txn, token)
            txn.delete(str(row["_id"]), system=True)
            self._prune_tokens(txn)

        return self.commit_file(writer, content_type, claim)

    def _prune_tokens(self, txn: Transaction) -> None:
        """Delete a few expired tokens (oldest first: tokens expire in creation order)."""
        now = self.clock() * 1000.0
        for row in txn.query(UPLOAD_TOKENS, system=True).take(_PRUNE):
            expires = row["expiresAt"]
            assert isinstance(expires, float)
            if expires > now:
                break
            txn.delete(str(row["_id"]), system=True)

    def commit_file(
        self,
        writer: FileWriter,
        content_type: str | None,
        also: Callable[[Transaction], None] | None = None,
    ) -> str:
        """Make the written bytes durable under a new storage id, then commit their
        `_storage` row (with `also(txn)` in the same mutation). Returns the storage id; if
        the commit fails, the bytes are removed, but only once the row is known not to be
        stored: an error that arrives after the commit (a Ctrl-C, a lost PostgreSQL
        connection whose commit's fate is unknown) keeps them, and a killed process leaves
        them to the next open's sweep."""
        table = self.store.catalog.table(STORAGE)
        assert table is not None, "system tables are created when the store opens"
        storage_id = new_id(table.number)
        row: dict[str, Value] = {"sha256": writer.sha256(), "size": float(writer.size)}
        if content_type:
            row["contentType"] = content_type
        writer.finish(storage_id)

        def insert(txn: Transaction) -> None:
            if also is not None:
                also(txn)
            txn.insert(STORAGE, row, system=True, doc_id=storage_id)

        try:
            self.store.mutate(insert)
        except BaseException as exc:
            if not isinstance(exc, CommitOutcomeUnknown) and not self._stored(storage_id):
                self.store.files.delete(storage_id)
            raise
        return storage_id

    def _stored(self, storage_id: str) -> bool:
        """Whether the `_storage` row of `storage_id` is stored (True when that cannot be
        read now: the bytes are then kept, for the next open's sweep to judge)."""
        try:
            return self.metadata(storage_id) is not None
        except Exception:
            return True

    # -- reading -------------------------------------------------------------------------

    def metadata(self, storage_id: str) -> dict[str, Value] | None:
        """The `_storage` row of a file (latest commit), or None."""
        return self.store.read(lambda txn: row_of(txn, storage_id))[0]

    def open(self, storage_id: str) -> tuple[dict[str, Value], Iterator[bytes]] | None:
        """`(row, chunks)` of a file, or None if it is missing."""
        row = self.metadata(storage_id)
        chunks = None if row is None else self.store.files.read(storage_id)
        return None if row is None or chunks is None else (row, chunks)

    # -- freeing -------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Remove the files whose row never committed (a failed commit, a killed process).
        Housekeeping: a failure is logged (the next open tries again), the store opens."""

        def ids(txn: Transaction) -> set[str]:
            return {str(doc["_id"]) for doc in txn.query(STORAGE, system=True)}

        try:
            keep = self.store.read(ids)[0]
            removed = self.store.files.sweep(keep.__contains__)
        except Exception:
            _log.exception("Could not remove the files left by uploads that did not commit")
            return
        if removed:
            _log.info("Removed %d file(s) left by uploads that did not commit", removed)

    def _on_commit(self, commit: Commit) -> None:
        """Under the commit lock: queue the bytes of deleted `_storage` rows for freeing."""
        for doc_id, write in commit.writes.items():
            if write.table == STORAGE and write.new is None and write.old is not None:
                self._freed.put(doc_id)

    def _free(self) -> None:
        while (key := self._freed.get()) is not None:
            try:
                self.store.files.delete(key)
            except Exception:  # the next open's sweep removes it
                _log.exception("Could not free the bytes of deleted file %s", key)


def row_of(txn: Transaction, storage_id: Any) -> dict[str, Value] | None:
    """The `_storage` row of `storage_id` read in `txn` (reactive), or None.

    Raises:
        ValidationError: `storage_id` is not an id of `_storage`.
    """
    if txn.normalize_id(STORAGE, storage_id, system=True) is None:
        raise ValidationError(
            f"{storage_id!r} is not a storage id (an Id<'_storage'>, as returned by "
            "ctx.storage.store() or an upload)"
        )
    return txn.get(storage_id, system=True)


def _metadata(row: dict[str, Value] | None) -> dict[str, Value] | None:
    if row is None:
        return None
    return {
        "_id": row["_id"],
        "sha256": row["sha256"],
        "size": row["size"],
        "contentType": row.get("contentType"),
    }


_ONLY_IN: Final = {
    "generate_upload_url": "mutations and actions",
    "delete": "mutations and actions",
    "store": "actions",
    "get": "actions",
}


class _Storage:
    """What every `ctx.storage` refuses: a method of another function kind."""

    _kind = "query"

    def __getattr__(self, name: str) -> Any:
        where = _ONLY_IN.get(name)
        if where is None:
            raise AttributeError(name)
        raise AttributeError(
            f"ctx.storage.{name}() is not available in a {self._kind}: it can be used in "
            f"{where} only"
        )


class QueryStorage(_Storage):
    """`ctx.storage` in a query: `get_url`, `get_metadata` (reactive reads of `_storage`)."""

    def __init__(self, service: StorageService, txn: Transaction) -> None:
        self._service, self._txn = service, txn

    def get_url(self, storage_id: str) -> str | None:
        """A URL that downloads the file (GET), or None if there is no such file."""
        check_deadline()
        row = row_of(self._txn, storage_id)
        return None if row is None else self._service.url_for(storage_id)

    def get_metadata(self, storage_id: str) -> dict[str, Value] | None:
        """`{"_id", "sha256" (hex), "size", "contentType"}` of the file, or None."""
        check_deadline()
        return _metadata(row_of(self._txn, storage_id))


class MutationStorage(QueryStorage):
    """`ctx.storage` in a mutation: also `generate_upload_url` and `delete`."""

    _kind = "mutation"

    def generate_upload_url(self) -> str:
        """A single-use URL, valid for an hour, to POST a file's bytes to (the request's
        Content-Type is stored); it answers `{"storageId": ...}`. Valid only once this
        mutation commits."""
        check_deadline()
        return self._service.new_upload_url(self._txn)

    def delete(self, storage_id: str) -> None:
        """Delete the file; its bytes are freed once this mutation commits.

        Raises:
            ValidationError: no such file.
        """
        check_deadline()
        if row_of(self._txn, storage_id) is None:
            raise ValidationError(f"Cannot delete file {storage_id}: there is no such file")
        self._txn.delete(storage_id, system=True)


class ActionStorage(_Storage):
    """`ctx.storage` in an action: every method; each call is its own read or mutation."""

    _kind = "action"

    def __init__(self, service: StorageService) -> None:
        self._service = service
        self._store = service.store

    def get_url(self, storage_id: str) -> str | None:
        """A URL that downloads the file (GET), or None if there is no such file."""
        row = self._service.metadata(storage_id)
        return None if row is None else self._service.url_for(storage_id)

    def get_metadata(self, storage_id: str) -> dict[str, Value] | None:
        """`{"_id", "sha256" (hex), "size", "contentType"}` of the file, or None."""
        return _metadata(self._service.metadata(storage_id))

    def generate_upload_url(self) -> str:
        """A single-use URL, valid for an hour, to POST a file's bytes to."""
        return self._store.mutate(self._service.new_upload_url)[0]

    def delete(self, storage_id: str) -> None:
        """Delete the file and free its bytes.

        Raises:
            ValidationError: no such file.
        """

        def delete(txn: Transaction) -> None:
            if row_of(txn, storage_id) is None:
                raise ValidationError(f"Cannot delete file {storage_id}: there is no such file")
            txn.delete(storage_id, system=True)

        self._store.mutate(delete)

    def store(self, data: bytes, content_type: str | None = None) -> str:
        """Store `data` as a new file; returns its storage id."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValidationError(f"ctx.storage.store() takes bytes, got {type(data).__name__}")
        if content_type is not None and not isinstance(content_type, str):
            raise ValidationError("ctx.storage.store(): content_type must be a string or None")
        writer = self._service.writer()
        try:
            view = memoryview(data)
            for start in range(0, len(view), 1 << 20):
                writer.write(bytes(view[start : start + (1 << 20)]))
        except BaseException:
            writer.abort()
            raise
        return self._service.commit_file(writer, content_type)

    def get(self, storage_id: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        opened = self._service.open(storage_id)
        return None if opened is None else b"".join(opened[1])

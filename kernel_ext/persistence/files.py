"""The bytes of stored files (`ctx.storage`), kept beside the store's documents.

A `FileStore` keeps each file's bytes under a key (the id of its `_storage` document); the
engine and the functions reach it as `persistence.files` and never see the backend:

- `FolderFiles`: a folder next to a SQLite store file (`<store>.files/`). A file is written
  to a temporary name, fsynced, renamed to its key and the folder fsynced, so that a file is
  whole and durable before the `_storage` row that names it commits.
- `MemoryFiles`: a dict, for memory stores (nothing outlives the process).
- `PostgresFiles`: the table `convex_files(key, seq, data)` of a PostgreSQL store, one row per
  chunk of `CHUNK` bytes (no statement carries a whole large file), written in one
  transaction that commits before the `_storage` row does.

Writing is two steps: `writer()` streams the bytes in (hashing and counting them), then
`FileWriter.finish(key)` makes them durable under `key`; `abort()` drops them. A file whose
`_storage` row never committed (a failed commit, a killed process) is an orphan:
`sweep(keep)` removes every file whose key `keep` rejects, plus leftover temporary files
(called when a store opens; PostgreSQL spares files younger than `ORPHAN_AGE_S`, which
another process may be about to commit).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

from kernel_ext.errors import PersistenceError

__all__ = [
    "CHUNK",
    "ORPHAN_AGE_S",
    "FileStore",
    "FileWriter",
    "FolderFiles",
    "MemoryFiles",
    "PostgresFiles",
]

#: Bytes per read chunk, and per row of `convex_files`.
CHUNK: Final = 1 << 20
#: A PostgreSQL file without a `_storage` row is removed by `sweep` only once it is this old
#: (s): younger ones may belong to an upload of another process that is about to commit.
ORPHAN_AGE_S: Final = 3600
_TEMP_PREFIX: Final = ".tmp-"
_log = logging.getLogger(__name__)
#: Keys are document ids (Crockford base32, lower case): never a path.
_KEY: Final = re.compile(r"^[0-9a-z]{1,64}$")


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"not a file key: {key!r}")
    return key


class FileWriter(Protocol):
    """A file being written: `write` its bytes, then `finish(key)` or `abort()`."""

    size: int  #: bytes written so far

    def write(self, chunk: bytes) -> None:
        """Append `chunk`."""
        ...

    def sha256(self) -> str:
        """The hex SHA-256 of the bytes written so far."""
        ...

    def finish(self, key: str) -> None:
        """Store the bytes durably under `key` (a new key).

        Raises:
            PersistenceError: nothing was stored.
        """
        ...

    def abort(self) -> None:
        """Drop the bytes; idempotent, and a no-op after `finish`."""
        ...


class FileStore(Protocol):
    """Where a store keeps its files' bytes."""

    def writer(self) -> FileWriter:
        """A new file to write."""
        ...

    def read(self, key: str) -> Iterator[bytes] | None:
        """The file's bytes in chunks, or None if there is no such file."""
        ...

    def delete(self, key: str) -> None:
        """Remove the file (nothing if there is none)."""
        ...

    def sweep(self, keep: Callable[[str], bool]) -> int:
        """Remove the files whose key `keep` rejects (orphans) and leftover temporary
        files; returns how many files were removed."""
        ...


class _Hashing:
    """Counts and hashes what is written (the part every writer shares)."""

    def __init__(self) -> None:
        self.size = 0
        self._hash = hashlib.sha256()

    def _account(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._hash.update(chunk)

    def sha256(self) -> str:
        """The hex SHA-256 of the bytes written so far."""
        return self._hash.hexdigest()


# -- a folder next to a SQLite store ------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FolderWriter(_Hashing):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self._folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=folder)
        except OSError as exc:
            raise PersistenceError(f"Cannot write a file in {folder}: {exc}") from exc
        self._temp: Path | None = Path(name)
        self._file: io.BufferedWriter | None = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Append `chunk` to the temporary file."""
        assert self._file is not None, "write() after finish() or abort()"
        self._account(chunk)
        try:
            self._file.write(chunk)
        except OSError as exc:
            self.abort()
            raise PersistenceError(f"Cannot write a file in {self._folder}: {exc}") from exc

    def finish(self, key: str) -> None:
        """fsync, rename to `key`, fsync the folder."""
        target = self._folder / _check_key(key)
        assert self._file is not None and self._temp is not None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.rename(self._temp, target)
            self._temp = None
            _fsync_dir(self._folder)
        except OSError as exc:
            self.abort()
            target.unlink(missing_ok=True)
            raise PersistenceError(f"Cannot store a file in {self._folder}: {exc}") from exc

    def abort(self) -> None:
        """Close and remove the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


class _FileChunks(Iterator[bytes]):
    """A file's chunks; the file closes at its end, on `close()`, or when dropped unread."""

    def __init__(self, file: io.BufferedReader) -> None:
        self._file = file

    def __next__(self) -> bytes:
        chunk = self._file.read(CHUNK)
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __del__(self) -> None:
        self._file.close()


class FolderFiles:
    """Files in `folder` (made on the first write), one per key. Implements `FileStore`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def writer(self) -> FileWriter:
        """A new file, written to a temporary name in the folder."""
        return _FolderWriter(self.folder)

    def read(self, key: str) -> Iterator[bytes] | None:
        """The file's chunks (the file is opened now: a later delete does not cut it)."""
        try:
            file = open(self.folder / _check_key(key), "rb")  # noqa: SIM115 (closed by _FileChunks)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PersistenceError(f"Cannot read a file in {self.folder}: {exc}") from exc
        return _FileChunks(file)

    def delete(self, key: str) -> None:
        """Remove the file."""
        (self.folder / _check_key(key)).unlink(missing_ok=True)

    def sweep(self, keep: Callable[[str], bool]) -> int:
        """Remove orphans and temporary files (the store's lock keeps out other processes,
        so nothing is being written while it opens). What cannot be removed (a folder someone
        made in it) is logged and left."""
        if not self.folder.is_dir():
            return 0
        removed = 0
        for path in self.folder.iterdir():
            if path.name.startswith(_TEMP_PREFIX) or not keep(path.name):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    _log.warning("Cannot remove %s, which no stored file names: %s", path, exc)
                    continue
                removed += 1
        return removed


# -- memory ------------------------------------------------------------------------------


class _MemoryWriter(_Hashing):
    def __init__(self, owner: MemoryFiles) -> None:
        super().__init__()
        self._owner = owner
        self._parts: list[bytes] | None = []

    def write(self, chunk: bytes) -> None:
        """Keep `chunk`."""
        assert self._parts is not None, "write() after finish() or abort()"
        self._account(chunk)
        self._parts.append(bytes(chunk))

    def finish(self, key: str) -> None:
        """Keep the bytes under `key`."""
        assert self._parts is not None
        with self._owner._lock:
            self._owner._files[key] = b"".join(self._parts)
        self._parts = None

    def abort(self) -> None:
        """Drop the bytes."""
        self._parts = None


class MemoryFiles:
    """Files in this process's memory (memory stores). Implements `FileStore`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, bytes] = {}

    def writer(self) -> FileWriter:
        """A new file, kept in memory."""
        return _MemoryWriter(self)

    def read(self, key: str) -> Iterator[bytes] | None:
        """The file's bytes (in chunks of `CHUNK`)."""
        with self._lock:
            data = self._files.get(key)
        if data is None:
            return None
        return (data[i : i + CHUNK] for i in range(0, max(len(data), 1), CHUNK))

    def delete(self, key: str) -> None:
        """Forget the file."""
        with self._lock:
            self._files.pop(key, None)

    def sweep(self, keep: Callable[[str], bool]) -> int:
        """Forget the files `keep` rejects."""
        with self._lock:
            orphans = [key for key in self._files if not keep(key)]
            for key in orphans:
                del self._files[key]
        return len(orphans)


# -- PostgreSQL ---------------------------------------------------------------------------


class _Database(Protocol):
    """What `PostgresFiles` needs of `PostgresPersistence` (not imported: it imports us)."""

    def with_connection(self, action: str, use: Callable[[Any], Any]) -> Any:
        """`use(conn)` on a pooled autocommit connection."""
        ...


class _PostgresWriter(_Hashing):
    """Spools the bytes to a local temporary file (kept in memory while small), then copies
    them into `convex_files` in one transaction (`finish`)."""

    def __init__(self, db: _Database) -> None:
        super().__init__()
        self._db = db
        self._spool: Any = tempfile.SpooledTemporaryFile(max_size=8 * CHUNK)  # noqa: SIM115

    def write(self, chunk: bytes) -> None:
        """Append `chunk` to the spool."""
        assert self._spool is not None, "write() after finish() or abort()"
        self._account(chunk)
        self._spool.write(chunk)

    def finish(self, key: str) -> None:
        """Copy the chunks into `convex_files` (one row per `CHUNK` bytes, at least one)."""
        spool = self._spool
        assert spool is not None
        _check_key(key)

        def store(conn: Any) -> None:
            spool.seek(0)
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy("COPY convex_files (key, seq, data) FROM STDIN") as copy,
            ):
                seq = 0
                while True:
                    data = spool.read(CHUNK)
                    if not data and seq:
                        break
                    copy.write_row((key, seq, data))
                    seq += 1

        try:
            self._db.with_connection("Storing a file", store)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the spool."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class PostgresFiles:
    """Files in the `convex_files` table of a PostgreSQL store (created with the store's
    tables). Implements `FileStore`."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    def writer(self) -> FileWriter:
        """A new file, spooled locally until `finish`."""
        return _PostgresWriter(self._db)

    def read(self, key: str) -> Iterator[bytes] | None:
        """The file's chunks, one row per query (a large file is never one result)."""
        rows = self._db.with_connection(
            "Reading a file",
            lambda conn: conn.execute(
                "SELECT max(seq) FROM convex_files WHERE key = %s", (key,)
            ).fetchall(),
        )
        last = rows[0][0] if rows else None
        return None if last is None else self._chunks(key, int(last))

    def _chunks(self, key: str, last: int) -> Iterator[bytes]:
        for seq in range(last + 1):

            def chunk(conn: Any, seq: int = seq) -> list[Any]:
                sql = "SELECT data FROM convex_files WHERE key = %s AND seq = %s"
                return list(conn.execute(sql, (key, seq)).fetchall())

            rows = self._db.with_connection("Reading a file", chunk)
            if not rows:
                return  # deleted meanwhile
            yield bytes(rows[0][0])

    def delete(self, key: str) -> None:
        """Delete the file's rows."""
        self._db.with_connection(
            "Deleting a file",
            lambda conn: conn.execute("DELETE FROM convex_files WHERE key = %s", (key,)),
        )

    def sweep(self, keep: Callable[[str], bool]) -> int:
        """Delete the files `keep` rejects that are older than `ORPHAN_AGE_S`."""
        rows = self._db.with_connection(
            "Listing files",
            lambda conn: conn.execute(
                "SELECT DISTINCT key FROM convex_files "
                "WHERE created < now() - make_interval(secs => %s)",
                (ORPHAN_AGE_S,),
            ).fetchall(),
        )
        orphans = [key for (key,) in rows if not keep(key)]
        for key in orphans:
            self.delete(key)
        return len(orphans)

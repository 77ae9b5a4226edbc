"""Pushing functions to a server: compile cells and modules sent by an admin.

Only requests that carry the admin key get here (`HttpApi` checks). A pushed cell carries
only its own source: it runs with the names `kernel_ext` exports (`v`, `ConvexError`,
`UNDEFINED`, ...) but none of the sending notebook's globals.

On a shared store (PostgreSQL, `Store.shared`) a push of functions (`cell`, `files`) that
succeeded is also kept in the database, and every process serving the store applies the
pushes it has not applied yet, in their order: at start (after its own functions folder) and
whenever another process changed definitions (`Store.add_definitions_listener`). So every
`serve` process on one database serves the same functions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, cast

from kernel_ext.errors import ValidationError
from kernel_ext.functions.backend import Backend
from kernel_ext.functions.cells import (
    KINDS,
    base_namespace,
    compile_function,
    compile_schema,
    split_cell,
)
from kernel_ext.functions.columns import column_info
from kernel_ext.store.catalog import BY_CREATION_TIME
from kernel_ext.store.column_kinds import column_kinds_by_number, insert_rows
from kernel_ext.store.values import from_json, to_json

__all__ = ["Deployer", "PushLog"]

_log = logging.getLogger(__name__)


class PushLog(Protocol):
    """Where a shared store keeps the pushes of functions (`PostgresPersistence`)."""

    def add_push(self, body: bytes) -> int:
        """Keep a push; returns its sequence number (increasing)."""
        ...

    def pushes_after(self, seq: int) -> list[tuple[int, bytes]]:
        """The pushes kept after sequence number `seq`, oldest first."""
        ...


class Deployer:
    """Applies pushes to a backend.

    Args:
        backend: where functions and the schema go.
        folder: where pushed modules are written (a temporary folder if None).
    """

    def __init__(self, backend: Backend, folder: Path | None = None) -> None:
        self.backend = backend
        self.folder = (
            folder if folder is not None else Path(tempfile.mkdtemp(prefix="convex-push-"))
        )
        # One push at a time: pushes of modules build on the folder, and on a shared store
        # every process applies the kept pushes in the same order.
        self._push_lock = threading.RLock()
        self._log: PushLog | None = None
        self._applied = 0  # the sequence number of the last kept push applied here
        self._wake = threading.Event()
        self._closed = False
        self._worker: threading.Thread | None = None
        if backend.store.shared:
            self._follow(cast("PushLog", backend.store.persistence))

    def _follow(self, log: PushLog) -> None:
        """Apply the pushes kept in the shared store now, then whenever another process
        changes definitions (on a thread of ours: listeners run under the commit lock)."""
        self._log = log
        self.backend.store.add_definitions_listener(lambda ts: self._wake.set())
        self._catch_up()
        self._worker = threading.Thread(target=self._run_worker, name="convex-pushes", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Stop applying other processes' pushes; idempotent."""
        self._closed = True
        self._wake.set()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=10)

    def _run_worker(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            self._catch_up()

    def _catch_up(self) -> None:
        """Apply the kept pushes not applied here yet, in order. A push that fails here (this
        process serves other functions it relies on) is logged and skipped; an unreachable
        database is logged, and the next definitions change tries again."""
        assert self._log is not None
        try:
            with self._push_lock:
                for seq, body in self._log.pushes_after(self._applied):
                    if self._closed:
                        return
                    try:
                        self._define(json.loads(body))
                    except Exception as exc:
                        _log.warning("A push of functions (#%d) failed to apply here: %s", seq, exc)
                    self._applied = seq
        except Exception as exc:  # the database: say so, keep serving
            if not self._closed:
                _log.warning("Pushes of other processes could not be read: %s", exc)

    def __call__(self, body: Mapping[str, Any]) -> Any:
        """Apply an admin request:

        - `{"cell": "%%convex_... source"}` or `{"files": {"dir/x.py": source}}`: define
          functions (or the schema); returns what was defined (paths, or "schema");
        - `{"import": table, "rows": [documents as Convex JSON], "kinds": [...]}`: insert
          rows in one mutation that also records their column kinds
          (`kernel_ext.store.column_kinds`); returns their ids once live queries reflect
          them, or at once with `"wait": false` (a batch of a longer import: live re-runs
          then coalesce instead of holding up every batch);
        - `{"sync": true}`: returns `[]` once every live query reflects the latest commit
          (the end of such an import: read your writes);
        - `{"columnKinds": true}`: `[[table number, [kind, ...]]]` (Convex JSON);
        - `{"columnInfo": document id}`: what the store knows of the columns of that
          document's table, `{column: {"validator": <the schema's validator JSON of the
          field>, "dtype": <the pandas kind import_dataframe recorded>}}` with each key only
          when known, `{}` for a string that is no document id (plain JSON; the same value as
          the embedded `client.column_info`, see `kernel_ext.functions.columns`). Our
          extension: the official clients never send it;
        - `{"table": name}`: every document of a table (Convex JSON), in creation order;
        - `{"functions": true}`: `[{path, kind, visibility, args}]` (args: validator JSON);
        - `{"tables": true}`: `[{table, indexes, searchIndexes, vectorIndexes}]` of the user
          tables.

        Raises:
            ValidationError: the body is neither.
            HeaderError, SyntaxError, SchemaError, ...: the pushed code is bad; nothing changed.
        """
        if isinstance(body.get("cell"), str):
            return self._push({"cell": body["cell"]})
        if isinstance(body.get("import"), str) and isinstance(body.get("rows"), list):
            kinds = from_json(body.get("kinds", []))
            return self._import(body["import"], body["rows"], kinds, body.get("wait") is not False)
        if body.get("sync") is True:
            self.backend.subscriptions.wait_processed(self.backend.store.ts)
            return []
        if body.get("columnKinds") is True:
            kinds = self.backend.store.read(column_kinds_by_number)[0]
            return to_json([[n, list(k.values())] for n, k in kinds.items()])
        if isinstance(body.get("columnInfo"), str):
            return column_info(self.backend.store, body["columnInfo"])
        if isinstance(body.get("table"), str):
            return self._table(body["table"])
        if body.get("functions") is True:
            return self.backend.describe_functions()
        if body.get("tables") is True:
            return self.backend.describe_tables()
        files = body.get("files")
        if isinstance(files, Mapping) and files:
            return self._push({"files": dict(files)})
        raise ValidationError('A push is {"cell": "%%convex_query ..."} or {"files": {...}}')

    def _push(self, body: dict[str, Any]) -> list[str]:
        """Apply a push of functions (`{"cell": ...}` or `{"files": ...}`); on a shared store,
        keep it once it succeeded (a failed push is neither applied nor kept)."""
        with self._push_lock:
            if self._log is None:
                return self._define(body)
            self._catch_up()  # the pushes of others first: the same order as everywhere
            defined = self._define(body)
            log = self._log
            data = json.dumps(body).encode()
            # Kept inside a definitions change (a commit): the other processes are told of
            # it only once the push is in the database.
            seq = self.backend.store.record_change(lambda: log.add_push(data))
            if seq == self._applied + 1:
                self._applied = seq
            else:  # another process pushed meanwhile: apply its pushes, then this one again
                self._wake.set()
            return defined

    def _define(self, body: Mapping[str, Any]) -> list[str]:
        """Apply `{"cell": source}` or `{"files": {path: source}}`."""
        if isinstance(body.get("cell"), str):
            return self._cell(body["cell"])
        files = body.get("files")
        if isinstance(files, Mapping) and files:
            return self._files(files)
        raise ValidationError('A push is {"cell": "%%convex_query ..."} or {"files": {...}}')

    def _cell(self, source: str) -> list[str]:
        name, line, cell = split_cell(source)
        if name == "convex_schema":
            self.backend.store.set_schema(compile_schema(cell, base_namespace(), "<pushed schema>"))
            return ["schema"]
        header, function = compile_function(
            KINDS[name], line, cell, base_namespace(), f"<pushed {line.strip()[:60]}>"
        )
        return [self.backend.register(header.path, function)]

    def _import(self, table: str, rows: list[Any], kinds: list[Any], wait: bool) -> list[str]:
        documents = [from_json(row) for row in rows]
        ids, ts = self.backend.store.mutate(lambda txn: insert_rows(txn, table, documents, kinds))
        if wait:
            self.backend.subscriptions.wait_processed(ts)
        return ids

    def _table(self, table: str) -> list[Any]:
        docs = self.backend.store.read(
            lambda txn: txn.query(table).with_index(BY_CREATION_TIME).collect()
        )[0]
        return [to_json(doc) for doc in docs]

    def _files(self, files: Mapping[str, Any]) -> list[str]:
        for name, text in files.items():
            relative = PurePosixPath(str(name))
            if (
                relative.is_absolute()
                or ".." in relative.parts
                or relative.suffix != ".py"
                or not isinstance(text, str)
            ):
                raise ValidationError(
                    f"Pushed module {name!r} must be a relative .py path with text"
                )
        # A module that does not parse is refused before anything is written.
        for name, text in files.items():
            compile(text, f"<pushed {name}>", "exec")
        with self._push_lock:
            return self._apply_files(files)

    def _apply_files(self, files: Mapping[str, str]) -> list[str]:
        """Write the pushed modules over a copy of the folder, swap the copy in and load it;
        if loading fails (a module raises on import, a bad schema), swap the previous folder
        back: a rejected push leaves the folder, and so every later push, as before."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{self.folder.name}-staging-", dir=self.folder.parent)
        )
        try:
            if self.folder.exists():
                shutil.copytree(
                    self.folder,
                    staging,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
            for name, text in files.items():
                target = staging / PurePosixPath(str(name))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # Loaded from the folder's own path (module names derive from it), so the new
        # version is renamed into place first and the previous one kept until it loads.
        previous = self.folder.with_name(f"{staging.name}-previous")
        had_previous = self.folder.exists()
        if had_previous:
            os.rename(self.folder, previous)
        os.rename(staging, self.folder)
        try:
            defined = self.backend.load_functions(self.folder)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            if had_previous:
                os.rename(previous, self.folder)
            raise
        if had_previous:
            shutil.rmtree(previous, ignore_errors=True)
        return defined

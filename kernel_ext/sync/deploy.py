"""Pushing functions to a server: compile cells and modules sent by an admin.

Only requests that carry the admin key get here (`HttpApi` checks). A pushed cell carries
only its own source: it runs with the names `kernel_ext` exports (`v`, `ConvexError`,
`UNDEFINED`, ...) but none of the sending notebook's globals.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

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

__all__ = ["Deployer"]


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
        self._push_lock = threading.Lock()  # one push of modules at a time

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
        - `{"tables": true}`: `[{table, indexes}]` of the user tables.

        Raises:
            ValidationError: the body is neither.
            HeaderError, SyntaxError, SchemaError, ...: the pushed code is bad; nothing changed.
        """
        if isinstance(body.get("cell"), str):
            return self._cell(body["cell"])
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

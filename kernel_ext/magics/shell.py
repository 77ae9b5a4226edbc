"""`ConvexMagics`: the cell and line magics, bound to one IPython shell.

Imports IPython at module level: only `kernel_ext.magics.load_ipython_extension` imports it.
"""

from __future__ import annotations

import threading
import types
import warnings
from pathlib import Path
from typing import Any, Final

from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

import kernel_ext
from kernel_ext.client.base import CallKind, ConvexClient
from kernel_ext.functions.cells import compile_function, compile_schema, names_left_behind
from kernel_ext.functions.headers import (
    FunctionHeader,
    HeaderError,
    parse_key_values,
    split_words,
    unquote,
)
from kernel_ext.functions.registration import FunctionKind
from kernel_ext.magics import default_client, promised_names
from kernel_ext.magics.status import describe_store

__all__ = ["ConvexMagics", "DefinedFunction", "remove_traceback_filter"]

_USAGE: Final = """%convex status                 which store this notebook uses; how to reach it
%convex connect URL [--admin-key KEY]
                               connect `convex` to another store (memory, a path,
                               sqlite:///..., http://...; the key defaults to $CONVEX_ADMIN_KEY)
%convex functions              the registered functions
%convex tables                 the tables
%convex query PATH k=v ...     run a query, returns a DataFrame
%convex mutation PATH k=v ...  run a mutation, returns its result
%convex action PATH k=v ...    run an action, returns its result
                               (values: Python literals, n=3 code='1'; else strings, tag=red)
%convex serve [--port N]       serve this kernel's store (official Convex clients can connect)
%convex serve stop             stop serving
%convex traceback full|short   show or hide the library's frames in tracebacks (short)"""

#: How long `%convex status` waits for a remote client's first connection.
STATUS_WAIT = 5.0

# Frames of files under these folders are the library's own: hidden from notebook tracebacks.
_LIBRARY: Final = tuple(
    str(folder) + "/"
    for folder in (
        Path(kernel_ext.__file__).parent,
        Path(kernel_ext.__file__).parent.parent / "widgets",
    )
)


class DefinedFunction:
    """What a function magic displays: the function it registered."""

    def __init__(self, kind: str, header: FunctionHeader) -> None:
        self.kind, self.header = kind, header

    def __repr__(self) -> str:
        visibility = "internal " if self.header.internal else ""
        return f"{visibility}{self.kind} {self.header.signature()}"

    def _repr_html_(self) -> str:
        from html import escape

        return f"<code>{escape(repr(self))}</code>"


class _SchemaSummary:
    def __init__(self, schema: Any) -> None:
        self.schema = schema

    def __repr__(self) -> str:
        lines = ["schema:"]
        for name, table in self.schema.tables.items():
            indexes = ", ".join(
                f"{i.name}{list(i.fields)}" + ("" if i.kind == "db" else f" ({i.kind})")
                for i in table.indexes
            )
            lines.append(f"  {name}" + (f"  indexes: {indexes}" if indexes else ""))
        return "\n".join(lines)


@magics_class
class ConvexMagics(Magics):
    """The convex magics; `shell.user_ns["convex"]` is the client they use.

    Args:
        shell: the IPython shell whose namespace the cells compile against.
    """

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._ip = shell
        self._server: Any = None
        self.hide_library_frames = True

    @property
    def client(self) -> ConvexClient:
        """The notebook's `convex` (reconnected if it was closed or rebound)."""
        client = self._ip.user_ns.get("convex")
        if not isinstance(client, ConvexClient) or client.closed:
            client = default_client()
            self._ip.user_ns["convex"] = client
        return client

    # -- cell magics ---------------------------------------------------------------------

    @cell_magic
    def convex_schema(self, line: str, cell: str) -> Any:
        """Define the schema: `name = define_table({...}).index(...)` per table, or
        `schema = define_schema({...})`."""
        source = f"%%convex_schema {line}\n{cell}"
        filename = self._ip.compile.cache(source)  # tracebacks show the cell's lines
        schema = compile_schema(cell, self._namespace(), filename)
        client = self.client
        if client.kind == "remote":  # a server compiles the cell itself (admin key needed)
            client.register("schema", _Pushed(source))
        else:
            client.set_schema(schema)
        return _SchemaSummary(schema)

    @cell_magic
    def convex_query(self, line: str, cell: str) -> Any:
        """Define a query: `%%convex_query [module:]name(arg: validator, ...)`."""
        return self._define("query", line, cell)

    @cell_magic
    def convex_mutation(self, line: str, cell: str) -> Any:
        """Define a mutation: `%%convex_mutation [module:]name(arg: validator, ...)`."""
        return self._define("mutation", line, cell)

    @cell_magic
    def convex_action(self, line: str, cell: str) -> Any:
        """Define an action: `%%convex_action [module:]name(arg: validator, ...)`."""
        return self._define("action", line, cell)

    def _namespace(self) -> dict[str, Any]:
        """The notebook's namespace, with the names `%load_ext` promised put back if a cell
        deleted them (a body's globals are this very dict: later helpers stay visible)."""
        namespace: dict[str, Any] = self._ip.user_ns
        for name, value in promised_names().items():
            namespace.setdefault(name, value)
        return namespace

    def _define(self, kind: FunctionKind, line: str, cell: str) -> Any:
        """Compile the cell against the notebook's namespace and register it; nothing is
        registered if anything fails."""
        source = f"%%convex_{kind} {line}\n{cell}"
        filename = self._ip.compile.cache(source)  # tracebacks show `Cell In[n], line k`
        header, function = compile_function(kind, line, cell, self._namespace(), filename)
        client = self.client
        if client.kind == "remote":  # a server compiles the cell with `base_namespace()`
            missing = names_left_behind(header, cell, self._ip.user_ns)
            if missing:
                warnings.warn(
                    f"{header.path} uses {', '.join(missing)} from this notebook, but a "
                    "served store gets only the cell's own source: calling it will fail "
                    "with NameError there. Define them inside the cell, or push a module "
                    "with convex.load_functions(folder).",
                    stacklevel=2,
                )
        client.register(header.path, function)
        if header.live:
            return self._show_live(client, header)
        return DefinedFunction(kind, header)

    def _show_live(self, client: ConvexClient, header: FunctionHeader) -> None:
        from IPython.display import display

        from widgets import LiveTable

        table = LiveTable(client, header.path, header.live_args, title=header.live_title)
        if header.live_name is not None:
            self._ip.user_ns[header.live_name] = table
        display(table)  # type: ignore[no-untyped-call]

    # -- the %convex line magic ----------------------------------------------------------

    @line_magic
    def convex(self, line: str) -> Any:
        """`%convex status|connect|functions|tables|query|mutation|action|serve ...`."""
        words = split_words(line)
        if not words:
            print(_USAGE)
            return None
        command, args = words[0], words[1:]
        if command not in ("query", "mutation", "action"):  # their values are literals
            args = [unquote(a) for a in args]
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise HeaderError(f"Unknown %convex command {command!r}. Usage:\n{_USAGE}")
        return handler(args)

    def _cmd_status(self, args: list[str]) -> None:
        client = self.client
        if client.status != "connected":
            _wait_connected(client, STATUS_WAIT)
        serving = None if self._server is None else self._server.url
        print(describe_store(client, serving=serving))

    def _cmd_connect(self, args: list[str]) -> None:
        import os

        usage = "Usage: %convex connect URL [--admin-key KEY]"
        if len(args) == 3 and args[1] == "--admin-key":
            admin_key: str | None = args[2]
        elif len(args) == 1:
            admin_key = os.environ.get("CONVEX_ADMIN_KEY")
        else:
            raise HeaderError(usage)
        new = kernel_ext.connect(args[0], admin_key=admin_key)  # an embedded store ignores it
        old = self._ip.user_ns.get("convex")
        self._ip.user_ns["convex"] = new
        if isinstance(old, ConvexClient) and old is not new:
            old.close()
        self._cmd_status([])

    def _cmd_functions(self, args: list[str]) -> Any:
        import pandas as pd

        rows = self.client.describe_functions()  # a served store: needs the admin key
        # live: how its live subscriptions update ("incremental": a maintained view)
        # crons (kind "cron"): their function, schedule and next run (ms, UTC)
        columns = ["path", "kind", "visibility", "live", "function", "schedule", "nextRun"]
        return pd.DataFrame(rows, columns=columns)

    def _cmd_tables(self, args: list[str]) -> Any:
        import pandas as pd

        rows = [
            {
                "table": t["table"],
                "indexes": ", ".join(
                    [
                        *t["indexes"],
                        *(f"{i} (search)" for i in t.get("searchIndexes", ())),
                        *(f"{i} (vector)" for i in t.get("vectorIndexes", ())),
                    ]
                ),
            }
            for t in self.client.describe_tables()
        ]
        return pd.DataFrame(rows, columns=["table", "indexes"])

    def _call(self, kind: CallKind, args: list[str]) -> Any:
        """The line magics act for the notebook's owner: internal functions are allowed."""
        if not args:
            raise HeaderError(f"Usage: %convex {kind} PATH key=value ...")
        return self.client.call_as_owner(kind, args[0], parse_key_values(args[1:]))

    def _cmd_query(self, args: list[str]) -> Any:
        from kernel_ext.client.dataframe import to_dataframe

        return to_dataframe(self._call("query", args), self.client.column_kinds)

    def _cmd_mutation(self, args: list[str]) -> Any:
        return self._call("mutation", args)

    def _cmd_action(self, args: list[str]) -> Any:
        return self._call("action", args)

    def _cmd_serve(self, args: list[str]) -> None:
        """`serve [--port N]`: serve this kernel's store; `serve stop` stops it."""
        from kernel_ext.client.embedded import Client
        from kernel_ext.sync.background import BackgroundServer

        if args == ["stop"]:
            if self._server is not None:
                self._server.stop()
                self._server = None
                print("convex: stopped serving")
            return
        if self._server is not None:
            print(f"convex: already serving {self._server.url}")
            return
        port = 0
        if args[:1] == ["--port"] and len(args) == 2 and args[1].isdigit():
            port = int(args[1])
        elif args:
            raise HeaderError("Usage: %convex serve [--port N] | %convex serve stop")
        client = self.client
        if not isinstance(client, Client):
            raise HeaderError("%convex serve serves the embedded store; this one is served")
        self._server = BackgroundServer(client.backend, port=port)
        # The key stays out of the output (notebooks get shared): a name holds it.
        self._ip.user_ns["convex_admin_key"] = self._server.admin_key
        print(f"convex: serving {self._server.url}")
        print(f"  HTTP actions at {self._server.site_url}")
        print(
            f"  from another process: kernel_ext.connect({self._server.url!r}); "
            "as admin, add admin_key= the notebook variable `convex_admin_key`"
        )

    def _cmd_traceback(self, args: list[str]) -> None:
        if args not in (["full"], ["short"]):
            raise HeaderError("Usage: %convex traceback full|short")
        self.hide_library_frames = args == ["short"]

    # -- tracebacks ----------------------------------------------------------------------

    def install_traceback_filter(self) -> None:
        """Show exceptions without the library's frames (the user's cell lines and the
        error remain), unless another extension already customizes tracebacks."""
        ours = getattr(self._ip, "_convex_traceback_filter", None) is not None
        if self._ip.custom_exceptions and not ours:
            return
        magics = self

        def show(
            shell: InteractiveShell,
            etype: type[BaseException],
            value: BaseException,
            tb: types.TracebackType | None,
            tb_offset: int | None = None,
        ) -> list[str]:
            if magics.hide_library_frames:
                tb = _hide_library_frames(value, tb)
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return []

        self._ip.set_custom_exc((Exception,), show)  # type: ignore[no-untyped-call]
        self._ip._convex_traceback_filter = show  # type: ignore[attr-defined]


def remove_traceback_filter(shell: InteractiveShell) -> None:
    """Undo `ConvexMagics.install_traceback_filter` (if it is still the one installed)."""
    if getattr(shell, "_convex_traceback_filter", None) is not None:
        shell.set_custom_exc((), None)  # type: ignore[no-untyped-call]
        shell._convex_traceback_filter = None  # type: ignore[attr-defined]


class _Pushed:
    """A schema cell as `RemoteClient.register` takes it: its source travels."""

    def __init__(self, source: str) -> None:
        self.source = source


def _wait_connected(client: ConvexClient, timeout: float) -> None:
    """Wait (at most `timeout` s) until a remote client is connected."""
    connected = threading.Event()

    def on_status(status: str) -> None:
        if status == "connected":
            connected.set()

    handle = client.on_status(on_status)
    try:
        if client.status != "connected":
            connected.wait(timeout)
    finally:
        handle.remove()


def _hide_library_frames(
    value: BaseException, tb: types.TracebackType | None
) -> types.TracebackType | None:
    """`tb` (and the tracebacks of the exceptions chained to `value`) without the frames
    of the library's own files: what remains is the notebook's cells and other code."""
    seen: set[int] = set()
    chained: BaseException | None = value
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        chained.__traceback__ = _without_library(chained.__traceback__)
        chained = chained.__cause__ or chained.__context__
    return _without_library(tb)


def _without_library(tb: types.TracebackType | None) -> types.TracebackType | None:
    kept = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_LIBRARY):
            kept.append(tb)
        tb = tb.tb_next
    rebuilt: types.TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt

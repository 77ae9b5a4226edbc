"""IPython magics: `%%convex_schema`, `%%convex_query`, `%%convex_mutation`, `%%convex_action`
and the `%convex` line magic. Thin adapters: parse (`parsing.py`), build, hand to the client.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from kernel_ext.functions.cells import compile_function, compile_schema, names_left_behind
from kernel_ext.functions.headers import (
    FunctionHeader,
    HeaderError,
    parse_key_values,
    split_words,
    unquote,
)

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from kernel_ext.client.embedded import Client

__all__ = ["DefinedFunction", "load_ipython_extension", "unload_ipython_extension"]

_USAGE = """%convex status                 which store this notebook uses
%convex connect URL            connect `convex` to another store (memory, a path, sqlite:///...)
%convex functions              the registered functions
%convex tables                 the tables
%convex query PATH k=v ...     run a query, returns a DataFrame
%convex mutation PATH k=v ...  run a mutation, returns its result
%convex action PATH k=v ...    run an action, returns its result
                               (values: Python literals, n=3 code='1'; else strings, tag=red)
%convex serve [--port N]       serve this kernel's store (official Convex clients can connect)
%convex serve stop             stop serving"""


@dataclass(frozen=True)
class DefinedFunction:
    """What a function magic displays: the function it registered."""

    kind: str
    header: FunctionHeader

    def __repr__(self) -> str:
        visibility = "internal " if self.header.internal else ""
        return f"{visibility}{self.kind} {self.header.signature()}"

    def _repr_html_(self) -> str:
        from html import escape

        return f"<code>{escape(repr(self))}</code>"


def _default_client() -> Client:
    import kernel_ext

    admin_key = os.environ.get("CONVEX_ADMIN_KEY")
    if url := os.environ.get("CONVEX_URL"):
        client: Client = kernel_ext.connect(url, admin_key=admin_key)
    elif shared := os.environ.get("CONVEX_JUPYTER_URL"):
        # The shared store of the Jupyter server this kernel runs under.
        token = os.environ.get("CONVEX_JUPYTER_TOKEN", "")
        headers = {"Authorization": f"token {token}"} if token else {}
        client = kernel_ext.connect(shared, admin_key=admin_key, headers=headers)
    else:
        client = kernel_ext.connect()
    return client


def _make_magics(shell: InteractiveShell) -> Any:
    from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

    @magics_class
    class ConvexMagics(Magics):
        """The convex magics; `user_ns["convex"]` is the client they use."""

        def __init__(self, ip: InteractiveShell) -> None:
            super().__init__(ip)
            self._ip = ip

        @property
        def client(self) -> Client:
            client = self._ip.user_ns.get("convex")
            if client is None or getattr(client, "_closed", False):
                client = _default_client()
                self._ip.user_ns["convex"] = client
            return cast("Client", client)

        @cell_magic
        def convex_schema(self, line: str, cell: str) -> Any:
            """Define the schema: `name = define_table({...}).index(...)` per table, or
            `schema = define_schema({...})`."""
            source = f"%%convex_schema {line}\n{cell}"
            filename = self._ip.compile.cache(source)  # tracebacks show the cell's lines
            schema = compile_schema(cell, dict(self._ip.user_ns), filename)
            client = self.client
            push = getattr(client, "push_cell", None)
            if push is not None:  # a server compiles the cell itself (admin key needed)
                push(source)
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

        def _define(self, kind: str, line: str, cell: str) -> Any:
            header, function = _build_function(self._ip, kind, header_line=line, body=cell)
            client = self.client
            push = getattr(client, "push_cell", None)
            if push is not None:  # a server compiles the cell itself (admin key needed)
                missing = names_left_behind(header, cell, self._ip.user_ns)
                if missing:
                    warnings.warn(
                        f"{header.path} uses {', '.join(missing)} from this notebook, but a "
                        "served store gets only the cell's own source: calling it will fail "
                        "with NameError there. Define them inside the cell, or push a module "
                        "with convex.load_functions(folder).",
                        stacklevel=2,
                    )
                push(function.source)
            else:
                client.register(header.path, function)
            if header.live:
                from IPython.display import display

                from widgets import LiveTable

                table = LiveTable(client, header.path, header.live_args)
                display(table)  # type: ignore[no-untyped-call]
                return None
            return DefinedFunction(kind, header)

        @line_magic
        def convex(self, line: str) -> Any:
            """`%convex status|connect|functions|tables|query|mutation ...`."""
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
            if not hasattr(client, "backend"):
                print(
                    f"convex: store served at {client.location} ({getattr(client, 'status', '?')})"
                )
                return
            print(f"convex: embedded store at {client.location}")
            print(f"  {len(client.tables())} tables, {len(client.functions())} functions")

        def _cmd_connect(self, args: list[str]) -> None:
            import kernel_ext

            if len(args) != 1:
                raise HeaderError("Usage: %convex connect URL")
            old = self._ip.user_ns.get("convex")
            self._ip.user_ns["convex"] = kernel_ext.connect(args[0])
            if old is not None:
                old.close()
            self._cmd_status([])

        def _embedded(self, command: str) -> Client:
            client = self.client
            if not hasattr(client, "backend"):
                raise HeaderError(f"%convex {command} needs the embedded store")
            return client

        def _cmd_functions(self, args: list[str]) -> Any:
            import pandas as pd

            rows = self.client.describe_functions()  # a served store: needs the admin key
            return pd.DataFrame(rows, columns=["path", "kind", "visibility"])

        def _cmd_tables(self, args: list[str]) -> Any:
            import pandas as pd

            rows = [
                {"table": t["table"], "indexes": ", ".join(t["indexes"])}
                for t in self.client.describe_tables()
            ]
            return pd.DataFrame(rows, columns=["table", "indexes"])

        def _call(self, kind: str, args: list[str]) -> Any:
            if not args:
                raise HeaderError(f"Usage: %convex {kind} PATH key=value ...")
            client = self.client
            values = parse_key_values(args[1:])
            if not hasattr(client, "backend"):  # remote: the owner's admin key allows internals
                return getattr(client, kind)(args[0], values)
            # The line magics act for the notebook's owner: internal functions are allowed.
            return client.backend.call(args[0], values, kind=kind, identity=None, public_only=False)

        def _cmd_query(self, args: list[str]) -> Any:
            from kernel_ext.client.dataframe import to_dataframe

            return to_dataframe(self._call("query", args))

        def _cmd_mutation(self, args: list[str]) -> Any:
            result = self._call("mutation", args)
            client = self.client
            if hasattr(client, "backend"):
                client.backend.subscriptions.wait_processed(client.backend.store.ts)
            return result

        def _cmd_serve(self, args: list[str]) -> None:
            """`serve [--port N]`: serve this kernel's store; `serve stop` stops it."""
            from kernel_ext.sync.background import BackgroundServer

            current = getattr(self, "_server", None)
            if args == ["stop"]:
                if current is not None:
                    current.stop()
                    self._server = None
                    print("convex: stopped serving")
                return
            if current is not None:
                print(f"convex: already serving {current.url}")
                return
            port = 0
            if args[:1] == ["--port"] and len(args) == 2 and args[1].isdigit():
                port = int(args[1])
            elif args:
                raise HeaderError("Usage: %convex serve [--port N] | %convex serve stop")
            self._server = BackgroundServer(self._embedded("serve").backend, port=port)
            print(f"convex: serving {self._server.url}")
            print(f"  admin key: {self._server.admin_key}")

        def _cmd_action(self, args: list[str]) -> Any:
            return self._call("action", args)

    return ConvexMagics(shell)


class _SchemaSummary:
    def __init__(self, schema: Any) -> None:
        self.schema = schema

    def __repr__(self) -> str:
        lines = ["schema:"]
        for name, table in self.schema.tables.items():
            indexes = ", ".join(f"{i.name}{list(i.fields)}" for i in table.indexes)
            lines.append(f"  {name}" + (f"  indexes: {indexes}" if indexes else ""))
        return "\n".join(lines)


def _build_function(
    shell: InteractiveShell, kind: str, *, header_line: str, body: str
) -> tuple[FunctionHeader, Any]:
    """Compile the cell body against the notebook's namespace (helpers from earlier cells
    work); nothing is registered if anything fails."""
    source = f"%%convex_{kind} {header_line}\n{body}"
    filename = shell.compile.cache(source)
    return compile_function(kind, header_line, body, shell.user_ns, filename)  # type: ignore[arg-type]


def load_ipython_extension(shell: InteractiveShell) -> None:
    """`%load_ext kernel_ext`: connect the default client and inject `convex`, `api`, `v`,
    `define_schema`, `define_table`. Loading again keeps the existing client."""
    from kernel_ext import api, define_schema, define_table, v

    client = shell.user_ns.get("convex")
    if client is None or getattr(client, "_closed", True):
        shell.user_ns["convex"] = _default_client()
    shell.user_ns.update(api=api, v=v, define_schema=define_schema, define_table=define_table)
    shell.register_magics(_make_magics(shell))


def unload_ipython_extension(shell: InteractiveShell) -> None:
    """Close the client that `load_ipython_extension` opened."""
    client = shell.user_ns.pop("convex", None)
    if client is not None:
        client.close()

"""Compile a magic cell into a function or a schema, without IPython.

The notebook's magics use this with the notebook's namespace; a server uses it with a fresh
namespace for cells pushed by a remote kernel (which carry only their own source).
"""

from __future__ import annotations

from typing import Any, Final

from kernel_ext.functions.headers import (
    FunctionHeader,
    HeaderError,
    build_handler_ast,
    parse_header,
)
from kernel_ext.functions.registration import FunctionDefinition, FunctionKind
from kernel_ext.store.schema import (
    SchemaDefinition,
    TableDefinition,
    define_schema,
    define_table,
)

__all__ = ["KINDS", "base_namespace", "compile_function", "compile_schema", "split_cell"]

#: Cell magic name -> function kind.
KINDS: Final[dict[str, FunctionKind]] = {
    "convex_query": "query",
    "convex_mutation": "mutation",
    "convex_action": "action",
}


def base_namespace() -> dict[str, Any]:
    """The names every cell body may use without importing them, on every store: those
    `%load_ext` promises (`api`, `v`, `define_schema`, `define_table`, `UNDEFINED`) and the
    function-level names of `kernel_ext` (`ConvexError`, `query`, `internal`, ...). A pushed
    cell gets these alone; a notebook's cell gets them under the notebook's own names.
    """
    from kernel_ext.errors import ConvexError
    from kernel_ext.functions import registration
    from kernel_ext.functions.registry import FunctionReference, api, internal
    from kernel_ext.store.schema import define_table
    from kernel_ext.store.validators import v
    from kernel_ext.store.values import UNDEFINED

    decorators = ("query", "mutation", "action")
    return {
        "UNDEFINED": UNDEFINED,
        "ConvexError": ConvexError,
        "FunctionReference": FunctionReference,
        "api": api,
        "internal": internal,
        "v": v,
        "define_schema": define_schema,
        "define_table": define_table,
        **{name: getattr(registration, name) for name in decorators},
        **{f"internal_{name}": getattr(registration, f"internal_{name}") for name in decorators},
    }


def split_cell(source: str) -> tuple[str, str, str]:
    """`"%%convex_query line\\nbody"` -> `("convex_query", "line", "body")`.

    Raises:
        HeaderError: the text does not start with a convex cell magic.
    """
    first, _, body = source.partition("\n")
    magic, _, line = first.strip().partition(" ")
    name = magic.removeprefix("%%")
    if not magic.startswith("%%") or (name not in KINDS and name != "convex_schema"):
        raise HeaderError(f"Not a convex cell: {first[:80]!r}")
    return name, line, body


def compile_function(
    kind: FunctionKind, line: str, body: str, namespace: dict[str, Any], filename: str
) -> tuple[FunctionHeader, FunctionDefinition]:
    """Build the function a `%%convex_<kind> line` cell defines; its globals are `namespace`.

    Raises:
        HeaderError: a bad header or a validator that fails to evaluate.
        SyntaxError: in the body (at the cell's own line).
    """
    from kernel_ext.store.validators import v
    from kernel_ext.store.values import UNDEFINED

    header = parse_header(line)
    code = compile(build_handler_ast(header, body, filename), filename, "exec")
    scope = {"v": v, **namespace}
    validators = {}
    for param in header.params:
        try:
            validators[param.name] = eval(param.validator, scope)
        except Exception as exc:
            raise HeaderError(
                f"The validator of {param.name!r} ({param.validator}) failed: {exc}"
            ) from exc
    local: dict[str, Any] = {}
    exec(code, namespace, local)
    handler = local["handler"]
    handler.__name__ = handler.__qualname__ = header.name
    # Tracebacks and remote errors name the function, not the compiler's `handler`.
    handler.__code__ = handler.__code__.replace(co_name=header.name, co_qualname=header.name)
    if header.params:  # an optional argument left out is UNDEFINED in the body
        handler.__kwdefaults__ = dict.fromkeys((p.name for p in header.params), UNDEFINED)
    source = f"%%convex_{kind} {line}\n{body}"
    function = FunctionDefinition(
        kind,
        handler,
        v.object(validators),  # type: ignore[arg-type]
        None,
        header.internal,
        source,
    )
    return header, function


def compile_schema(body: str, namespace: dict[str, Any], filename: str) -> SchemaDefinition:
    """The schema a `%%convex_schema` cell defines: `schema = define_schema(...)`, or one
    `name = define_table(...)` per table.

    Raises:
        HeaderError: the cell defines no table.
    """
    from kernel_ext.store.validators import v

    scope = {**namespace, "v": v, "define_table": define_table, "define_schema": define_schema}
    local: dict[str, Any] = {}
    # One blank line for the `%%convex_schema` line: errors name the cell's own line numbers.
    exec(compile("\n" + body, filename, "exec"), scope, local)
    schema = local.get("schema")
    if isinstance(schema, SchemaDefinition):
        return schema
    tables = {k: x for k, x in local.items() if isinstance(x, TableDefinition)}
    if not tables:
        raise HeaderError(
            "%%convex_schema: define tables as `name = define_table({...})` or set "
            "`schema = define_schema({...})`"
        )
    return define_schema(tables)


def names_left_behind(header: FunctionHeader, body: str, notebook: dict[str, Any]) -> list[str]:
    """The names a cell's body reads that only the notebook defines: a served store compiles
    the pushed cell with `base_namespace()` alone, so they would be undefined there.

    Conservative (it may miss a name, it does not invent one): every name the body binds
    anywhere (assignments, imports, definitions, loop and comprehension targets) counts as
    its own.
    """
    import ast
    import builtins

    try:
        tree = ast.parse(body)
    except SyntaxError:
        return []  # compiling the cell reports it
    read: set[str] = set()
    bound = {p.name for p in header.params} | {"ctx", "db", "auth"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    known = bound | set(base_namespace()) | set(dir(builtins))
    return sorted(name for name in read - known if name in notebook)

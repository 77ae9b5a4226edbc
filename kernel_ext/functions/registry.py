"""Function paths, references (`api`), the registry and loading a functions folder.

Paths are `"module:name"`; `module` may contain `/` for subfolders (`"admin/users:ban"`).
Canonical forms: `"users"` means `"users:default"`, and a `.js`/`.py` suffix on the module is
dropped (`"users.js:get"` is `"users:get"`), as Convex clients send them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel_ext.errors import SchemaError, UnknownFunction, ValidationError, WrongFunctionKind
from kernel_ext.functions.crons import CronJobs
from kernel_ext.functions.http_actions import HttpRouter
from kernel_ext.functions.registration import FunctionDefinition, FunctionKind
from kernel_ext.store.schema import SchemaDefinition

__all__ = [
    "FunctionReference",
    "FunctionRegistry",
    "LoadedFolder",
    "api",
    "canonical_path",
    "internal",
    "load_folder",
    "path_of",
]


@functools.lru_cache(maxsize=4096)
def canonical_path(path: str) -> str:
    """The canonical `"module:name"` form of a function path.

    Raises:
        UnknownFunction: `path` is not a string of that form.
    """
    if not isinstance(path, str) or not path or path.count(":") > 1:
        raise UnknownFunction(
            f"Invalid function path {path!r}: use 'module:name' (e.g. 'users:get_user_by_email')"
        )
    module, _, name = path.partition(":")
    for suffix in (".js", ".ts", ".py"):
        if module.endswith(suffix):
            module = module[: -len(suffix)]
    return f"{module}:{name or 'default'}"


@dataclass(frozen=True)
class FunctionReference:
    """A reference to a function by path; `api.users.get` is `FunctionReference("users:get")`."""

    path: str

    def __str__(self) -> str:
        return self.path


class _ApiNamespace:
    """`api.a.b.c` -> reference to `"a/b:c"`; usable wherever a function is named."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        self._parts = parts

    def __getattr__(self, name: str) -> _ApiNamespace:
        if name.startswith("__"):
            raise AttributeError(name)
        return _ApiNamespace((*self._parts, name))

    @property
    def path(self) -> str:
        """The function path this reference names."""
        if len(self._parts) < 2:
            raise UnknownFunction(
                f"api.{'.'.join(self._parts)} names a module; add the function: "
                f"api.{'.'.join(self._parts) or 'module'}.function_name"
            )
        return f"{'/'.join(self._parts[:-1])}:{self._parts[-1]}"

    def __repr__(self) -> str:
        return f"<function reference {self.path}>" if len(self._parts) >= 2 else "api"


#: References to functions: `api.users.get_user_by_email`.
api: Any = _ApiNamespace(())
#: The same namespace, conventionally used to name internal functions.
internal: Any = _ApiNamespace(())


def path_of(ref: Any) -> str:
    """The canonical path of a reference, path string or registered `FunctionDefinition`."""
    if type(ref) is str:  # the common case first
        return canonical_path(ref)
    if isinstance(ref, FunctionReference | _ApiNamespace):
        return canonical_path(ref.path)
    if isinstance(ref, FunctionDefinition):
        if ref.path is None:
            raise UnknownFunction(
                f"{ref.handler.__name__} is not registered; load its module with "
                "client.load_functions(folder) or name it by path"
            )
        return ref.path
    if isinstance(ref, str):
        return canonical_path(ref)
    raise UnknownFunction(f"Name a function by path ('module:name') or api reference, got {ref!r}")


class FunctionRegistry:
    """Functions by path. Thread-safe; redefining a path replaces the function."""

    def __init__(self) -> None:
        self._functions: dict[str, FunctionDefinition] = {}
        self._lock = threading.Lock()

    def register(self, path: str, function: FunctionDefinition) -> str:
        """Register `function` at `path`; returns the canonical path."""
        canonical = canonical_path(path)
        function.path = canonical
        with self._lock:
            self._functions[canonical] = function
        return canonical

    def unregister(self, path: str) -> None:
        """Remove a function (no-op if absent)."""
        with self._lock:
            self._functions.pop(canonical_path(path), None)

    def paths(self) -> list[str]:
        """Every registered path, sorted."""
        with self._lock:
            return sorted(self._functions)

    def get(self, path: str) -> FunctionDefinition | None:
        """The function at `path`, or None."""
        with self._lock:
            return self._functions.get(path)

    def lookup(
        self, ref: Any, kind: FunctionKind | None, *, public_only: bool
    ) -> FunctionDefinition:
        """The function named by `ref`, checked for kind and visibility.

        Raises:
            UnknownFunction: no function there, or it is internal and `public_only`.
            WrongFunctionKind: it is of another kind than `kind`.
        """
        path = path_of(ref)
        function = self._functions.get(path)  # one dict read is atomic: no lock needed
        if function is None or (public_only and function.internal):
            known = ", ".join(
                p for p in self.paths() if not public_only or not self._functions[p].internal
            )
            raise UnknownFunction(
                f"Could not find public function for '{path}'. Registered: {known or 'none'}"
                if public_only
                else f"Could not find function for '{path}'. Registered: {known or 'none'}"
            )
        if kind is not None and function.kind != kind:
            raise WrongFunctionKind(
                f"Trying to execute {path} as {kind.capitalize()}, but it is defined as "
                f"{function.kind.capitalize()}."
            )
        return function


@dataclass(frozen=True)
class LoadedFolder:
    """What `load_folder` found: functions by path, the schema (or None) and the HTTP
    router of `http.py` (or None)."""

    functions: dict[str, FunctionDefinition]
    schema: SchemaDefinition | None
    http: HttpRouter | None = None
    #: The crons of `crons.py` (None: the folder has none).
    crons: CronJobs | None = None


def load_folder(folder: str | Path) -> LoadedFolder:
    """Import every module of a functions folder (subfolders too) and collect its functions.

    Modules are imported as submodules of a private package, so they can import each other
    relatively (`from . import helpers`). `schema.py` must define `schema`; `http.py`, if
    there is one, `http` (an `HttpRouter`).

    Raises:
        FileNotFoundError: the folder does not exist.
        SchemaError: `schema.py` has no valid `schema`.
        ValidationError: `crons.py` has no `crons = cron_jobs()`, or a cron is bad.
        ValidationError: `http.py` has no `http` router, or it routes badly.
        Exception: whatever a module raised while being imported (with a note naming it).
    """
    root = Path(folder).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"Functions folder {str(folder)!r} does not exist")
    package = _package_for(root)
    functions: dict[str, FunctionDefinition] = {}
    schema: SchemaDefinition | None = None
    crons: CronJobs | None = None
    http: HttpRouter | None = None
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root).with_suffix("")
        if any(part.startswith(("_", ".")) for part in relative.parts):
            continue
        module = _import(f"{package}.{'.'.join(relative.parts)}", file)
        if relative.as_posix() == "schema":
            schema = _schema_of(module, file)
            continue
        if relative.as_posix() == "crons":
            crons = _crons_of(module, file)
        if relative.as_posix() == "http":
            http = _router_of(module, file)
        for name, value in vars(module).items():
            if isinstance(value, FunctionDefinition) and not name.startswith("_"):
                functions[f"{relative.as_posix()}:{name}"] = value
    return LoadedFolder(functions, schema, http, crons=crons)


def _package_for(root: Path) -> str:
    name = "convex_functions_" + hashlib.sha1(str(root).encode()).hexdigest()[:10]
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]  # reloading picks up edited files
    package = types.ModuleType(name)
    package.__path__ = [str(root)]
    sys.modules[name] = package
    return name


def _import(module_name: str, file: Path) -> types.ModuleType:
    parent = module_name.rpartition(".")[0]
    if parent not in sys.modules:
        sub = types.ModuleType(parent)
        sub.__path__ = [str(file.parent)]
        sys.modules[parent] = sub
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        exc.add_note(f"while loading functions module {file}")
        raise


def _crons_of(module: types.ModuleType, file: Path) -> CronJobs:
    crons = getattr(module, "crons", None)
    if not isinstance(crons, CronJobs):
        raise ValidationError(
            f"{file} must define `crons = cron_jobs()` (from kernel_ext import cron_jobs), "
            f"found {type(crons).__name__}"
        )
    return crons


def _schema_of(module: types.ModuleType, file: Path) -> SchemaDefinition:
    schema = getattr(module, "schema", None)
    if not isinstance(schema, SchemaDefinition):
        raise SchemaError(
            f"{file} must define `schema = define_schema({{...}})`, found {type(schema).__name__}"
        )
    return schema


def _router_of(module: types.ModuleType, file: Path) -> HttpRouter:
    """`http.py`'s router: its `http` (only that name routes requests)."""
    router = getattr(module, "http", None)
    if not isinstance(router, HttpRouter):
        raise ValidationError(
            f"{file} must define `http = http_router()` (with http.route(...) calls), found "
            f"{type(router).__name__}"
        )
    return router

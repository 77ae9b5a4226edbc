"""Parsing for the cell and line magics (pure: no IPython, no store).

Header grammar of `%%convex_query`, `%%convex_mutation`, `%%convex_action`::

    [module:]name[(arg: validator, ...)] [--internal] [--live [key=value ...] [--name NAME]]

Values in `key=value` are Python literals (`n=3`, `done=True`, `title='a b'`); anything else is
taken as a string.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kernel_ext.errors import HeaderError

__all__ = [
    "GRAMMAR",
    "FunctionHeader",
    "HeaderError",
    "Param",
    "build_handler_ast",
    "parse_header",
    "parse_key_values",
    "split_words",
    "unquote",
]

GRAMMAR: Final = (
    "[module:]name[(arg: validator, ...)] [--internal] [--live [key=value ...] [--name NAME]],"
    " e.g.\n"
    "  %%convex_query users:get_user_by_email(email: v.string())\n"
    "  %%convex_query tasks:open --live --name t"
)
DEFAULT_MODULE: Final = "notebook"
RESERVED: Final = frozenset({"ctx", "db", "auth"})
_NAME: Final = re.compile(r"\s*(?:(?P<module>[A-Za-z_][\w/]*):)?(?P<name>[A-Za-z_]\w*)")


@dataclass(frozen=True)
class Param:
    """One declared argument: its name and the source of its validator expression."""

    name: str
    validator: str


@dataclass(frozen=True)
class FunctionHeader:
    """A parsed header line."""

    module: str
    name: str
    params: tuple[Param, ...] = ()
    internal: bool = False
    live: bool = False
    live_args: dict[str, Any] = field(default_factory=dict)
    #: `--name t`: the notebook name the live table is bound to.
    live_name: str | None = None

    @property
    def path(self) -> str:
        """`module:name`."""
        return f"{self.module}:{self.name}"

    def signature(self) -> str:
        """`name(arg: validator, ...)` as the user wrote it."""
        return f"{self.path}({', '.join(f'{p.name}: {p.validator}' for p in self.params)})"

    def live_title(self, args: Mapping[str, Any] | None = None) -> str:
        """What a live table of this function shows: `path`, or `path(k=v, ...)` with `args`
        (default: the `--live` arguments)."""
        args = self.live_args if args is None else args
        if not args:
            return self.path
        return f"{self.path}({', '.join(f'{k}={x!r}' for k, x in args.items())})"


def _error(problem: str) -> HeaderError:
    return HeaderError(f"{problem}\nThe header is: {GRAMMAR}")


def parse_header(line: str, *, default_module: str = DEFAULT_MODULE) -> FunctionHeader:
    """Parse a function magic's header line.

    Raises:
        HeaderError: naming the problem and showing the grammar.
    """
    match = _NAME.match(line)
    if match is None:
        raise _error(f"Expected a function name, got {line.strip()!r}.")
    rest = line[match.end() :]
    params: tuple[Param, ...] = ()
    if rest.lstrip().startswith("("):
        signature, rest = _split_parenthesized(rest.lstrip())
        params = _parse_params(match["name"], signature)
    flags = _split_flags(rest)
    internal, live, live_args, live_name = _parse_flags(flags)
    return FunctionHeader(
        match["module"] or default_module,
        match["name"],
        params,
        internal,
        live,
        live_args,
        live_name,
    )


def _split_parenthesized(text: str) -> tuple[str, str]:
    """Split `(...) rest` at the parenthesis that closes the first one."""
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth == 0:
                    end = token.end[1]
                    return text[:end], text[end:]
    except (tokenize.TokenError, SyntaxError):
        pass
    raise _error("Unbalanced parentheses in the argument list.")


def _parse_params(name: str, signature: str) -> tuple[Param, ...]:
    source = f"def {name}{signature}: pass"
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise _error(f"Cannot read the argument list {signature}: {exc.msg}.") from None
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    args = fn.args
    if args.vararg or args.kwarg or args.posonlyargs or args.kwonlyargs or args.defaults:
        raise _error("Arguments are written `name: validator`, without defaults, * or **.")
    params = []
    for arg in args.args:
        if arg.annotation is None:
            raise _error(f"Argument {arg.arg!r} needs a validator, e.g. `{arg.arg}: v.string()`.")
        if arg.arg in RESERVED:
            raise _error(f"Argument name {arg.arg!r} is reserved (ctx, db and auth are in scope).")
        validator = ast.get_source_segment(source, arg.annotation)
        assert validator is not None
        params.append(Param(arg.arg, validator))
    return tuple(params)


def _split_flags(text: str) -> list[str]:
    try:
        return split_words(text)
    except HeaderError as exc:
        raise _error(f"Cannot read the options {text.strip()!r}: {exc}") from None


def split_words(text: str) -> list[str]:
    """Split at whitespace outside quotes and brackets, keeping the quotes: `x='1' t='a b'
    y=[1, 2]` -> `["x='1'", "t='a b'", "y=[1, 2]"]`, so that `'1'` stays a string literal
    (shell-style splitting would strip the quotes and make it the number 1).

    Raises:
        HeaderError: a quote is not closed.
    """
    words: list[str] = []
    current: list[str] = []
    quote: str | None = None
    escaped = False
    depth = 0
    for ch in text:
        if quote is not None:
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch.isspace() and depth == 0:
            if current:
                words.append("".join(current))
                current = []
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}" and depth:
            depth -= 1
        current.append(ch)
    if quote is not None:
        raise HeaderError(
            f"A {quote} quote is not closed in {text.strip()!r}; quote a value that holds one "
            'with the other kind, e.g. note="don\'t"'
        )
    if current:
        words.append("".join(current))
    return words


def unquote(word: str) -> str:
    """A word without its quotes if it is one quoted string (`'a b'` -> `a b`)."""
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        try:
            value = ast.literal_eval(word)
        except (ValueError, SyntaxError):
            return word
        if isinstance(value, str):
            return value
    return word


def _parse_flags(flags: list[str]) -> tuple[bool, bool, dict[str, Any], str | None]:
    internal = live = False
    name: str | None = None
    pending: list[str] = []
    words = iter(flags)
    for flag in words:
        if flag == "--internal":
            internal = True
        elif flag == "--live":
            live = True
        elif flag == "--name":
            name = next(words, "")
            if not name.isidentifier():
                raise _error(f"--name takes a Python name for the live table, got {name!r}.")
        elif live and "=" in flag and not flag.startswith("--"):
            pending.append(flag)
        else:
            raise _error(f"Unknown option {flag!r}.")
    if name is not None and not live:
        raise _error("--name names the live table: use it with --live.")
    return internal, live, parse_key_values(pending), name


def parse_key_values(tokens: list[str]) -> dict[str, Any]:
    """`["n=3", "title='a b'", "x='1'", "tag=red"]` (words from `split_words`) ->
    `{"n": 3, "title": "a b", "x": "1", "tag": "red"}`: Python literals, else strings.

    Raises:
        HeaderError: a token is not `key=value`.
    """
    values: dict[str, Any] = {}
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not key.isidentifier():
            raise HeaderError(f"Expected key=value, got {token!r} (e.g. n=3 done=True title='a b')")
        try:
            values[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            values[key] = raw
    return values


def build_handler_ast(header: FunctionHeader, body: str, filename: str) -> ast.Module:
    """A module defining `handler(ctx, *, <args>)` whose body is the cell body, with `db` and
    `auth` bound from `ctx`. Body line `i` keeps line `i + 1` (the cell's header is line 1),
    so tracebacks and syntax errors point at the user's own lines.

    Raises:
        SyntaxError: in the body, located at the cell's line.
    """
    try:
        body_tree = ast.parse(body or "pass", filename=filename)
    except SyntaxError as exc:
        exc.lineno = (exc.lineno or 0) + 1
        if exc.end_lineno is not None:
            exc.end_lineno += 1
        raise
    ast.increment_lineno(body_tree, 1)
    params = ", ".join(p.name for p in header.params)
    shell = ast.parse(
        f"def handler(ctx, *, {params}): pass" if params else "def handler(ctx): pass"
    )
    fn = shell.body[0]
    assert isinstance(fn, ast.FunctionDef)
    prologue = ast.parse("db = getattr(ctx, 'db', None)\nauth = ctx.auth").body
    for node in prologue:
        for child in ast.walk(node):
            if hasattr(child, "lineno"):
                child.lineno = child.end_lineno = 1  # type: ignore[attr-defined]
    fn.body = [*prologue, *(body_tree.body or [ast.Pass()])]
    return ast.fix_missing_locations(shell)

"""Function definitions: `@query`, `@mutation`, `@action` and their `internal_` forms.

    @query(args={"email": v.string()})
    def get_user_by_email(ctx, email): ...

A decorated handler becomes a `FunctionDefinition`; registering it under a path (by loading
its module or through a magic) makes it callable as `"module:name"`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from kernel_ext.store.validators import ObjectValidator, Validator, v

__all__ = [
    "FunctionDefinition",
    "FunctionKind",
    "action",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "query",
]

FunctionKind = Literal["query", "mutation", "action"]
Handler = Callable[..., Any]


@dataclass
class FunctionDefinition:
    """A server function: its kind, handler, validators and visibility.

    `args` is None when the function accepts any arguments object. `source` is the code that
    defined it, when known (sent to a server when a function is pushed).
    """

    kind: FunctionKind
    handler: Handler
    args: ObjectValidator | None = None
    returns: Validator | None = None
    internal: bool = False
    source: str | None = None
    path: str | None = field(default=None, compare=False)

    @property
    def visibility(self) -> str:
        """ "internal" or "public"."""
        return "internal" if self.internal else "public"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Functions are called through a client or `ctx.run_*`, never directly."""
        raise TypeError(
            f"{self.handler.__name__} is a Convex {self.kind}; call it with "
            f"client.{self.kind}(...) or ctx.run_{self.kind}(...), not directly"
        )


def _args_validator(args: Mapping[str, Validator] | Validator | None) -> ObjectValidator | None:
    if args is None:
        return None
    if isinstance(args, ObjectValidator):
        return args
    if isinstance(args, Mapping):
        validator = v.object(args)
        assert isinstance(validator, ObjectValidator)
        return validator
    raise TypeError(f"args= must be a dict of validators or v.object(...), got {args!r}")


def _definer(kind: FunctionKind, internal: bool) -> Any:
    @overload
    def define(fn: Handler, /) -> FunctionDefinition: ...

    @overload
    def define(
        *, args: Mapping[str, Validator] | Validator | None = None, returns: Validator | None = None
    ) -> Callable[[Handler], FunctionDefinition]: ...

    def define(
        fn: Handler | None = None,
        /,
        *,
        args: Mapping[str, Validator] | Validator | None = None,
        returns: Validator | None = None,
    ) -> Any:
        if returns is not None and not isinstance(returns, Validator):
            raise TypeError(f"returns= must be a validator such as v.string(), got {returns!r}")
        validator = _args_validator(args)

        def wrap(handler: Handler) -> FunctionDefinition:
            if not callable(handler):
                raise TypeError(f"@{kind} decorates a function, got {handler!r}")
            return FunctionDefinition(kind, handler, validator, returns, internal)

        return wrap if fn is None else wrap(fn)

    prefix = "internal_" if internal else ""
    define.__name__ = define.__qualname__ = f"{prefix}{kind}"
    define.__doc__ = (
        f"Define {'an internal' if internal else 'a public'} {kind}: use as `@{prefix}{kind}` or "
        f"`@{prefix}{kind}(args={{...}}, returns=...)`."
    )
    return define


query = _definer("query", False)
mutation = _definer("mutation", False)
action = _definer("action", False)
internal_query = _definer("query", True)
internal_mutation = _definer("mutation", True)
internal_action = _definer("action", True)

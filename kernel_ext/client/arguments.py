"""Function arguments as the clients take them: a dict, keywords, or both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kernel_ext.errors import ValidationError

__all__ = ["merge_args"]


def merge_args(args: Mapping[str, Any] | None, kwargs: dict[str, Any]) -> Any:
    """`args` and `kwargs` as one argument object (`args` itself when there are no keywords,
    so that a wrong type still reaches the function's own, clearer check).

    Raises:
        ValidationError: keywords beside `args` that is not a dict, or a name given both ways.
    """
    if args is None:
        return kwargs
    if not kwargs:
        return args
    if not isinstance(args, Mapping):
        raise ValidationError("Pass arguments as a dict or as keywords, not both")
    twice = sorted(set(args) & set(kwargs))
    if twice:
        names = ", ".join(repr(n) for n in twice)
        raise ValidationError(f"Argument {names} given twice: in the dict and as a keyword")
    return {**args, **kwargs}

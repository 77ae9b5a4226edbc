"""Warnings about code that runs but likely does not do what was meant, once per user function.

`warn_once(topic, message)` issues a `StoreWarning` attributed to the user's line (the nearest
caller outside this package, e.g. the handler's `ctx.db.query("carz")`), at most once per user
function and topic: a live query re-runs its function on every commit, and one warning is
enough. Python's warning filters still apply (`error` turns it into an exception).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Hashable
from pathlib import Path
from types import FrameType
from typing import Final

from kernel_ext.errors import StoreWarning

__all__ = ["warn_once"]

_PACKAGE_DIR: Final = str(Path(__file__).resolve().parent.parent)
#: Keys already warned about. `dict.setdefault` on it is atomic (one bytecode-level call on
#: keys of str, int and tuples), so two threads never both warn for one key, without a lock.
_warned: dict[tuple[str, str, int, Hashable], object] = {}


def _user_frame() -> FrameType | None:
    """The nearest frame on the stack whose code is not the library's."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    return frame


def warn_once(topic: Hashable, message: str) -> None:
    """Warn `message` (a `StoreWarning`) unless the calling user function already got a
    warning on `topic` (e.g. `("table", "carz")`) in this process."""
    frame = _user_frame()
    if frame is None:  # called from the library alone: nobody to point at
        warnings.warn(message, StoreWarning, stacklevel=2)
        return
    code = frame.f_code
    key = (code.co_filename, code.co_qualname, code.co_firstlineno, topic)
    token = object()
    if _warned.setdefault(key, token) is not token:
        return
    module_globals = frame.f_globals
    warnings.warn_explicit(
        message,
        StoreWarning,
        code.co_filename,
        frame.f_lineno,
        module=module_globals.get("__name__"),
        module_globals=module_globals,
    )

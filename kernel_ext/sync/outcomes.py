"""What a function call produced, as the wire carries it: a value, or an error as data.

Errors cross the wire as data, never as exception objects or tracebacks:

- `ConvexError`: the message plus its `data`, delivered to the client unchanged
  (`errorData`), so the official clients raise their own `ConvexError` with `.data`.
- The library's own user-facing errors (unknown function, bad arguments, a conflict, ...):
  their message, which says what to fix, and their class's `code` (`errorCode`).
- Any other exception a handler raised: `Uncaught <Type>: <message>`, with no traceback and
  no notes.
- Anything else (a bug or a storage failure on the server): a generic `Server Error`; the
  details are logged on the server only.
"""

from __future__ import annotations

import base64
import functools
import logging
import math
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from kernel_ext.errors import (
    ArgumentError,
    ConvexError,
    DocumentNotFound,
    FunctionError,
    QueryError,
    SchemaError,
    StoreError,
    SyncError,
    TransactionError,
    ValidationError,
)
from kernel_ext.store.values import UNDEFINED, Value, normalize, to_json

if TYPE_CHECKING:
    from kernel_ext.store.views import ResultDiff

__all__ = ["SERVER_ERROR", "Outcome", "outcome_of_error", "to_clean_json"]

_log = logging.getLogger(__name__)

#: The message a client gets for a failure whose details must stay on the server.
SERVER_ERROR: Final = "Server Error"

# Library errors whose messages are written for the caller (they name what to fix).
_USER_FACING: Final = (
    ValidationError,
    FunctionError,
    QueryError,
    SchemaError,
    DocumentNotFound,
    TransactionError,
    SyncError,
)
# Backend.invoke adds this note to every exception a handler raised.
_HANDLER_NOTE: Final = "raised by "


@dataclass(frozen=True)
class Outcome:
    """The result of one function execution, ready to be put on the wire.

    Attributes:
        success: whether the function returned.
        value: its (normalized Convex) value when `success`.
        error_message: the message shown to the client when not `success`.
        error_data: a `ConvexError`'s data, or `UNDEFINED` when there is none.
        error_code: the library error's `code` (`errorCode` on the wire), so that clients
            pick an error class by code, never by parsing the message; None otherwise.
        log_lines: console lines of the execution (`"[LOG] 'text'"`).
        diff: for a maintained view's result, how it changed the view's previous result
            (`store.views.ResultDiff`); None when not known. A client that asked for diffs
            may be sent it instead of the value (`protocol.SyncProtocol`).
    """

    success: bool
    value: Value = None
    error_message: str = ""
    error_data: Value = UNDEFINED
    log_lines: tuple[str, ...] = field(default=())
    error_code: str | None = None
    diff: ResultDiff | None = field(default=None, compare=False)

    @classmethod
    def ok(
        cls, value: Value, log_lines: tuple[str, ...] = (), diff: ResultDiff | None = None
    ) -> Outcome:
        """A successful outcome carrying `value` (and the view's `diff`, if known)."""
        return cls(True, value, log_lines=log_lines, diff=diff)

    @classmethod
    def failure(cls, message: str, data: Value = UNDEFINED, code: str | None = None) -> Outcome:
        """A failed outcome; `data` only for a `ConvexError`, `code` only for the library's
        own errors (a `StoreError.code`)."""
        return cls(False, None, message, data, error_code=code)

    @classmethod
    def bad_arguments(cls, detail: str) -> Outcome:
        """The failure of a call whose arguments could not even be read (an `ArgumentError`)."""
        return cls.failure(f"ArgumentValidationError: {detail}", code=ArgumentError.code)

    @functools.cached_property
    def json_value(self) -> Any:
        """`to_json(self.value)`, computed once (the fingerprint and the message share it:
        a whole result of a million documents is encoded once, not twice)."""
        return to_json(self.value)

    @property
    def has_error_data(self) -> bool:
        """True when the failure carries `ConvexError` data."""
        return self.error_data is not UNDEFINED

    def fingerprint(self) -> bytes:
        """Bytes equal for outcomes that a client must not be sent twice in a row."""
        body: Any
        if self.success:
            body = ["ok", self.json_value]
        else:
            data = to_json(self.error_data) if self.has_error_data else None
            body = ["err", self.error_message, self.error_code, self.has_error_data, data]
        return orjson.dumps([*body, list(self.log_lines)])


def outcome_of_error(exc: BaseException) -> Outcome:
    """The outcome a client sees for `exc` (see the module docstring)."""
    if isinstance(exc, ConvexError):
        return _convex_error(exc)
    notes = getattr(exc, "__notes__", ())
    if isinstance(exc, _USER_FACING) and not _raised_by_handler(notes):
        return Outcome.failure(str(exc), code=exc.code)
    if _raised_by_handler(notes):
        # A library error raised inside the handler (a bad index, a schema violation) keeps
        # its code, so remote callers can catch it by class as embedded ones do.
        code = exc.code if isinstance(exc, StoreError) else None
        message = f"Uncaught {type(exc).__name__}: {exc}{_user_line(exc)}"
        return Outcome.failure(message, code=code)
    if isinstance(exc, StoreError):
        _log.error("function call failed: %s", exc, exc_info=exc)
    else:
        _log.error("unexpected error in a function call", exc_info=exc)
    return Outcome.failure(SERVER_ERROR)


# Frames of the library's own files, of Python's standard library and of installed packages;
# the deepest other frame is the user's line (not `json.loads`'s when the handler called it).
_NOT_USER_CODE: Final = (
    str(Path(__file__).parent.parent) + "/",
    *sorted(
        {
            path.rstrip("/") + "/"
            for name in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(name))
        }
    ),
    "<frozen ",
)


def _user_line(exc: BaseException) -> str:
    """`"\n    at name (file:line)"` for the deepest frame of user code in `exc`'s traceback
    (a pushed cell's line counts from its `%%convex_*` header line); only the file's name,
    not the server's folders."""
    tb, where = exc.__traceback__, ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith(_NOT_USER_CODE):
            name = code.co_filename.rsplit("/", 1)[-1]
            where = f"\n    at {code.co_name} ({name}:{tb.tb_lineno})"
        tb = tb.tb_next
    return where


def _raised_by_handler(notes: Any) -> bool:
    return any(isinstance(n, str) and n.startswith(_HANDLER_NOTE) for n in notes)


def _convex_error(exc: ConvexError) -> Outcome:
    try:
        data = normalize(exc.data, limits=False)
    except ValidationError:
        # Data that is not a Convex value cannot travel; its text still can.
        return Outcome.failure(f"Uncaught ConvexError: {exc}")
    text = data if isinstance(data, str) else orjson.dumps(to_clean_json(data)).decode()
    return Outcome.failure(f"Uncaught ConvexError: {text}", data)


def to_clean_json(value: Value) -> Any:
    """The lossy "clean" JSON export: int64 as a decimal string, bytes as base64, NaN and
    infinities as strings."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [to_clean_json(x) for x in value]
    return {k: to_clean_json(x) for k, x in value.items()}

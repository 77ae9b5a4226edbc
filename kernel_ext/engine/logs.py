"""Console output of function executions, captured as Convex log lines.

While `capture_logs()` is active in the current context (thread), what a handler writes to
standard output (`print()`) becomes `[LOG] '<line>'`, and its `logging` records (any logger but
this library's own, at the levels the logging configuration lets through) become `[DEBUG]`,
`[INFO]`, `[WARN]` or `[ERROR]` lines: the format Convex sends in `logLines` and its clients
print. Outside a capture, output goes where it always went.

How, and what that changes for the process: the first capture replaces `sys.stdout` with a
router that passes writes through unless a capture is active (it is never removed; anything
that replaces `sys.stdout` later gets routed again at the next capture), and wraps the log
record factory (a factory, not a handler: a handler on the root logger would disable
`logging.basicConfig` and the last-resort handler). Standard error is left alone: logging's
handlers write there, and capturing it would report each record twice; for the same reason a
`logging.StreamHandler` writing to standard output is not captured as `[LOG]`.

Limits, as Convex's: 256 lines per execution (then one `[WARN]` line saying how many were
left out) and 4 KiB per line (cut, with a marker).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, Final, TextIO

__all__ = [
    "MAX_LINES",
    "MAX_LINE_BYTES",
    "LogLines",
    "capture_logs",
    "checkpoint",
    "format_line",
]

MAX_LINES: Final = 256
MAX_LINE_BYTES: Final = 4096
_TRUNCATED: Final = " (truncated)"
_LEVELS: Final = {"WARNING": "WARN", "CRITICAL": "ERROR"}

_current: contextvars.ContextVar[LogLines | None] = contextvars.ContextVar(
    "convex_log_lines", default=None
)


def format_line(level: str, text: str) -> str:
    """`[LEVEL] 'text'`: the text quoted like a string argument of `console.log`, cut to
    `MAX_LINE_BYTES` of UTF-8."""
    line = f"[{level}] {text!r}"
    if len(line.encode()) <= MAX_LINE_BYTES:
        return line
    room = MAX_LINE_BYTES - len(_TRUNCATED.encode())
    return line.encode()[:room].decode(errors="ignore") + _TRUNCATED


class LogLines:
    """The log lines of one execution, in order. Thread-safe (a captured context may be
    copied to other threads); text written after `finish()` goes to the real output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._omitted = 0
        # Standard output written without a newline yet: its pieces, and their length, which
        # stops growing past a line's limit (a progress bar must not grow it without end).
        self._partial: list[str] = []
        self._partial_length = 0
        self.finished = False

    def write(self, text: str) -> None:
        """Standard output: each completed line becomes a `[LOG]` line."""
        with self._lock:
            *complete, rest = text.split("\n")
            for piece in complete:
                self._append_partial(piece)
                self._add("LOG", "".join(self._partial))
                self._partial.clear()
                self._partial_length = 0
            self._append_partial(rest)

    def add(self, level: str, text: str) -> None:
        """One log line (beyond `MAX_LINES`, only counted)."""
        with self._lock:
            self._add(level, text)

    def finish(self) -> tuple[str, ...]:
        """The lines, including any unterminated text and the overflow notice; later writes
        are not captured."""
        with self._lock:
            self.finished = True
            if self._partial:
                self._add("LOG", "".join(self._partial))
                self._partial.clear()
            if self._omitted:
                notice = f"Log overflow (maximum {MAX_LINES}): {self._omitted} lines omitted"
                return (*self._lines, format_line("WARN", notice))
            return tuple(self._lines)

    def mark(self) -> tuple[int, int]:
        """A point to `rollback` to."""
        with self._lock:
            return len(self._lines), self._omitted

    def rollback(self, mark: tuple[int, int]) -> None:
        """Forget what was captured after `mark` (the output of a discarded attempt)."""
        with self._lock:
            del self._lines[mark[0] :]
            self._omitted = mark[1]
            self._partial.clear()
            self._partial_length = 0

    def _append_partial(self, piece: str) -> None:
        if piece and self._partial_length <= MAX_LINE_BYTES:
            self._partial.append(piece)
            self._partial_length += len(piece)

    def _add(self, level: str, text: str) -> None:
        if len(self._lines) < MAX_LINES:
            self._lines.append(format_line(level, text))
        else:
            self._omitted += 1


class capture_logs:  # noqa: N801 (used like a function: `with capture_logs() as lines`)
    """Capture this context's output as log lines until the block ends (see the module
    docstring). Nested captures each get their own lines. (A class rather than a generator
    context manager: it wraps every live query execution, and this costs a third as much.)"""

    __slots__ = ("_lines", "_token")

    def __enter__(self) -> LogLines:
        _install()
        self._lines = LogLines()
        self._token = _current.set(self._lines)
        return self._lines

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def checkpoint() -> Callable[[], None]:
    """A function that forgets what the current capture (if any) captures after this call:
    a mutation that is retried keeps only its last attempt's output."""
    lines = _current.get()
    if lines is None:
        return _nothing
    mark = lines.mark()
    return lambda: lines.rollback(mark)


def _nothing() -> None:
    """Forget nothing."""


def _capturing(lines: LogLines | None) -> bool:
    return lines is not None and not lines.finished


class _Router:
    """Stands in for `sys.stdout`: writes go to the current capture, if any, else to the
    stream it replaced (everything else is that stream's)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        lines = _current.get()
        # A logging handler writing here is reporting a record the capture has already.
        if not _capturing(lines) or sys._getframe(1).f_code is _STREAM_HANDLER_EMIT:
            return self._stream.write(text)
        assert lines is not None
        lines.write(text)
        return len(text)

    def writelines(self, texts: Any) -> None:
        for text in texts:
            self.write(text)

    def flush(self) -> None:
        if not _capturing(_current.get()):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_STREAM_HANDLER_EMIT: Final = logging.StreamHandler.emit.__code__


def _capturing_factory(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """Wraps the log record factory: a record made inside a capture also becomes a line."""

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        lines = _current.get()
        # The library's own records are about the server, not the function: never the caller's.
        own = record.name == "kernel_ext" or record.name.startswith("kernel_ext.")
        if _capturing(lines) and not own:
            assert lines is not None
            try:
                message = record.getMessage()
            except Exception:  # a bad format string in the handler's own call
                message = str(record.msg)
            lines.add(_LEVELS.get(record.levelname, record.levelname), message)
        return record

    return factory


_install_lock = threading.Lock()
_factory_installed = False


def _install() -> None:
    """Route standard output and log records through the captures (idempotent; routes
    standard output again if something has replaced it since)."""
    global _factory_installed
    if _factory_installed and (sys.stdout is None or isinstance(sys.stdout, _Router)):
        return
    with _install_lock:
        if sys.stdout is not None and not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not _factory_installed:
            logging.setLogRecordFactory(_capturing_factory(logging.getLogRecordFactory()))
            _factory_installed = True

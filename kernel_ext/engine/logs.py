"""Console output of function executions, captured as Convex log lines.

While `capture_logs()` is active in the current context (thread), what a handler writes to
standard output (`print()`) becomes `[LOG] '<line>'`, and its `logging` records (any logger but
this library's own, at the levels the logging configuration lets through) become `[DEBUG]`,
`[INFO]`, `[WARN]` or `[ERROR]` lines: the format Convex sends in `logLines` and its clients
print. Outside a capture, output goes where it always went (standard output is replaced by a
thin router that passes through). Standard error is left alone: logging's own handlers write
there, and capturing it would report each record twice.

Limits, as Convex's: 256 lines per execution (then one `[WARN]` line saying how many were
left out) and 4 KiB per line (cut, with a marker).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any, Final, TextIO

__all__ = ["MAX_LINE_BYTES", "MAX_LINES", "LogLines", "capture_logs", "format_line"]

MAX_LINES: Final = 256
MAX_LINE_BYTES: Final = 4096
_TRUNCATED: Final = " (truncated)"

_current: contextvars.ContextVar[LogLines | None] = contextvars.ContextVar(
    "convex_log_lines", default=None
)
_install_lock = threading.Lock()


def format_line(level: str, text: str) -> str:
    """`[LEVEL] 'text'`: the text quoted like a string argument of `console.log`, cut to
    `MAX_LINE_BYTES` of UTF-8."""
    line = f"[{level}] {text!r}"
    if len(line.encode()) <= MAX_LINE_BYTES:
        return line
    room = MAX_LINE_BYTES - len(_TRUNCATED.encode())
    return line.encode()[:room].decode(errors="ignore") + _TRUNCATED


class LogLines:
    """The log lines of one execution, in order."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._omitted = 0
        self._partial: dict[str, str] = {}  # text written without a newline yet, per level

    def write(self, level: str, text: str) -> None:
        """Text written to a stream: each completed line becomes a log line."""
        pending = self._partial.pop(level, "") + text
        *complete, rest = pending.split("\n")
        for line in complete:
            self.add(level, line)
        if rest:
            self._partial[level] = rest

    def add(self, level: str, text: str) -> None:
        """One log line (beyond `MAX_LINES`, only counted)."""
        if len(self._lines) < MAX_LINES:
            self._lines.append(format_line(level, text))
        else:
            self._omitted += 1

    def finish(self) -> tuple[str, ...]:
        """The lines, including any unterminated text and the overflow notice."""
        for level, rest in list(self._partial.items()):
            self.add(level, rest)
        self._partial.clear()
        if self._omitted:
            notice = f"Log overflow (maximum {MAX_LINES}): {self._omitted} lines omitted"
            return (*self._lines, format_line("WARN", notice))
        return tuple(self._lines)


@contextlib.contextmanager
def capture_logs() -> Iterator[LogLines]:
    """Capture this context's output as log lines until the block ends (see the module
    docstring). Nested captures each get their own lines."""
    _install()
    lines = LogLines()
    token = _current.set(lines)
    try:
        yield lines
    finally:
        _current.reset(token)


class _Router:
    """Stands in for `sys.stdout`: writes go to the current capture, if any, else
    to the stream it replaced (everything else is that stream's)."""

    def __init__(self, stream: TextIO, level: str) -> None:
        self._stream = stream
        self._level = level

    def write(self, text: str) -> int:
        lines = _current.get()
        if lines is None:
            return self._stream.write(text)
        lines.write(self._level, text)
        return len(text)

    def writelines(self, texts: Any) -> None:
        for text in texts:
            self.write(text)

    def flush(self) -> None:
        if _current.get() is None:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_LEVELS: Final = {"WARNING": "WARN", "CRITICAL": "ERROR"}


def _capturing_factory(make: Any) -> Any:
    """Wraps the log record factory: a record made inside a capture also becomes one of its
    lines. (A factory, not a handler: a handler on the root logger would disable
    `logging.basicConfig` and the last-resort handler for the whole process.)"""

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = make(*args, **kwargs)
        lines = _current.get()
        # The library's own records are about the server, not the function: never the caller's.
        if lines is not None and not record.name.startswith("kernel_ext"):
            try:
                message = record.getMessage()
            except Exception:  # a bad format string in the handler's own call
                message = str(record.msg)
            lines.add(_LEVELS.get(record.levelname, record.levelname), message)
        return record

    factory.capturing = True  # type: ignore[attr-defined]
    return factory


def _install() -> None:
    """Route standard output and logging through the captures (idempotent; again if
    something has replaced standard output since)."""
    if isinstance(sys.stdout, _Router) and getattr(
        logging.getLogRecordFactory(), "capturing", False
    ):
        return
    with _install_lock:
        if sys.stdout is not None and not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout, "LOG")
        make = logging.getLogRecordFactory()
        if not getattr(make, "capturing", False):
            logging.setLogRecordFactory(_capturing_factory(make))

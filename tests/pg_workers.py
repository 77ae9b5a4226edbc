"""Processes of the multi-process PostgreSQL tests (tests/persistence/test_pg_processes.py).

Each runs as `python tests/pg_workers.py <mode> <store url> <functions folder> [args]` (with
PYTHONPATH at the repository), opens the store with `kernel_ext.connect(url)`, loads the
functions folder and writes JSON lines to stdout (flushed, one event each):

- `repl`: reads JSON commands from stdin, one a line (`{"id", "op", ...}`), and answers each
  with `{"event": "reply", "id", "value"}` or `{"event": "error", "id", "type", "message"}`;
  a subscription (`op` "subscribe") prints `{"event": "value", "sub", "value"}` for its first
  value and each change.
- `increment <counter id> <n>`: `counter:increment` n times, then `{"event": "done",
  "values": [...]}` (or `{"event": "error", ...}`).
- `writer <first n>`: `items:add_pair` for n, n + 1, ... forever, printing `{"event": "ack",
  "n"}` once each mutation returned (the commit is acknowledged). `tolerant_writer`: the same,
  but a mutation failing with a `PersistenceError` prints `{"event": "failed", "n", "type",
  "message"}` and the writer goes on with the next n.

The test side, `Worker`, starts such a process, reads its events on a thread and kills it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["REPO", "Worker", "WorkerError", "main"]

#: The repository's root: the workers import kernel_ext from it.
REPO = Path(__file__).resolve().parent.parent

_print_lock = threading.Lock()


def _emit(**event: Any) -> None:
    """Print one event as a JSON line, flushed (a kill may come right after)."""
    line = json.dumps(event, default=_jsonable)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    """JSON for what `json` does not know: a view's `RowsSnapshot` (a sequence) as a list."""
    if isinstance(value, bytes):
        return value.hex()
    return list(value)


# -- the worker processes -------------------------------------------------------------------


def _connect(url: str, functions: str) -> Any:
    import kernel_ext

    client = kernel_ext.connect(url)
    client.load_functions(functions)
    return client


def _repl(client: Any) -> None:
    """Answer commands from stdin until it closes (see the module docstring)."""
    subscriptions: dict[str, Any] = {}
    _emit(event="ready", pid=os.getpid())
    for line in sys.stdin:
        command = json.loads(line)
        try:
            value = _run(client, command, subscriptions)
        except Exception as exc:
            _emit(event="error", id=command["id"], type=type(exc).__name__, message=str(exc))
        else:
            _emit(event="reply", id=command["id"], value=value)


def _run(client: Any, command: dict[str, Any], subscriptions: dict[str, Any]) -> Any:
    op = command["op"]
    if op in ("query", "mutation"):
        started = time.monotonic()
        value = getattr(client, op)(command["ref"], command.get("args", {}))
        return {"value": value, "seconds": time.monotonic() - started}
    if op == "subscribe":
        name = command["sub"]
        sub = client.subscribe(command["ref"], command.get("args", {}))
        subscriptions[name] = sub
        sub.on_change(lambda value: _emit(event="value", sub=name, value=value))
        _emit(event="value", sub=name, value=sub.value)
        return None
    if op == "unreachable":
        error = client.backend.store.unreachable
        return None if error is None else f"{type(error).__name__}: {error}"
    if op == "register_local":
        # A function only this process has (as a notebook defines one): it records its runs.
        from kernel_ext import internal_mutation, v

        @internal_mutation(args={"tag": v.string()})
        def local(ctx: Any, tag: str) -> None:
            ctx.db.insert("runs", {"tag": tag, "pid": os.getpid()})

        return client.register(command["path"], local)
    raise ValueError(f"unknown op {op!r}")


def _increment(client: Any, counter: str, times: int) -> None:
    values = [client.mutation("counter:increment", {"id": counter}) for _ in range(times)]
    _emit(event="done", values=values)


def _writer(client: Any, first: int, *, tolerant: bool = False) -> None:
    from kernel_ext.errors import PersistenceError

    _emit(event="ready", pid=os.getpid())
    n = first
    while True:
        try:
            client.mutation("items:add_pair", {"n": n, "group": f"g{n % 3}", "score": n})
        except PersistenceError as exc:
            if not tolerant:
                raise
            _emit(event="failed", n=n, type=type(exc).__name__, message=str(exc))
        else:
            _emit(event="ack", n=n)
        n += 1


def main(argv: list[str]) -> None:
    """Run the worker `argv[0]` (see the module docstring)."""
    mode, url, functions, *rest = argv
    client = _connect(url, functions)
    try:
        if mode == "repl":
            _repl(client)
        elif mode == "increment":
            _increment(client, rest[0], int(rest[1]))
        elif mode in ("writer", "tolerant_writer"):
            _writer(client, int(rest[0]), tolerant=mode == "tolerant_writer")
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    except Exception as exc:
        _emit(event="error", id=None, type=type(exc).__name__, message=str(exc))
        raise
    finally:
        client.close()


# -- the test side --------------------------------------------------------------------------


class Worker:
    """One worker process (see the module docstring), its events collected by a thread.

    Args:
        mode, url, functions, *args: the worker's command line.
    """

    def __init__(self, mode: str, url: str, functions: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, mode, url, str(functions), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = 0
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.events.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self._stderr.append(line)

    @property
    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        with self._lock:
            return "".join(self._stderr)

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The events so far for which `predicate` holds."""
        with self._lock:
            return [e for e in self.events if predicate(e)]

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> Any:
        """The first event for which `predicate` holds, waiting up to `timeout` s.

        Raises:
            AssertionError: none came (the message has the process's stderr).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(predicate)
            if found:
                return found[0]
            if self.proc.poll() is not None and not self.matching(predicate):
                time.sleep(0.05)  # the reader may still hold the last lines
                if not self.matching(predicate):
                    break
            time.sleep(0.01)
        raise AssertionError(
            f"worker {self.proc.args[2]} (exit {self.proc.poll()}): no such event within "
            f"{timeout} s; events: {self.events[-5:]}; stderr:\n{self.stderr[-3000:]}"
        )

    def send(self, op: str, timeout: float = 20.0, **fields: Any) -> Any:
        """Run a command in a `repl` worker and return its reply's value.

        Raises:
            WorkerError: the command failed in the worker.
        """
        with self._lock:
            self._ids += 1
            number = self._ids
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": number, "op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        event = self.wait_event(
            lambda e: e.get("id") == number and e["event"] in ("reply", "error"), timeout
        )
        if event["event"] == "error":
            raise WorkerError(event["type"], event["message"])
        return event["value"]

    def values(self, sub: str) -> list[Any]:
        """The values subscription `sub` delivered so far, in order."""
        return [e["value"] for e in self.matching(lambda e: e.get("sub") == sub)]

    def kill(self) -> None:
        """SIGKILL the process (if it still runs) and reap it; idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class WorkerError(Exception):
    """A command failed in a worker: `kind` is the exception's class name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


if __name__ == "__main__":
    main(sys.argv[1:])

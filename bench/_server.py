"""Shared helpers of the server benchmarks: the server and the client workers as subprocesses.

The official Python client (`convex` on PyPI) holds the GIL while it waits (PROTOCOL.md §0),
so it never shares a process with the server: the server runs as `python -m kernel_ext serve`
and every client in a worker process (`python -m bench._server_workers ROLE ...`) that talks
JSON lines over its stdin/stdout. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
#: The functions folder every server benchmark serves (table `items`, index `by_key`).
APP: Final = Path(__file__).resolve().parent / "server_app"
#: How the server is started (followed by `serve --functions ...`); an experiment may wrap it.
SERVER_COMMAND: list[str] = [sys.executable, "-m", "kernel_ext"]


class LineProcess:
    """A subprocess whose stdout lines are collected by a thread (so it never blocks on a
    full pipe); JSON lines starting with `[` are messages, anything else is kept as output."""

    def __init__(self, argv: list[str], *, stdin: bool = False, merge_stderr: bool = True) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else None,
            text=True,
            bufsize=1,
            cwd=ROOT,
        )
        self.pid = self.proc.pid
        self.messages: queue.Queue[list[Any]] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if line.startswith("["):
                try:
                    self.messages.put(json.loads(line))
                    continue
                except ValueError:
                    pass
            self.output.append(line)
        self.messages.put(["exited", self.proc.wait()])

    def send(self, *command: Any) -> None:
        """Write one JSON line to the process's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(list(command)) + "\n")
        self.proc.stdin.flush()

    def expect(self, label: str, timeout: float) -> list[Any]:
        """The next message, which must have that label; returns its other items."""
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"pid {self.pid}: no {label!r} within {timeout} s; output: {self.tail()}"
            ) from None
        if message[0] != label:
            raise RuntimeError(f"pid {self.pid}: expected {label!r}, got {message}: {self.tail()}")
        return message[1:]

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.output[-n:])

    def stop(self, grace: float = 5.0, timeout: float = 15.0) -> int | None:
        """Close stdin (a worker exits at EOF) and wait `grace` seconds, then SIGTERM, then
        SIGKILL if it still runs after `timeout`; returns the exit status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):  # it has gone already
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self._reader.join(5)
        return status


class ServerProcess(LineProcess):
    """`python -m kernel_ext serve` on 127.0.0.1, a free port and the store file `db`."""

    def __init__(self, db: Path, *, timeout: float = 30.0) -> None:
        self.url = ""
        super().__init__(
            [
                *SERVER_COMMAND,
                "serve",
                "--functions",
                str(APP),
                "--db",
                str(db),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ]
        )
        deadline = time.monotonic() + timeout
        while not self.url:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start: {self.tail()}")
            for line in list(self.output):
                if line.startswith("Serving "):
                    self.url = line.split()[1]
            time.sleep(0.02)

    def rss_kib(self) -> int:
        """The server process's resident set size (VmRSS of /proc/PID/status), KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def call(self, kind: str, path: str, args: dict[str, Any]) -> Any:
        """Run a function through the HTTP API; returns its value."""
        body = json.dumps({"path": path, "args": args, "format": "json"}).encode()
        request = urllib.request.Request(
            f"{self.url}/api/{kind}", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            result = json.loads(response.read())
        if result.get("status") != "success":
            raise RuntimeError(f"{path} failed: {result}")
        return result["value"]

    def problems(self) -> list[str]:
        """Server output lines that report errors or warnings (it prints nothing else after
        `Serving`)."""
        return [
            line
            for line in self.output
            if not line.startswith(("Admin key", "Serving "))
            and any(w in line for w in ("ERROR", "WARNING", "Traceback", "Error"))
        ]


def worker(role: str, *args: Any) -> LineProcess:
    """Start `python -m bench._server_workers ROLE ARGS...` (commands on its stdin)."""
    return LineProcess(
        [sys.executable, "-m", "bench._server_workers", role, *map(str, args)], stdin=True
    )


def server_line(server: ServerProcess) -> str:
    """`server pid N, url U` for the header."""
    return f"  server: pid {server.pid}, {server.url}, functions {APP.relative_to(ROOT)}"

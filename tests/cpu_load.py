"""A CPU-heavy process running beside a test, as on a loaded machine."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def cpu_load() -> Iterator[None]:
    """Run a busy-looping Python process for the duration of the block (killed after)."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        process.kill()
        process.wait(10)

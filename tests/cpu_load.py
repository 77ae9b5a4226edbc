"""A CPU-heavy process running beside a test, as on a loaded machine."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def cpu_load() -> Iterator[None]:
    """Run a busy-looping Python process for the duration of the block (killed after)."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        process.kill()
        process.wait(10)


def repeat_in_threads_under_load(
    calls: list[Callable[[], object]], times: int
) -> list[BaseException]:
    """Run each of `calls` `times` times in a thread of its own, all at once, with a CPU-heavy
    process beside them; returns what they raised (a thread stops at its first error).

    Raises:
        AssertionError: a thread was still running after 120 s.
    """
    errors: list[BaseException] = []

    def worker(call: Callable[[], object]) -> None:
        try:
            for _ in range(times):
                call()
        except BaseException as exc:
            errors.append(exc)

    with cpu_load():
        threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    return errors

"""Running a notebook cell in a real IPython shell, for the tests that drive the magics."""

from __future__ import annotations

from typing import Any

from IPython.core.interactiveshell import InteractiveShell


def run(ip: InteractiveShell, source: str) -> Any:
    """Run a cell; raise what it raised (before or during execution), else return its value."""
    result = ip.run_cell(source)
    error = result.error_before_exec or result.error_in_exec
    if error is not None:
        raise error
    return result.result

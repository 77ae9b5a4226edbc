"""Every example notebook runs top to bottom on a real kernel (nbclient), on the embedded store
and on a served store (the remote client, as under a Jupyter server with the extension)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `python -m kernel_ext serve` process; the environment that points kernels at it."""
    folder = tmp_path_factory.mktemp("served")
    (folder / "functions").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "kernel_ext", "serve", "--functions", str(folder / "functions"),
         "--db", str(folder / "store.db"), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    env: dict[str, str] = {}
    for line in process.stdout:
        if line.startswith("Admin key"):
            env["CONVEX_ADMIN_KEY"] = line.rsplit(":", 1)[-1].strip()
        if match := re.search(r"Serving (http://\S+)", line):
            env["CONVEX_URL"] = match.group(1)
            break
    yield env
    process.terminate()
    process.wait(15)
    process.stdout.close()


def run_notebook(path: Path, folder: Path) -> None:
    work = folder / path.name
    shutil.copy(path, work)
    notebook = nbformat.read(work, as_version=4)
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()
    errors = [
        o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_on_the_embedded_store(path: Path, tmp_path: Path, monkeypatch) -> None:
    for name in ("CONVEX_URL", "CONVEX_ADMIN_KEY", "CONVEX_JUPYTER_URL"):
        monkeypatch.delenv(name, raising=False)
    run_notebook(path, tmp_path)
    assert (tmp_path / ".convex" / "store.db").exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_on_a_served_store(path: Path, tmp_path: Path, served, monkeypatch) -> None:
    for name, value in served.items():
        monkeypatch.setenv(name, value)
    run_notebook(path, tmp_path)
    assert not (tmp_path / ".convex").exists()  # nothing embedded: all went to the server


def test_function_output_in_a_real_kernel(tmp_path: Path, monkeypatch) -> None:
    """In a kernel: a direct call prints into its cell, a live query's output is kept in
    `Subscription.log_lines`, and the cell output keeps working after live queries ran (their
    capture replaces sys.stdout with a router that passes everything else through)."""
    for name in ("CONVEX_URL", "CONVEX_ADMIN_KEY", "CONVEX_JUPYTER_URL"):
        monkeypatch.delenv(name, raising=False)
    cells = [
        "%load_ext kernel_ext\n%convex connect memory",
        '%%convex_query greet:hello(name: v.string())\nprint("hello", name)\nreturn name.upper()',
        'live = convex.subscribe("greet:hello", name="live")\nprint(live.value, live.log_lines)',
        'convex.query("greet:hello", name="direct")',
        'print("plain output")',
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    def text(cell: int) -> str:
        outputs = notebook.cells[cell].outputs
        assert not [o for o in outputs if o.output_type == "error"], outputs
        return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")

    assert text(2) == "LIVE (\"[LOG] 'hello live'\",)\n"
    assert text(3) == "hello direct\n"
    assert text(4) == "plain output\n"

"""Helpers to run a real JupyterLab (and Notebook 7) on 127.0.0.1 for Playwright tests.

Follows WIDGETS.md §4: a fresh root and workspaces folder per server, a token, the app exposed
to page scripts so tests can run cells and read the DOM, and the news toast switched off.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@dataclass
class Server:
    """A running Jupyter server."""

    base: str
    token: str
    root: Path
    app: str  # "lab" or "notebook"

    def url(self, notebook: str) -> str:
        if self.app == "lab":
            return f"{self.base}/lab/tree/{notebook}?reset&token={self.token}"
        return f"{self.base}/notebooks/{notebook}?token={self.token}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(app: str, tmp: Path) -> tuple[subprocess.Popen[bytes], Server]:
    root, workspaces, config = tmp / "root", tmp / "workspaces", tmp / "config"
    for folder in (root, workspaces, config):
        folder.mkdir(parents=True, exist_ok=True)
    settings = tmp / "settings"
    settings.mkdir(exist_ok=True)
    (settings / "overrides.json").write_text(
        json.dumps(
            {
                "@jupyterlab/apputils-extension:notification": {
                    "fetchNews": "false",
                    "checkForUpdates": False,
                }
            }
        )
    )
    port, token = _free_port(), secrets.token_hex(16)
    expose = "LabApp" if app == "lab" else "JupyterNotebookApp"
    command = [
        sys.executable, "-m", "jupyterlab" if app == "lab" else "notebook",
        "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", f"--{expose}.expose_app_in_browser=True",
        f"--LabApp.workspaces_dir={workspaces}", f"--LabServerApp.workspaces_dir={workspaces}",
    ]  # fmt: skip
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    env.pop("CONVEX_URL", None)
    with open(tmp / "server.log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1):
                return process, Server(base, token, root, app)
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise RuntimeError(f"Jupyter did not start; see {tmp / 'server.log'}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def write_notebook(folder: Path, name: str, cells: list[str]) -> str:
    """Write a notebook of code cells into its own subfolder (so it gets its own store)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, folder / name / "test.ipynb")
    return f"{name}/test.ipynb"


RUN_ALL = "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"
EXECUTE = """async (code) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session.kernel;
  const reply = await kernel.requestExecute({ code }).done;
  return reply.content.status;
}"""


def open_and_run(page, server: Server, notebook: str) -> None:
    """Open a notebook, wait for its kernel, run every cell."""
    page.goto(server.url(notebook))
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=90_000,
    )
    page.evaluate(RUN_ALL)


def execute(page, code: str) -> str:
    """Run code in the notebook's kernel (not as a cell) and return the reply status."""
    return str(page.evaluate(EXECUTE, code))


def notebook_text(page, tail: int = 4000) -> str:
    """The open notebook's text (cells and outputs, errors included), its last `tail`
    characters: for a failure message that says why the page did not get there."""
    return str(
        page.evaluate(
            "(tail) => { const panel = document.querySelector('.jp-NotebookPanel');"
            " return (panel || document.body).innerText.slice(-tail); }",
            tail,
        )
    )

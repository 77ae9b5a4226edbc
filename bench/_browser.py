"""Shared helpers of the browser benchmarks (`widget_bytes`, `widget_latency`).

- `jupyter_lab()` / `chromium()`: a JupyterLab on 127.0.0.1 and Debian's Chromium driven by
  Playwright, through the harness of the browser tests (`tests/browser/jupyter_harness.py`,
  WIDGETS.md §4). Each benchmark starts and stops its own server; its root folder is a scratch
  folder under `bench/.data/tmp/`.
- `WsMeter`: kernel -> browser WebSocket bytes, counted with `page.on("websocket")` and
  `framereceived` (WIDGETS.md §5), each frame decoded (jupyter_server's v1 kernel protocol) to
  its message type, so that widget traffic (comm and display messages) can be told apart from
  the execute/status messages that every code execution costs.
- `make_frame(n)`: the 10-column data set of WIDGETS.md §5 (int, 2 float, 2 str, datetime as
  an ISO string, bool, float with NaN, 3-level str, int), deterministic. The notebook kernels
  import it from here (the harness puts the repository on the kernel's PYTHONPATH).
- `ensure_widget_store(n)`: a store file of `n` such documents in table `items`, built once
  under `bench/.data/` in a subprocess through `kernel_ext.connect` + `backend.store.mutate`
  (batches of 20,000), closed before any kernel opens it.
- `ensure_shared_widget_store()`: a store file for the Jupyter server's shared store: the
  1,000,000-document `items` of `ensure_widget_store` plus `SMALL_TABLE` of 1,000 documents
  (`make_frame(1000)`, written the same way); `jupyter_lab(shared_store=path)` copies it into
  the server's root as `.convex/shared.db` before the server starts (importing a million rows
  over the wire would take minutes).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench._common import DATA_DIR, cached_build, scratch_dir

if TYPE_CHECKING:
    import pandas as pd

ROOT: Final = Path(__file__).resolve().parent.parent
_STORE_FORMAT: Final = 1
_BUILD_BATCH: Final = 20_000
#: The shared store's 1,000-document table (`items` holds the 1,000,000 documents).
SMALL_TABLE: Final = "items1k"
_SHARED_SMALL: Final = 1_000

#: Message types that a widget causes (its comm traffic and the cell output that shows it).
WIDGET_TYPES: Final = frozenset(
    {
        "comm_open",
        "comm_msg",
        "comm_close",
        "display_data",
        "update_display_data",
        "execute_result",
    }
)
_COMM_TYPES: Final = frozenset({"comm_open", "comm_msg", "comm_close"})


# -- the data set ----------------------------------------------------------------------------


def make_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` rows x 10 columns: id (int), x, y (float), name, city (str), ts (ISO datetime
    string), flag (bool), score (float, ~10% NaN), level (3-level str), count (int)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "x": rng.normal(size=n),
            "y": rng.uniform(0, 1000, size=n),
            "name": [f"name-{i:07d}" for i in range(n)],
            "city": rng.choice(["Paris", "Lima", "Oslo", "Tokyo", "Accra", "Quito"], size=n),
            "ts": pd.date_range("2026-01-01", periods=n, freq="min").strftime("%Y-%m-%dT%H:%M:%S"),
            "flag": rng.integers(0, 2, size=n).astype(bool),
            "score": np.where(rng.uniform(size=n) < 0.1, np.nan, rng.normal(size=n)),
            "level": rng.choice(["low", "mid", "high"], size=n),
            "count": rng.integers(0, 10_000, size=n, dtype=np.int64),
        }
    )


def widget_store_path(n_docs: int) -> Path:
    """The cached store file of `n_docs` documents (not necessarily built)."""
    return DATA_DIR / f"widget-store-{n_docs}.db"


def ensure_widget_store(n_docs: int) -> Path:
    """Build `bench/.data/widget-store-N.db` (table `items`, `make_frame(N)` rows) in a
    subprocess if it or its completion marker is missing; returns its path."""
    path = widget_store_path(n_docs)
    cached_build(
        (path,),
        f"widget-store-{n_docs}",
        {"format": _STORE_FORMAT, "docs": n_docs},
        lambda: _build_in_subprocess("--build", str(n_docs), str(path)),
    )
    return path


def ensure_shared_widget_store() -> Path:
    """Build `bench/.data/widget-shared-store.db` (table `items`: the 1,000,000 documents of
    `ensure_widget_store(1_000_000)`; `SMALL_TABLE`: `make_frame(1000)`) in a subprocess if it
    or its completion marker is missing; returns its path."""
    path = DATA_DIR / "widget-shared-store.db"
    big = ensure_widget_store(1_000_000)
    cached_build(
        (path,),
        "widget-shared-store",
        {"format": _STORE_FORMAT, "items": 1_000_000, SMALL_TABLE: _SHARED_SMALL},
        lambda: _build_in_subprocess("--build-shared", str(big), str(path)),
    )
    return path


def _build_in_subprocess(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "bench._browser", *args], cwd=ROOT, check=True, timeout=1800
    )


def _remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _build_store(n_docs: int, path: Path) -> None:
    """(Subprocess) insert `make_frame(n_docs)` into `items` in commits of 20,000 documents."""
    from tqdm import tqdm

    import kernel_ext
    from kernel_ext.client.dataframe import rows_from_dataframe

    building = path.with_name(path.name + ".building")
    _remove_store(path)
    _remove_store(building)
    frame = make_frame(n_docs)
    client = kernel_ext.connect(building)
    try:
        with tqdm(total=n_docs, desc=f"build {n_docs:,} docs", unit="doc", mininterval=1.0) as bar:
            for start in range(0, n_docs, _BUILD_BATCH):
                batch = list(rows_from_dataframe(frame.iloc[start : start + _BUILD_BATCH]))
                client.backend.store.mutate(
                    lambda txn, batch=batch: [txn.insert("items", doc) for doc in batch]
                )
                bar.update(len(batch))
    finally:
        client.close()  # releases the file: one process owns a store at a time
    for suffix in ("-wal", "-shm", ".lock"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    building.rename(path)


def _build_shared_store(big: Path, path: Path) -> None:
    """(Subprocess) a copy of `big` with `SMALL_TABLE` added (`make_frame(1000)`)."""
    import shutil

    import kernel_ext
    from kernel_ext.client.dataframe import rows_from_dataframe

    building = path.with_name(path.name + ".building")
    _remove_store(path)
    _remove_store(building)
    shutil.copyfile(big, building)
    rows = list(rows_from_dataframe(make_frame(_SHARED_SMALL)))
    client = kernel_ext.connect(building)
    try:
        client.backend.store.mutate(lambda txn: [txn.insert(SMALL_TABLE, doc) for doc in rows])
    finally:
        client.close()
    for suffix in ("-wal", "-shm", ".lock"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    building.rename(path)


@contextmanager
def store_copy(source: Path, name: str) -> Iterator[Path]:
    """A private copy of a cached store file (every run starts from the same data), flushed
    to disk."""
    with scratch_dir(name) as folder:
        target = folder / source.name
        _copy_synced(source, target)
        yield target


def _copy_synced(source: Path, target: Path) -> None:
    """Copy a store file and flush the copy to disk (no write-back during a measurement)."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())


# -- JupyterLab and Chromium -----------------------------------------------------------------


def harness() -> Any:
    """The `jupyter_harness` module of the browser tests."""
    folder = str(ROOT / "tests" / "browser")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("jupyter_harness")


@contextmanager
def jupyter_lab(shared_store: Path | None = None) -> Iterator[Any]:
    """A JupyterLab 4 server on 127.0.0.1 with a scratch root; stopped afterwards.

    Args:
        shared_store: a store file copied to `<root>/.convex/shared.db` before the server
            starts: the server extension's shared store (`kernel_ext.server_ext.SHARED_DB`)
            then holds its documents. None: the extension starts an empty one.
    """
    h = harness()
    with scratch_dir("lab") as tmp:
        if shared_store is not None:
            from kernel_ext.server_ext import SHARED_DB

            _copy_synced(shared_store, tmp / "root" / SHARED_DB)
        process, server = h._start("lab", tmp)
        try:
            yield server
        finally:
            h._stop(process)


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium (never a browser downloaded by Playwright)."""
    from playwright.sync_api import sync_playwright

    h = harness()
    if not Path(h.CHROMIUM).exists():
        raise SystemExit(f"{h.CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=h.CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


KERNEL_IDLE: Final = (
    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
    " const k = w && w.sessionContext && w.sessionContext.session"
    " && w.sessionContext.session.kernel; return !!k && k.status === 'idle'; }"
)

_EXECUTE: Final = """async ([code, expressions]) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session.kernel;
  const reply = await kernel.requestExecute({ code, user_expressions: expressions }).done;
  const out = {};
  for (const [k, v] of Object.entries(reply.content.user_expressions || {})) {
    out[k] = v.status === "ok" ? v.data["text/plain"] : `${v.ename}: ${v.evalue}`;
  }
  return { status: reply.content.status, error: reply.content.evalue || null, values: out };
}"""


def open_notebook(page: Any, server: Any, name: str, cells: list[str]) -> None:
    """Write a notebook with these cells, open it and wait for its kernel (cells not run)."""
    notebook = harness().write_notebook(server.root, name, cells)
    page.goto(server.url(notebook))
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)


def execute(page: Any, code: str, **expressions: str) -> dict[str, str]:
    """Run code in the open notebook's kernel (not as a cell); raise on error; return the
    `text/plain` of each user expression."""
    reply = page.evaluate(_EXECUTE, [code, expressions])
    if reply["status"] != "ok":
        raise RuntimeError(f"kernel error running {code[:200]!r}: {reply['error']}")
    return dict(reply["values"])


def run_all_cells(page: Any) -> None:
    """Run every cell of the open notebook (their outputs render in the page)."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


_DESCRIBE: Final = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  const outputs = [...document.querySelectorAll('.jp-OutputArea-output')].map((o) => o.innerText);
  return JSON.stringify({
    current: w ? w.title.label : null,
    kernel: k ? k.status : null,
    prompts: [...document.querySelectorAll('.jp-InputPrompt')].map((p) => p.innerText),
    outputs: outputs.map((t) => t.slice(0, 400)),
  });
}"""


def describe(page: Any) -> str:
    """What the page shows (for error messages): current document, kernel status, prompts and
    the start of each output."""
    try:
        return str(page.evaluate(_DESCRIBE))
    except Exception as error:  # the page may be gone
        return f"(page not readable: {error})"


def shutdown_kernel(page: Any) -> None:
    """Shut down the open notebook's kernel (it owns its store file) and close the page."""
    try:
        page.evaluate(
            "async () => { await window.jupyterapp.shell.currentWidget.sessionContext.shutdown(); }"
        )
    finally:
        page.close()


# -- WebSocket byte accounting ---------------------------------------------------------------


@dataclass
class Frame:
    """One kernel -> browser WebSocket frame."""

    at: float  # time.monotonic() when Playwright delivered it
    size: int  # bytes on the wire (payload)
    channel: str
    msg_type: str
    parent_type: str  # msg_type of the request it answers ("" if none)
    content: dict[str, Any] | None = None  # decoded for comm_open only

    @property
    def widget(self) -> bool:
        """Widget traffic: comm and display messages, and whatever the kernel sends while
        handling a message from a widget's front end (e.g. its busy/idle status)."""
        return self.msg_type in WIDGET_TYPES or self.parent_type in _COMM_TYPES


def _decode(payload: str | bytes) -> tuple[str, str, str, dict[str, Any] | None]:
    """(channel, msg_type, parent msg_type, content of a comm_open) of a frame."""
    if isinstance(payload, str):  # the legacy JSON protocol
        msg = json.loads(payload)
        msg_type = msg.get("header", {}).get("msg_type", "?")
        parent = (msg.get("parent_header") or {}).get("msg_type", "")
        content = msg.get("content") if msg_type == "comm_open" else None
        return msg.get("channel", "?"), msg_type, parent, content
    from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1

    channel, parts = deserialize_msg_from_ws_v1(payload)
    msg_type = json.loads(parts[0]).get("msg_type", "?") if parts else "?"
    parent = json.loads(parts[1]).get("msg_type", "") if len(parts) > 1 else ""
    content = json.loads(parts[3]) if msg_type == "comm_open" and len(parts) > 3 else None
    return channel, msg_type, parent, content


@dataclass
class WsMeter:
    """Counts the frames the page receives on kernel WebSockets (attach before `goto`)."""

    frames: list[Frame] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        def on_websocket(ws: Any) -> None:
            if "/api/kernels/" in ws.url:
                ws.on("framereceived", self._on_frame)

        page.on("websocket", on_websocket)

    def _on_frame(self, payload: str | bytes) -> None:
        size = len(payload.encode()) if isinstance(payload, str) else len(payload)
        try:
            channel, msg_type, parent, content = _decode(payload)
        except (ValueError, IndexError, KeyError):
            channel, msg_type, parent, content = "?", "?", "", None
        self.frames.append(Frame(time.monotonic(), size, channel, msg_type, parent, content))

    def mark(self) -> int:
        """A position to count from."""
        return len(self.frames)

    def since(self, mark: int) -> list[Frame]:
        """The frames received after `mark`."""
        return self.frames[mark:]

    def wait_quiet(self, page: Any, quiet: float = 1.5, timeout: float = 120.0) -> None:
        """Wait until no frame has arrived for `quiet` seconds (Playwright delivers frames
        while the page waits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            page.wait_for_timeout(100)
            last = self.frames[-1].at if self.frames else 0.0
            if time.monotonic() - last >= quiet:
                return
        raise TimeoutError("kernel WebSocket traffic did not settle")


@dataclass(frozen=True)
class Phase:
    """The bytes of one phase, split into widget traffic and everything else."""

    total: int
    widget: int
    frames: int
    by_type: dict[str, int]  # bytes by type (`type<-comm`: answers to a widget message)
    esm: int  # wire size of `_esm` in comm_open states (JSON-encoded)
    css: int  # wire size of `_css` in comm_open states

    @property
    def other(self) -> int:
        """Execute/status/reply messages (what any code execution costs)."""
        return self.total - self.widget


def phase(frames: list[Frame]) -> Phase:
    """Sum a phase's frames."""
    by_type: dict[str, int] = {}
    esm = css = 0
    widget = 0
    for f in frames:
        kind = f.msg_type if f.parent_type not in _COMM_TYPES else f"{f.msg_type}<-comm"
        by_type[kind] = by_type.get(kind, 0) + f.size
        widget += f.size if f.widget else 0
        if f.content is not None:
            state = (f.content.get("data") or {}).get("state") or {}
            for key, value in state.items():
                if key in ("_esm", "_css") and isinstance(value, str):
                    wire = len(json.dumps(value, ensure_ascii=False).encode())
                    if key == "_esm":
                        esm += wire
                    else:
                        css += wire
    return Phase(sum(by_type.values()), widget, len(frames), by_type, esm, css)


def kib(n: float) -> str:
    """Bytes as KiB/MiB text."""
    if n >= 1024 * 1024:
        return f"{n / 2**20:,.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:,.1f} KiB"
    return f"{n:,.0f} B"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        _build_store(int(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["--build-shared"]:
        _build_shared_store(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(
            "usage: python -m bench._browser --build N PATH | --build-shared BIG_PATH PATH"
        )

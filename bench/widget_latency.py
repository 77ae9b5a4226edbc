"""Commit -> DOM latency of a LiveTable in a real JupyterLab + Chromium, for 1-row changes.

Each configuration opens a private copy of a cached store file (`bench/.data/widget-store-N.db`,
table `items` of `make_frame(N)` documents, the 10-column mix of WIDGETS.md §5, built once in a
subprocess) in a fresh notebook kernel with `%convex connect sqlite:///...`, and shows a
LiveTable over a query of it:

- `collect`: `db.query("items").collect()` over 100,000 documents (the `widget_bytes` table)
  and over 1,000 documents;
- `paginate`: `db.query("items").paginate(paginationOpts)`, which LiveTable loads page by page
  (`widgets/paging.py`), over 1,000,000 documents vs over 1,000 documents.

While the table shows its top rows, 100 changes (20 on the 100,000-document `collect` table,
where each change re-runs the whole query; after 5 warm-up changes) are made one at a time,
each 100 ms after the previous one was seen: the kernel records `time.time()` right before
`convex.mutation("items:touch", ...)` patches the `name` of one of the first 10 documents, and
a MutationObserver in the page records `performance.timeOrigin + performance.now()` when that
row's `name` cell shows the new text. Both clocks are this machine's wall clock (the offset
between them is printed). The latency splits at the moment the LiveTable sends its `rows`
message (its `send` is wrapped in the benchmark's kernel to record the time): kernel (commit ->
send: query re-run, table model, coalescing timer) and front end (send -> DOM), and the front
end again when that message arrives on the page's WebSocket (an init script wraps
`window.WebSocket` to timestamp custom comm messages before JupyterLab handles them): wire
(ZMQ, Jupyter server, WebSocket) and page (JupyterLab, anywidget, requestAnimationFrame,
drawRows).

- `view`: `db.query("items")` returned, not consumed: a maintained view, which the LiveTable
  follows by its row diffs (no re-run, no whole result), over 1,000,000 documents vs over
  1,000 documents (non-paginated: the table holds every row); measured first in the query's
  order, then while sorted by the `count` column (ascending; the table's sort index, built
  once, then updated per change), with the changes made to the first 10 rows of that order.

- `shared view`: the same view tables on the Jupyter server's shared store (the store the
  jupyter-server extension serves, which `make demo` uses): the notebook's kernel keeps the
  client `%load_ext kernel_ext` gives it (a `RemoteClient` reaching the extension through
  the Jupyter server, with the admin key the extension hands its kernels), which receives
  the view's row diffs over the sync protocol. The store's file (`items`: the 1,000,000
  documents, `items1k`: 1,000 more of the same frame; `bench/_browser.py`
  `ensure_shared_widget_store`) is copied into the server's root as `.convex/shared.db`
  before the server starts. The first load of the 1,000,000-row table (run the cells ->
  the table shows its rows: the view built by the server, sent whole once, rebuilt by the
  kernel's client) is printed for every table.

The two paginated tables (and the four view tables) are open at the same time (two/four
notebooks, kernels, pages of one Chromium) and take their changes in turn, so that the
machine's load (a shared VM) affects them alike; the `collect` tables are measured one after
the other.

Targets: p50 commit -> DOM under 50 ms (the `collect` and view tables, both stores);
paginated and view p50 over 1,000,000 documents at most 1.5x the p50 over 1,000 documents
on the same store (same run), sorted too. Also printed: shared / embedded p50 at 1,000,000
documents. `python -m bench.widget_latency views` runs only the view tables.
"""

from __future__ import annotations

import re
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from bench._browser import (
    SMALL_TABLE,
    chromium,
    describe,
    ensure_shared_widget_store,
    ensure_widget_store,
    execute,
    jupyter_lab,
    open_notebook,
    run_all_cells,
    shutdown_kernel,
    store_copy,
)
from bench._common import header, percentile, target

CHANGES: Final = 100
BIG_COLLECT_CHANGES: Final = 20
WARMUP: Final = 5
GAP_MS: Final = 100
TARGET_P50_MS: Final = 50.0
TARGET_RATIO: Final = 1.5


@dataclass(frozen=True)
class Config:
    label: str
    docs: int
    query: str  # the registered query the table shows
    changes: int = CHANGES
    table: str = "items"  # the table the setup's functions read (module of the same name)
    shared: bool = False  # on the Jupyter server's shared store (else a private store file)


CONFIGS: Final = [
    Config("paginate, 1,000 docs", 1_000, "items:page"),
    Config("paginate, 1,000,000 docs", 1_000_000, "items:page"),
    Config("collect, 1,000 docs", 1_000, "items:all"),
    # Every change re-runs the 100,000-document query (~2 s here): fewer changes keep the
    # benchmark well under 5 minutes.
    Config("collect, 100,000 docs", 100_000, "items:all", BIG_COLLECT_CHANGES),
]
VIEW_CONFIGS: Final = [
    Config("view, 1,000 docs", 1_000, "items:view"),
    Config("view, 1,000,000 docs", 1_000_000, "items:view"),
    Config("shared view, 1,000 docs", 1_000, f"{SMALL_TABLE}:view", table=SMALL_TABLE, shared=True),
    Config("shared view, 1,000,000 docs", 1_000_000, "items:view", shared=True),
]
_SHARED_LOAD_TIMEOUT_MS: Final = 600_000  # the first load of 1,000,000 rows over the wire
SORT_COLUMN: Final = "count"
_SORT: Final = f"""_sort = {{"type": "sort", "column": "{SORT_COLUMN}"}}
table._on_front_end_message(table, _sort, [])
ids = [table.model.row_at(p)["_id"] for p in range(10)]"""
_SORTED_SHOWN: Final = f"""() => {{
  const th = document.querySelector('.convex-live-table th[data-column="{SORT_COLUMN}"]');
  return !!th && th.dataset.sort === 'asc';
}}"""

_LOAD: Final = "import time\n%load_ext kernel_ext"


def _setup(t: str) -> list[str]:
    """The functions over table `t` (module `t`: the shared store holds both tables)."""
    return [
        "from widgets import LiveTable",
        f"%%convex_query {t}:all\nreturn db.query('{t}').collect()",
        f"%%convex_query {t}:page(paginationOpts: v.any())\n"
        f"return db.query('{t}').paginate(paginationOpts)",
        f"%%convex_query {t}:first10\nreturn db.query('{t}').take(10)",
        f"%%convex_query {t}:view\nreturn db.query('{t}')",
        f"%%convex_mutation {t}:touch(id: v.id('{t}'), name: v.string())\n"
        "db.patch(id, {'name': name})",
        f"ids = [d['_id'] for d in convex.query('{t}:first10')]",
    ]


# Wrap the table's `send` to record when each `rows` message leaves the kernel.
_INSTRUMENT: Final = """_sent = []
_send = table.send
def _timed_send(*args, **kwargs):
    _sent.append(time.time())
    return _send(*args, **kwargs)
table.send = _timed_send"""

_ROW_SHOWN: Final = """() => {
  const tr = document.querySelector('.convex-live-table tr[data-position="9"]');
  return !!tr && tr.cells.length > 0 && tr.cells[0].textContent !== '';
}"""
_OBSERVE: Final = """() => {
  const root = document.querySelector('.convex-live-table');
  const col = [...root.querySelectorAll('th')].findIndex((th) => th.dataset.column === 'name');
  window.__lat = { pos: 0, text: null, t: null, col };
  new MutationObserver(() => {
    const lat = window.__lat;
    if (lat.text === null || lat.t !== null) return;
    const tr = root.querySelector(`tr[data-position="${lat.pos}"]`);
    if (tr && tr.cells[lat.col] && tr.cells[lat.col].textContent === lat.text) {
      lat.t = performance.timeOrigin + performance.now();
    }
  }).observe(root, { subtree: true, childList: true, characterData: true });
  return col;
}"""
_EXPECT: Final = """([pos, text]) => {
  window.__lat.pos = pos; window.__lat.text = text; window.__lat.t = null;
}"""
_NOW: Final = "() => performance.timeOrigin + performance.now()"
# Before any page script: every WebSocket records when a widget's custom comm_msg (the
# LiveTable's `rows` message) arrives, before JupyterLab's own handler sees it (v1 protocol:
# 8-byte offset count, offsets, channel, header, parent header, metadata, content, buffers).
_TAP_WEBSOCKETS: Final = """(() => {
  const Native = window.WebSocket;
  const text = new TextDecoder();
  window.__customArrivals = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        const at = performance.timeOrigin + performance.now();
        if (!(event.data instanceof ArrayBuffer)) return;
        try {
          const view = new DataView(event.data);
          const offset = (i) => Number(view.getBigUint64(8 * (i + 1), true));
          const part = (i) =>
            text.decode(new Uint8Array(event.data, offset(i), offset(i + 1) - offset(i)));
          if (JSON.parse(part(1)).msg_type !== "comm_msg") return;
          if (part(4).includes('"method":"custom"')) window.__customArrivals.push(at);
        } catch (error) { /* not a v1 kernel message */ }
      });
    }
  };
})();"""


@dataclass
class Run:
    """One configuration's open table and its samples."""

    config: Config
    page: Any
    clock_offset_ms: float = 0.0  # browser clock - Python clock
    total_ms: list[float] = field(default_factory=list)  # commit -> DOM
    kernel_ms: list[float] = field(default_factory=list)  # commit -> rows message sent
    front_ms: list[float] = field(default_factory=list)  # sent -> DOM
    wire_ms: list[float] = field(default_factory=list)  # sent -> arrived in the page
    page_ms: list[float] = field(default_factory=list)  # arrived -> DOM
    mutation_ms: list[float] = field(default_factory=list)  # commit -> mutation returned
    changes_made: int = 0
    rows_shown: str = ""
    first_load_s: float = float("nan")  # cells run -> the table shows its rows


def _clock_offset(page: Any) -> float:
    """Browser `timeOrigin + now()` minus Python's `time.time()` (ms), best of 5 reads."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = time.time()
        browser = float(page.evaluate(_NOW))
        after = time.time()
        rtt = (after - before) * 1e3
        offset = browser - (before + after) / 2 * 1e3
        if best is None or rtt < best[0]:
            best = (rtt, offset)
    assert best is not None
    return best[1]


def _open(browser: Any, server: Any, config: Config, store: Path | None) -> Run:
    """Open a notebook on `store` (None: the Jupyter server's shared store), show the
    LiveTable, instrument it."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(_TAP_WEBSOCKETS)
    try:
        open_notebook(
            page,
            server,
            re.sub(r"[^a-z0-9]+", "-", config.label.lower()).strip("-"),  # one per table
            [f"table = LiveTable(convex, {config.query!r})\ntable"],
        )
        execute(page, _LOAD)
        if store is None:
            _check_shared(page, config)
        else:
            execute(page, f"%convex connect sqlite:///{store}")
        for code in _setup(config.table):
            execute(page, code)
        t0 = time.perf_counter()
        run_all_cells(page)
        try:
            timeout = _SHARED_LOAD_TIMEOUT_MS if config.shared else 120_000
            page.wait_for_function(_ROW_SHOWN, timeout=timeout)
        except PlaywrightTimeout:
            shows = describe(page)
            raise RuntimeError(f"{config.label}: the table did not show: {shows}") from None
        first_load = time.perf_counter() - t0
        execute(page, _INSTRUMENT)
        if page.evaluate(_OBSERVE) < 0:
            raise RuntimeError("no `name` column in the table")
        page.wait_for_timeout(500)
        return Run(config, page, _clock_offset(page), first_load_s=first_load)
    except BaseException:
        shutdown_kernel(page)
        raise


def _check_shared(page: Any, config: Config) -> None:
    """The kernel's `convex` must be the shared store's remote client (the extension's)."""
    facts = execute(
        page,
        "import os",
        client="type(convex).__name__",
        store="os.environ.get('CONVEX_JUPYTER_STORE', '')",
    )
    if facts["client"].strip("'") != "RemoteClient" or not facts["store"].strip("'"):
        raise RuntimeError(f"{config.label}: the kernel is not on the shared store: {facts}")


def _change(run: Run) -> None:
    """Make one 1-row change and wait until the DOM shows it (samples after the warm-up)."""
    page, i = run.page, run.changes_made
    pos, text = i % 10, f"lat-{i}"
    page.evaluate(_EXPECT, [pos, text])
    times = execute(
        page,
        f"_t0 = time.time()\nconvex.mutation('{run.config.table}:touch', id=ids[{pos}], "
        f"name={text!r})"
        "\n_t1 = time.time()",
        t0="_t0",
        t1="_t1",
    )
    page.wait_for_function("() => window.__lat.t !== null", timeout=60_000)
    seen, arrivals = page.evaluate("() => [window.__lat.t, window.__customArrivals.splice(0)]")
    sent = float(execute(page, "", sent="_sent[-1]")["sent"]) * 1e3
    t0, t1 = float(times["t0"]) * 1e3, float(times["t1"]) * 1e3
    # The rows message is the last custom message that arrived before the DOM showed it.
    arrived = max((a for a in arrivals if a <= seen), default=float("nan"))
    if i >= WARMUP:
        run.total_ms.append(seen - t0)
        run.kernel_ms.append(sent - t0)
        run.front_ms.append(seen - sent)
        run.wire_ms.append(arrived - sent)
        run.page_ms.append(seen - arrived)
        run.mutation_ms.append(t1 - t0)
    run.changes_made += 1
    page.wait_for_timeout(GAP_MS)


def _measure_views(browser: Any, server: Any, stores: dict[int, Path]) -> list[Run]:
    """The view tables, open together, changes in turn: in the query's order, then sorted by
    `SORT_COLUMN` (the same tables; the sorted samples are returned as runs of their own)."""
    with ExitStack() as stack:
        runs = []
        for n, config in enumerate(VIEW_CONFIGS):
            store = None
            if not config.shared:
                copy = store_copy(stores[config.docs], f"latency-view-{n}-{config.docs}")
                store = stack.enter_context(copy)
            run = _open(browser, server, config, store)
            print(f"    {config.label}: first load {run.first_load_s:.1f} s", flush=True)
            stack.callback(_close, run)
            runs.append(run)
        for _ in range(WARMUP + CHANGES):
            for run in runs:
                _change(run)
        sorted_runs = []
        for run in runs:
            t0 = time.perf_counter()
            execute(run.page, _SORT)
            run.page.wait_for_function(_SORTED_SHOWN, timeout=120_000)
            run.page.wait_for_function(_ROW_SHOWN, timeout=120_000)
            label = f"{run.config.label}, sorted by {SORT_COLUMN}"
            print(f"    {label}: sort index built and shown in {time.perf_counter() - t0:.1f} s")
            sorted_runs.append(Run(replace(run.config, label=label), run.page))
            sorted_runs[-1].clock_offset_ms = run.clock_offset_ms
        for _ in range(WARMUP + CHANGES):
            for run in sorted_runs:
                _change(run)
        for run, sorted_run in zip(runs, sorted_runs, strict=True):
            sorted_run.rows_shown = run.page.inner_text(".convex-live-table .clt-count")
    return [*runs, *sorted_runs]


def _report(runs: dict[str, Run]) -> None:
    for label, run in runs.items():
        print(f"  {label} (n={len(run.total_ms)})")
        if run.first_load_s == run.first_load_s:  # not NaN: the run that opened the table
            print(f"    first load (cells run -> rows shown) {run.first_load_s:.1f} s")
        print(f"    commit -> DOM         {_fmt(run.total_ms)}")
        print(f"    commit -> rows sent   {_fmt(run.kernel_ms)}  (kernel)")
        print(f"    rows sent -> DOM      {_fmt(run.front_ms)}  (front end)")
        print(f"      sent -> in page     {_fmt(run.wire_ms)}  (ZMQ, server, WebSocket)")
        print(f"      in page -> DOM      {_fmt(run.page_ms)}  (JupyterLab, anywidget, JS)")
        print(f"    commit -> mutation returned {_fmt(run.mutation_ms)}")


def _view_targets(runs: dict[str, Run]) -> None:
    for prefix, suffix in [
        (prefix, suffix)
        for prefix in ("view", "shared view")
        for suffix in ("", f", sorted by {SORT_COLUMN}")
    ]:
        big = runs[f"{prefix}, 1,000,000 docs{suffix}"]
        small = runs[f"{prefix}, 1,000 docs{suffix}"]
        ratio = p50(big.total_ms) / p50(small.total_ms)
        for run in (small, big):
            value = p50(run.total_ms)
            target(
                f"p50 commit -> DOM < {TARGET_P50_MS:.0f} ms ({run.config.label}, "
                f"n={len(run.total_ms)})",
                value < TARGET_P50_MS,
                f"{value:.1f} ms (p95 {p95(run.total_ms):.1f} ms)",
            )
        target(
            f"{prefix}{suffix} p50 1,000,000 / 1,000 docs <= {TARGET_RATIO}",
            ratio <= TARGET_RATIO,
            f"{ratio:.2f}x ({p50(big.total_ms):.1f} ms vs {p50(small.total_ms):.1f} ms; p95 "
            f"{p95(big.total_ms) / p95(small.total_ms):.2f}x)",
        )


def _shared_vs_embedded(runs: dict[str, Run]) -> None:
    """Shared / embedded p50 and p95 at 1,000,000 documents (what the served store adds)."""
    for suffix in ("", f", sorted by {SORT_COLUMN}"):
        shared = runs[f"shared view, 1,000,000 docs{suffix}"].total_ms
        embedded = runs[f"view, 1,000,000 docs{suffix}"].total_ms
        print(
            f"  shared / embedded, 1,000,000 docs{suffix}: p50 "
            f"{p50(shared) / p50(embedded):.2f}x ({p50(shared):.1f} ms vs {p50(embedded):.1f} "
            f"ms), p95 {p95(shared) / p95(embedded):.2f}x ({p95(shared):.1f} ms vs "
            f"{p95(embedded):.1f} ms)"
        )


def _close(run: Run) -> None:
    try:
        run.rows_shown = run.page.inner_text(".convex-live-table .clt-count")
    finally:
        shutdown_kernel(run.page)


def _measure(
    browser: Any, server: Any, configs: list[Config], stores: dict[int, Path]
) -> list[Run]:
    """Open the configurations' tables together and make their changes in turn (so that a
    change in the machine's load affects them alike), then close them."""
    with ExitStack() as stack:
        runs = []
        for n, config in enumerate(configs):  # one scratch folder per open table
            copy = store_copy(stores[config.docs], f"latency-{n}-{config.docs}")
            store = stack.enter_context(copy)
            run = _open(browser, server, config, store)
            stack.callback(_close, run)
            runs.append(run)
        for i in range(WARMUP + max(c.changes for c in configs)):
            for run in runs:
                if i < WARMUP + run.config.changes:
                    _change(run)
    return runs


def _fmt(values: list[float]) -> str:
    s = sorted(values)
    return (
        f"p50 {percentile(s, 50):7.1f}  p99 {percentile(s, 99):7.1f}  "
        f"mean {statistics.fmean(s):7.1f}  min {s[0]:6.1f}  max {s[-1]:7.1f} ms"
    )


def p50(values: list[float]) -> float:
    return percentile(sorted(values), 50)


def p95(values: list[float]) -> float:
    return percentile(sorted(values), 95)


def main(argv: list[str] | None = None) -> None:
    """Every table (`views`: only the maintained-view tables)."""
    views_only = bool(argv) and argv[0] == "views"
    header(
        f"Widget latency: LiveTable commit -> DOM for a 1-row change, {CHANGES} changes "
        f"(+{WARMUP} warm-up), JupyterLab + headless Chromium"
    )
    configs = VIEW_CONFIGS if views_only else [*CONFIGS, *VIEW_CONFIGS]
    stores = {c.docs: ensure_widget_store(c.docs) for c in configs if not c.shared}
    shared_store = ensure_shared_widget_store()
    started = time.perf_counter()
    runs: dict[str, Run] = {}
    with jupyter_lab(shared_store) as server, chromium() as browser:
        t0 = time.perf_counter()
        for run in _measure_views(browser, server, stores):
            runs[run.config.label] = run
            print(f"  {run.config.label:<40} table showed {run.rows_shown!r}", flush=True)
        print(f"    (view tables measured in {time.perf_counter() - t0:.1f} s)", flush=True)
        # The paginated pair is interleaved (their ratio is a target); the others one by one.
        groups = [] if views_only else [[CONFIGS[0], CONFIGS[1]], [CONFIGS[2]], [CONFIGS[3]]]
        for group in groups:
            t0 = time.perf_counter()
            for run in _measure(browser, server, group, stores):
                runs[run.config.label] = run
                print(
                    f"  {run.config.label:<26} table showed {run.rows_shown!r}; clock offset "
                    f"browser - kernel {run.clock_offset_ms:+.2f} ms",
                    flush=True,
                )
            print(f"    ({len(group)} measured in {time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"  (all in {time.perf_counter() - started:.1f} s)\n")
    _report(runs)
    _view_targets(runs)
    _shared_vs_embedded(runs)
    if views_only:
        return

    big = runs["paginate, 1,000,000 docs"]
    small = runs["paginate, 1,000 docs"]
    ratio = p50(big.total_ms) / p50(small.total_ms)
    print(
        f"\n  paginated ratio 1,000,000 / 1,000 docs: p50 {ratio:.2f}x, p99 "
        f"{percentile(sorted(big.total_ms), 99) / percentile(sorted(small.total_ms), 99):.2f}x"
    )
    collect_small = runs["collect, 1,000 docs"]
    collect_big = runs["collect, 100,000 docs"]
    print(
        f"  collect ratio 100,000 / 1,000 docs: p50 "
        f"{p50(collect_big.total_ms) / p50(collect_small.total_ms):.2f}x"
    )
    for run in (collect_small, collect_big):
        value = p50(run.total_ms)
        target(
            f"p50 commit -> DOM < {TARGET_P50_MS:.0f} ms ({run.config.label}, "
            f"n={len(run.total_ms)})",
            value < TARGET_P50_MS,
            f"{value:.1f} ms (p99 {percentile(sorted(run.total_ms), 99):.1f} ms)",
        )
    target(
        f"paginated p50 1,000,000 / 1,000 docs <= {TARGET_RATIO}",
        ratio <= TARGET_RATIO,
        f"{ratio:.2f}x ({p50(big.total_ms):.1f} ms vs {p50(small.total_ms):.1f} ms)",
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

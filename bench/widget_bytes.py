"""Kernel -> browser WebSocket bytes of a LiveTable over 100,000 rows x 10 columns, in a real
JupyterLab + Chromium, beside ipydatagrid's `DataGrid` and Perspective's `PerspectiveWidget` over
the same DataFrame, measured in the same run.

Data (`bench._browser.make_frame`, the mix of WIDGETS.md §5): int, 2 floats, 2 strs, a datetime
as an ISO string, bool, float with ~10% NaN, a 3-level str, int. The LiveTable's notebook loads
it with `convex.import_dataframe` into its own embedded store file (`%convex connect
sqlite:///live-table.db`, in the notebook's scratch folder) and shows `LiveTable(convex,
"items:all")` over `db.query("items").collect()`; the other two get the DataFrame itself.

Each widget gets its own notebook and kernel. The page counts every frame it receives on the
kernel WebSocket (`page.on("websocket")` -> `framereceived`) and decodes its message type.
Phases (each ends when the DOM shows the result and no frame has arrived for 1.5 s):

- display: the notebook's one cell (`w = Widget(...); w`) runs; reported are all frames, the
  wire size of the `_esm` and `_css` traits in the widget's `comm_open`, and the rest;
- 1-row change / 100-row change, while the widget shows its top rows, made by code executed in
  the kernel: the LiveTable's `items:touch` mutation patches `name` and `x` of the first 1 or
  100 documents; ipydatagrid: 1 row with its cell-update API `set_row_value` and 100 rows by
  assigning the modified DataFrame to `grid.data` (both other ways are printed too);
  Perspective (built with `index="id"`, so that an update replaces rows instead of appending
  them): `widget.update(modified rows)`.

"widget" bytes are the comm and display messages (comm_open/comm_msg/display_data/
execute_result) plus everything the kernel sends while handling a message from a widget's front
end (its busy/idle status, echo_update); "all" adds the status/execute_input/execute_reply
messages that executing any code (here: the change) costs. Targets (LiveTable): display under
200 KB besides `_esm`/`_css` (all frames), a 1-row change under 2 KB (widget bytes). Ratios are
LiveTable / the other widget, same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from bench._browser import Phase as PhaseBytes
from bench._browser import (
    WsMeter,
    chromium,
    execute,
    jupyter_lab,
    kib,
    open_notebook,
    phase,
    run_all_cells,
    shutdown_kernel,
)
from bench._common import header, target

ROWS: Final = 100_000
TARGET_DISPLAY: Final = 200 * 1000  # bytes, besides _esm/_css
TARGET_ONE_ROW: Final = 2 * 1000  # bytes

_FRAME = f"from bench._browser import make_frame\ndf = make_frame({ROWS})"
# The changed rows: `name` and `x` of the first k rows (k = 1 or 100), as a DataFrame.
_CHANGED = """def changed(k, tag):
    out = df.iloc[:k].copy()
    out["name"] = [f"{tag}-{i}" for i in range(k)]
    out["x"] = [-1.0 - i for i in range(k)]
    return out
def as_row(frame, i):  # JSON-able values of one row, in column order (NaN -> None)
    import math
    values = [v.item() if hasattr(v, "item") else v for v in frame.iloc[i].tolist()]
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]"""

LIVE_SETUP: Final = [
    "%load_ext kernel_ext",
    "%convex connect sqlite:///live-table.db",  # an embedded store file in the notebook's folder
    f"{_FRAME}\nfrom widgets import LiveTable\n"
    "ids = convex.import_dataframe('items', df, batch_size=20_000, progress=False)",
    "%%convex_query items:all\nreturn db.query('items').collect()",
    "%%convex_mutation items:touch(ids: v.array(v.id('items')), tag: v.string())\n"
    "for i, id in enumerate(ids):\n"
    "    db.patch(id, {'name': f'{tag}-{i}', 'x': -1.0 - i})",
]
LIVE_ROW0 = """(text) => {
  const tr = document.querySelector('.convex-live-table tr[data-position="0"]');
  const shows = (td) => (text === null ? td.textContent !== "" : td.textContent === text);
  return !!tr && [...tr.cells].some(shows);
}"""


@dataclass(frozen=True)
class Change:
    """One way to change k rows: kernel code and the text the first row then shows."""

    label: str
    rows: int
    code: str
    shows: str
    primary: bool  # the way the ratios use


@dataclass(frozen=True)
class Widget:
    name: str
    setup: list[str]
    cell: str
    changes: list[Change]


WIDGETS: Final = [
    Widget(
        "LiveTable",
        LIVE_SETUP,
        "table = LiveTable(convex, 'items:all')\ntable",
        [
            Change(
                "mutation patching 1 doc",
                1,
                "convex.mutation('items:touch', ids=ids[:1], tag='one')",
                "one-0",
                True,
            ),
            Change(
                "mutation patching 100 docs",
                100,
                "convex.mutation('items:touch', ids=ids[:100], tag='hundred')",
                "hundred-0",
                True,
            ),
        ],
    ),
    Widget(
        "ipydatagrid",
        [f"{_FRAME}\nfrom ipydatagrid import DataGrid\n{_CHANGED}"],
        "grid = DataGrid(df)\ngrid",
        [
            Change(
                "set_row_value (cell-update API)",
                1,
                "one = changed(1, 'one')\ngrid.set_row_value(0, as_row(one, 0))",
                "one-0",
                True,
            ),
            Change(
                "grid.data = modified df",
                1,
                "df1 = df.copy()\nc = changed(1, 'uno')\n"
                "df1.loc[c.index, ['name', 'x']] = c[['name', 'x']]\ngrid.data = df1",
                "uno-0",
                False,
            ),
            Change(
                "grid.data = modified df",
                100,
                "df2 = df.copy()\nc = changed(100, 'hundred')\n"
                "df2.loc[c.index, ['name', 'x']] = c[['name', 'x']]\ngrid.data = df2",
                "hundred-0",
                True,
            ),
            Change(
                "100 x set_row_value",
                100,
                "c = changed(100, 'cien')\nfor i in range(100):\n"
                "    grid.set_row_value(i, as_row(c, i))",
                "cien-0",
                False,
            ),
        ],
    ),
    Widget(
        "Perspective",
        [f"{_FRAME}\nfrom perspective.widget import PerspectiveWidget\n{_CHANGED}"],
        "psp = PerspectiveWidget(df, index='id')\npsp",
        [
            Change("widget.update(1 row)", 1, "psp.update(changed(1, 'one'))", "one-0", True),
            Change(
                "widget.update(100 rows)",
                100,
                "psp.update(changed(100, 'hundred'))",
                "hundred-0",
                True,
            ),
        ],
    ),
]


@dataclass
class Result:
    display: PhaseBytes
    first_row_s: float
    changes: list[tuple[Change, PhaseBytes, bool]]


def _wait_shown(page: Any, widget: str, text: str | None, timeout_ms: int) -> bool:
    """Wait until the widget's first row shows `text` (any text if None); False if the DOM
    cannot tell (ipydatagrid draws on a canvas) or it timed out."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        if widget == "LiveTable":
            page.wait_for_function(LIVE_ROW0, arg=text, timeout=timeout_ms)
        elif widget == "Perspective":
            viewer = page.locator("perspective-viewer")
            if text is None:
                viewer.locator("regular-table tbody td").first.wait_for(timeout=timeout_ms)
            else:
                viewer.get_by_text(text, exact=True).first.wait_for(timeout=timeout_ms)
        else:
            page.wait_for_selector(".lm-DataGrid canvas, .p-DataGrid canvas", timeout=timeout_ms)
            return text is None
    except PlaywrightTimeout:
        return False
    return True


def _measure(browser: Any, server: Any, widget: Widget) -> Result:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    meter = WsMeter()
    meter.attach(page)
    try:
        open_notebook(page, server, widget.name.lower(), [widget.cell])
        for code in widget.setup:
            execute(page, code)
        meter.wait_quiet(page, quiet=1.0)
        mark = meter.mark()
        started = time.perf_counter()
        run_all_cells(page)
        if not _wait_shown(page, widget.name, None, 180_000):
            raise RuntimeError(f"{widget.name} did not render")
        first_row_s = time.perf_counter() - started
        meter.wait_quiet(page)
        display = phase(meter.since(mark))
        changes = []
        for change in widget.changes:
            mark = meter.mark()
            execute(page, f"{change.code}\nNone")  # no execute_result of the change code
            seen = _wait_shown(page, widget.name, change.shows, 60_000)
            meter.wait_quiet(page)
            changes.append((change, phase(meter.since(mark)), seen))
        return Result(display, first_row_s, changes)
    finally:
        shutdown_kernel(page)


def _types(p: PhaseBytes) -> str:
    parts = sorted(p.by_type.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {kib(v)}" for k, v in parts)


def main() -> None:
    header(
        f"Widget bytes: kernel -> browser WebSocket bytes, {ROWS:,} rows x 10 columns, "
        "JupyterLab + headless Chromium (LiveTable vs ipydatagrid vs Perspective)"
    )
    results: dict[str, Result] = {}
    started = time.perf_counter()
    with jupyter_lab() as server, chromium() as browser:
        for widget in WIDGETS:
            t0 = time.perf_counter()
            results[widget.name] = _measure(browser, server, widget)
            print(f"  measured {widget.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"  (all three in {time.perf_counter() - started:.1f} s)")

    print("\n  display (the cell that creates and shows the widget), bytes received:")
    print(
        f"  {'widget':<12} {'all frames':>12} {'_esm+_css':>12} {'all - esm/css':>14} "
        f"{'widget msgs':>12} {'frames':>7} {'first row':>10}"
    )
    for name, r in results.items():
        d = r.display
        print(
            f"  {name:<12} {kib(d.total):>12} {kib(d.esm + d.css):>12} "
            f"{kib(d.total - d.esm - d.css):>14} {kib(d.widget):>12} {d.frames:>7} "
            f"{r.first_row_s:>9.2f}s"
        )
        print(f"  {'':<12} _esm {kib(d.esm)}, _css {kib(d.css)}; by type: {_types(d)}")

    print("\n  changes (executed in the kernel while the top rows show), bytes received:")
    print(
        f"  {'widget':<12} {'rows':>5} {'how':<34} {'widget msgs':>12} {'all frames':>12} "
        f"{'frames':>7}  in DOM"
    )
    for name, r in results.items():
        for change, p, seen in r.changes:
            shown = "yes" if seen else ("canvas" if name == "ipydatagrid" else "NOT SEEN")
            print(
                f"  {name:<12} {change.rows:>5} {change.label:<34} {kib(p.widget):>12} "
                f"{kib(p.total):>12} {p.frames:>7}  {shown}"
            )

    live = results["LiveTable"]

    def primary(r: Result, rows: int) -> PhaseBytes:
        return next(p for c, p, _ in r.changes if c.rows == rows and c.primary)

    print("\n  ratios LiveTable / other (same run; < 1 means LiveTable sends less):")
    for other in ("ipydatagrid", "Perspective"):
        o = results[other]
        cells = {
            "display": (live.display.total, o.display.total),
            "display - esm/css": (
                live.display.total - live.display.esm - live.display.css,
                o.display.total - o.display.esm - o.display.css,
            ),
            "1-row change": (primary(live, 1).widget, primary(o, 1).widget),
            "100-row change": (primary(live, 100).widget, primary(o, 100).widget),
        }
        text = ", ".join(f"{k} {a / b:.4f}" if b else f"{k} n/a" for k, (a, b) in cells.items())
        print(f"  LiveTable/{other}: {text}")

    d = live.display
    rest = d.total - d.esm - d.css
    target(
        "LiveTable display < 200 KB besides _esm/_css",
        rest < TARGET_DISPLAY,
        f"{rest:,} bytes ({kib(rest)}; all frames {kib(d.total)}, _esm+_css {kib(d.esm + d.css)})",
    )
    one = primary(live, 1)
    target(
        "LiveTable 1-row change < 2 KB",
        one.widget < TARGET_ONE_ROW,
        f"{one.widget:,} bytes of widget messages ({one.total:,} bytes with the "
        "execute/status messages of running the mutation's code)",
    )


if __name__ == "__main__":
    main()

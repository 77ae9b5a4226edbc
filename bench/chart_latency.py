"""Commit -> DOM latency of a LiveChart of a live aggregate, in a real JupyterLab + Chromium,
and the widget bytes one change costs.

A notebook kernel imports `make_frame(10,000)` (the 10-column data set of WIDGETS.md §5) into
its embedded store as table `items`, and shows two widgets of the same live aggregate,
`db.query("items").group_by("city").agg(n=("_id", "count"), mean_y=("y", "mean"))` (six
groups): a `LiveChart(..., x="city", y="mean_y", kind="bar")` and a `LiveTable` of the same
query (the anchor). Each change patches `y` of one of the first 10 documents in turn (to
1,000,000, then to 0 on the next round: its city's mean moves far enough to move the bars):
the kernel records `time.time()` right before `convex.mutation(...)`, and MutationObservers
in the page record (`performance.timeOrigin + performance.now()`, corrected by the measured
browser - kernel clock offset) when the chart's SVG (the bars' paths and the y axis labels)
and that city's table row text differ from before the commit.

- Phase 1 (paired anchor): both widgets live; every commit updates both, and both times come
  from the same commit (they share the kernel and the page, so each slows the other a little).
- Phase 2 (the headline): the table is closed; the chart alone, its latency split where the
  figure's first comm message leaves the kernel (its comm's `send` is wrapped to record the
  time): kernel (the query's new result, the chart's DataFrame and batch_update) and front
  end (ZMQ, Jupyter server, WebSocket, plotly.js redraw); and, for the engine's share, when
  a plain `on_change` callback of a third subscription to the query runs. Bytes: kernel -> browser
  `comm_msg` frames per change (the FigureWidget's update message and the reset that Plotly
  sends after it), and browser -> kernel `comm_msg` frames (plotly.js reports the new trace
  and layout state back to Python), counted on the page's kernel WebSocket.

Target: chart p50 commit -> DOM < 100 ms (phase 2).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Final

from bench._browser import (
    WsMeter,
    _decode,
    chromium,
    describe,
    execute,
    jupyter_lab,
    open_notebook,
    run_all_cells,
    shutdown_kernel,
)
from bench._common import header, percentile, target

DOCS: Final = 10_000
CHANGES: Final = 30
WARMUP: Final = 3
GAP_MS: Final = 100
TARGET_P50_MS: Final = 100.0

_SETUP: Final = [
    "import time\n%load_ext kernel_ext",
    "from bench._browser import make_frame\n"
    f"convex.import_dataframe('items', make_frame({DOCS}), batch_size=5000, progress=False)",
    "%%convex_query items:by_city\n"
    "return db.query('items').group_by('city').agg(n=('_id', 'count'), mean_y=('y', 'mean'))",
    "%%convex_query items:first10\nreturn db.query('items').take(10)",
    "%%convex_mutation items:touch(id: v.id('items'), y: v.number())\ndb.patch(id, {'y': y})",
    "first = convex.query('items:first10')\n"
    "cities = [row['city'] for row in convex.query('items:by_city')]\n"
    "targets = [(d['_id'], cities.index(d['city'])) for d in first]",
]
_CELLS: Final = [
    "from widgets import LiveChart, LiveTable\n"
    "chart = LiveChart(convex, 'items:by_city', x='city', y='mean_y', kind='bar')\nchart",
    "table = LiveTable(convex, 'items:by_city')\ntable",
]

# Record when the figure's comm sends (its update message) to split kernel and front end.
_INSTRUMENT: Final = """_sent = []
_comm = chart.figure.comm
_comm_send = _comm.send
def _timed_send(*args, **kwargs):
    _sent.append(time.time())
    return _comm_send(*args, **kwargs)
_comm.send = _timed_send
_results = []
_plain = convex.subscribe("items:by_city")
_plain.on_change(lambda value: _results.append(time.time()))"""
_SHOWN: Final = """() => {
  const bars = document.querySelectorAll('.js-plotly-plot .barlayer .point path').length;
  const rows = document.querySelectorAll('.convex-live-table tr[data-position="5"]').length;
  return bars === 6 && rows === 1;
}"""
_OBSERVE: Final = """() => {
  // The drawing: every bar's path and the y axis labels (with autorange, a change can
  // leave the changed bar's own path as it was and move the others and the axis instead).
  const bar = (i) => {
    const plot = document.querySelector('.js-plotly-plot');
    const paths = [...plot.querySelectorAll('.barlayer .point path')].map(p => p.getAttribute('d'));
    const ticks = [...plot.querySelectorAll('.ytick text')].map(t => t.textContent);
    return paths.join(' ') + ' | ' + ticks.join(' ');
  };
  const row = (i) => {
    const tr = document.querySelector(`.convex-live-table tr[data-position="${i}"]`);
    return tr ? tr.textContent : null;
  };
  window.__lat = { idx: -1, bar, row };
  const check = () => {
    const lat = window.__lat;
    if (lat.idx < 0) return;
    const now = performance.timeOrigin + performance.now();
    if (lat.chart === null && bar(lat.idx) !== lat.chartBefore) lat.chart = now;
    if (lat.table === null && row(lat.idx) !== lat.tableBefore) lat.table = now;
  };
  const options = { subtree: true, childList: true, attributes: true, characterData: true };
  new MutationObserver(check).observe(document.querySelector('.js-plotly-plot'), options);
  new MutationObserver(check).observe(document.querySelector('.convex-live-table'), options);
}"""
_EXPECT: Final = """([idx, table]) => {
  const lat = window.__lat;
  lat.chartBefore = lat.bar(idx); lat.tableBefore = lat.row(idx);
  lat.chart = null; lat.table = table ? null : -1; lat.idx = idx;
}"""
_SEEN: Final = "() => window.__lat.chart !== null && window.__lat.table !== null"
_NOW: Final = "() => performance.timeOrigin + performance.now()"


@dataclass
class Samples:
    """Commit -> DOM samples (ms) of one phase."""

    chart_ms: list[float] = field(default_factory=list)
    table_ms: list[float] = field(default_factory=list)
    kernel_ms: list[float] = field(default_factory=list)  # commit -> figure update sent
    engine_ms: list[float] = field(default_factory=list)  # commit -> on_change of the query


@dataclass
class SentMeter:
    """Browser -> kernel `comm_msg` frames (bytes), on the page's kernel WebSockets."""

    sizes: list[int] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        def on_websocket(ws: Any) -> None:
            if "/api/kernels/" in ws.url:
                ws.on("framesent", self._on_frame)

        page.on("websocket", on_websocket)

    def _on_frame(self, payload: str | bytes) -> None:
        try:
            _, msg_type, _, _ = _decode(payload)
        except (ValueError, IndexError, KeyError):
            return
        if msg_type == "comm_msg":
            self.sizes.append(len(payload.encode()) if isinstance(payload, str) else len(payload))


def _clock_offset(page: Any) -> float:
    """Browser `timeOrigin + now()` minus Python's `time.time()` (ms), best of 5 reads."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = time.time()
        browser = float(page.evaluate(_NOW))
        after = time.time()
        rtt = (after - before) * 1e3
        if best is None or rtt < best[0]:
            best = (rtt, browser - (before + after) / 2 * 1e3)
    assert best is not None
    return best[1]


def _change(page: Any, i: int, offset_ms: float, *, table: bool) -> list[float]:
    """One 1-row change: commit -> chart DOM, -> table DOM (NaN when closed), -> the
    figure's first comm message, -> a plain `on_change` of the same query (ms)."""
    target_index = i % 10
    idx = int(execute(page, "", idx=f"targets[{target_index}][1]")["idx"])
    page.evaluate(_EXPECT, [idx, table])
    y = 1_000_000.0 if (i // 10) % 2 == 0 else 0.0  # each change flips its document
    times = execute(
        page,
        f"_t0 = time.time()\nconvex.mutation('items:touch', id=targets[{target_index}][0], y={y})",
        t0="_t0",
    )
    page.wait_for_function(_SEEN, timeout=60_000)
    chart_at, table_at = page.evaluate("() => [window.__lat.chart, window.__lat.table]")
    after = execute(
        page,
        "",
        sent="[s for s in _sent if s >= _t0][:1]",
        result="[s for s in _results if s >= _t0][:1]",
    )
    t0 = float(times["t0"])
    sent, result = json.loads(after["sent"]), json.loads(after["result"])
    kernel = (sent[0] - t0) * 1e3 if sent else float("nan")
    engine = (result[0] - t0) * 1e3 if result else float("nan")
    commit = t0 * 1e3 + offset_ms  # on the browser's clock
    page.wait_for_timeout(GAP_MS)
    return [chart_at - commit, (table_at - commit) if table else float("nan"), kernel, engine]


def _phase(page: Any, offset_ms: float, start: int, *, table: bool) -> Samples:
    samples = Samples()
    for i in range(start, start + WARMUP + CHANGES):
        chart_ms, table_ms, kernel_ms, engine_ms = _change(page, i, offset_ms, table=table)
        if i - start >= WARMUP:
            samples.chart_ms.append(chart_ms)
            samples.table_ms.append(table_ms)
            samples.kernel_ms.append(kernel_ms)
            samples.engine_ms.append(engine_ms)
    return samples


def _fmt(values: list[float]) -> str:
    s = sorted(values)
    return (
        f"p50 {percentile(s, 50):7.1f}  p95 {percentile(s, 95):7.1f}  "
        f"mean {statistics.fmean(s):7.1f}  min {s[0]:6.1f}  max {s[-1]:7.1f} ms"
    )


def _p(values: list[float], p: float) -> float:
    return percentile(sorted(values), p)


def main() -> None:
    header(
        f"Chart latency: LiveChart of a live group_by aggregate ({DOCS:,} documents, 6 groups), "
        f"commit -> DOM for a 1-row change, {CHANGES} changes (+{WARMUP} warm-up) per phase, "
        "JupyterLab + headless Chromium"
    )
    meter, sent = WsMeter(), SentMeter()
    with jupyter_lab() as server, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        meter.attach(page)
        sent.attach(page)
        try:
            open_notebook(page, server, "chart-latency", _CELLS)
            for code in _SETUP:
                execute(page, code)
            run_all_cells(page)
            try:
                page.wait_for_function(_SHOWN, timeout=120_000)
            except Exception:
                raise RuntimeError(f"the chart and table did not show: {describe(page)}") from None
            execute(page, _INSTRUMENT)
            page.evaluate(_OBSERVE)
            page.wait_for_timeout(1000)
            offset = _clock_offset(page)
            paired = _phase(page, offset, 0, table=True)
            execute(page, "table.close()")
            meter.wait_quiet(page, quiet=1.0)
            mark, sent_mark = meter.mark(), len(sent.sizes)
            alone = _phase(page, offset, WARMUP + CHANGES, table=False)
            meter.wait_quiet(page, quiet=1.0)
            frames = meter.since(mark)
            sent_sizes = sent.sizes[sent_mark:]
            updates = json.loads(execute(page, "", n="chart.updates")["n"])
        finally:
            shutdown_kernel(page)
    changes = WARMUP + CHANGES
    comm = [f.size for f in frames if f.msg_type == "comm_msg"]
    widget = sum(f.size for f in frames if f.widget)
    print(f"  clock offset browser - kernel {offset:+.2f} ms; chart updates applied {updates}")
    print(f"  phase 1, chart and table live, same commits (n={len(paired.chart_ms)})")
    print(f"    LiveChart commit -> SVG     {_fmt(paired.chart_ms)}")
    print(f"    LiveTable commit -> row     {_fmt(paired.table_ms)}  (anchor)")
    ratio = _p(paired.chart_ms, 50) / _p(paired.table_ms, 50)
    print(f"    ratio chart / table p50 {ratio:.2f}x, p95 "
          f"{_p(paired.chart_ms, 95) / _p(paired.table_ms, 95):.2f}x")  # fmt: skip
    print(f"  phase 2, chart alone (n={len(alone.chart_ms)})")
    print(f"    LiveChart commit -> SVG     {_fmt(alone.chart_ms)}")
    front = [c - k for c, k in zip(alone.chart_ms, alone.kernel_ms, strict=True)]
    print(f"      commit -> update sent     {_fmt(alone.kernel_ms)}  (kernel: query, chart)")
    print(f"        commit -> on_change     {_fmt(alone.engine_ms)}  (the query's new result)")
    print(f"      update sent -> SVG        {_fmt(front)}  (wire, plotly.js)")
    print(
        f"    bytes per 1-row change: kernel -> browser comm_msg {sum(comm) / changes:,.0f} B "
        f"in {len(comm) / changes:.1f} messages (all widget traffic {widget / changes:,.0f} B); "
        f"browser -> kernel comm_msg {sum(sent_sizes) / changes:,.0f} B "
        f"in {len(sent_sizes) / changes:.1f} messages"
    )
    value = _p(alone.chart_ms, 50)
    target(
        f"p50 chart commit -> DOM < {TARGET_P50_MS:.0f} ms (chart alone, n={len(alone.chart_ms)})",
        value < TARGET_P50_MS,
        f"{value:.1f} ms (p95 {_p(alone.chart_ms, 95):.1f} ms)",
    )


if __name__ == "__main__":
    main()

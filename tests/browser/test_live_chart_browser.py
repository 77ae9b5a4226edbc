"""LiveChart in a real JupyterLab 4 / Notebook 7 in headless Chromium: the plot updates in
place, keeps a zoom, and the page fetches nothing from any host but the Jupyter server."""

from __future__ import annotations

from urllib.parse import urlparse

from jupyter_harness import execute, open_and_run, write_notebook

#: The notebook's cells, for a table of its own: the tests' notebooks may share one store (the
#: Jupyter server's shared store).
CELLS = [
    "%load_ext kernel_ext",
    """%%convex_query pets:summary
return db.query("pets").group_by("kind").agg(n=("_id", "count"))""",
    """%%convex_mutation pets:add(kind: v.string())
return db.insert("pets", {"kind": kind})""",
    """for kind in ["cat", "cat", "dog"]:
    convex.mutation("pets:add", kind=kind)""",
    """from widgets import LiveChart
chart = LiveChart(convex, "pets:summary", x="kind", y="n", kind="bar")
chart""",
]

#: The plot's graph div, its bar values (what plotly.js drew from) and the bars' SVG paths.
BARS = """() => {
  const gd = document.querySelector('.js-plotly-plot');
  if (!gd || !gd.data || !gd.data.length) return null;
  const paths = [...gd.querySelectorAll('.barlayer .point path')].map(p => p.getAttribute('d'));
  return { x: [...gd.data[0].x], y: [...gd.data[0].y], paths };
}"""
BARS_ARE = """([x, y]) => {
  const gd = document.querySelector('.js-plotly-plot');
  return !!gd && !!gd.data && gd.data.length === 1
    && JSON.stringify([...gd.data[0].x]) === JSON.stringify(x)
    && JSON.stringify([...gd.data[0].y]) === JSON.stringify(y)
    && gd.querySelectorAll('.barlayer .point path').length === x.length;
}"""
STATUS = "() => document.querySelector('.clc-status')?.dataset.status"
Y_RANGE = "() => [...document.querySelector('.js-plotly-plot')._fullLayout.yaxis.range]"


def cells(table: str) -> list[str]:
    """`CELLS` over table (and function module) `table`."""
    return [cell.replace("pets", table) for cell in CELLS]


def wait_bars(page, x, y, timeout=20_000):
    page.wait_for_function(BARS_ARE, arg=[x, y], timeout=timeout)


def local_only(urls: list[str]) -> list[str]:
    """The URLs that go to a host other than this machine's Jupyter server."""
    outside = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme in ("data", "about"):
            continue
        if parsed.scheme == "blob":  # blob:http://127.0.0.1:port/uuid
            parsed = urlparse(parsed.path)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            outside.append(url)
    return outside


def test_chart_updates_in_place_keeps_zoom_and_stays_local(lab, browser):
    notebook = write_notebook(lab.root, "chart", cells("pets"))
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        open_and_run(page, lab, notebook)
        wait_bars(page, ["cat", "dog"], [2, 1], timeout=90_000)
        page.wait_for_function(f"() => ({STATUS})() === 'ready'")
        plot = page.query_selector(".js-plotly-plot")
        before = page.evaluate(BARS)
        # A mutation reaches the SVG, on the same plot element.
        assert execute(page, 'convex.mutation("pets:add", kind="dog")') == "ok"
        wait_bars(page, ["cat", "dog"], [2, 2])
        assert page.evaluate(BARS)["paths"] != before["paths"]
        assert plot.evaluate(
            "(el) => el.isConnected && el === document.querySelector('.js-plotly-plot')"
        )
        # The user zooms (as a drag would: a relayout of the y axis); a new result keeps it.
        has_plotly = page.evaluate("() => typeof window.Plotly?.relayout === 'function'")
        if has_plotly:
            page.evaluate(
                "() => window.Plotly.relayout(document.querySelector('.js-plotly-plot'),"
                " {'yaxis.range': [0.5, 7]})"
            )
        else:
            drag_zoom_y(page)
        page.wait_for_function(f"() => ({Y_RANGE})()[1] > 3")  # zoomed, not autorange (0..~3)
        zoomed = page.evaluate(Y_RANGE)
        assert execute(page, 'convex.mutation("pets:add", kind="eel")') == "ok"
        wait_bars(page, ["cat", "dog", "eel"], [2, 2, 1])
        assert page.evaluate(Y_RANGE) == zoomed
        assert plot.evaluate("(el) => el.isConnected")
        # Nothing came from a CDN or any other host.
        assert requests and not local_only(requests), local_only(requests)
    finally:
        page.close()


def drag_zoom_y(page) -> None:
    """Zoom by dragging vertically over the plot area (plotly's default drag mode)."""
    box = page.query_selector(".js-plotly-plot .nsewdrag").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()


def test_updates_sent_while_the_front_end_loads_are_not_lost(lab, browser):
    """Results that reach the page before plotly's JavaScript has loaded (the chart's first
    result right after it is displayed, and a burst of writes in the same cell) still show."""
    burst = """import time
from widgets import LiveChart
early = LiveChart(convex, "early:summary", x="kind", y="n", kind="bar")
display(early)
for _ in range(4):
    convex.mutation("early:add", kind="eel")
    time.sleep(0.05)"""
    notebook = write_notebook(lab.root, "early", [*cells("early")[:4], burst])
    page = browser.new_page()
    try:
        open_and_run(page, lab, notebook)
        wait_bars(page, ["cat", "dog", "eel"], [2, 1, 4], timeout=90_000)
    finally:
        page.close()


def test_notebook7_chart_renders_and_updates(notebook7, browser):
    notebook = write_notebook(notebook7.root, "chart7", cells("pets7"))
    page = browser.new_page()
    try:
        open_and_run(page, notebook7, notebook)
        wait_bars(page, ["cat", "dog"], [2, 1], timeout=90_000)
        assert execute(page, 'convex.mutation("pets7:add", kind="cat")') == "ok"
        wait_bars(page, ["cat", "dog"], [3, 1])
    finally:
        page.close()

"""A 100,000-row LiveTable over a maintained view, in a real JupyterLab in headless Chromium:
it updates in place while sorted by a column (row changes, not whole results)."""

from __future__ import annotations

from jupyter_harness import execute, notebook_text, open_and_run, write_notebook
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

SETUP = """%load_ext kernel_ext"""
SCHEMA = """%%convex_schema
scores = define_table({"n": v.int64(), "score": v.float64()}).index("by_n", ["n"])"""
PATCH = """%%convex_mutation scores:set_score(id: v.id("scores"), score: v.float64())
db.patch(id, {"score": score})"""
LOAD = """import pandas as pd
ids = convex.import_dataframe(
    "scores", pd.DataFrame({"n": range(100_000), "score": [n / 10 for n in range(100_000)]}),
    batch_size=10_000, progress=False)"""
# Returns its query: a maintained view (no .collect()). The table is this test's own: the
# browser tests share one Jupyter server, so one store (another test has a `big` table).
LIVE = """%%convex_query scores:view --live
return db.query("scores").with_index("by_n")"""

ROW_IS = """([n, cells]) => {
  const tr = document.querySelector(`.convex-live-table tr[data-position="${n}"]`);
  return !!tr && JSON.stringify([...tr.cells].map(td => td.textContent)) === JSON.stringify(cells);
}"""
TABLE = "() => document.querySelector('.convex-live-table table')"


def wait_row(page, position: int, cells: list[str], timeout: float = 20_000) -> None:
    page.wait_for_function(ROW_IS, arg=[position, cells], timeout=timeout)


def test_100k_view_updates_in_place_while_sorted(lab, browser):
    notebook = write_notebook(lab.root, "views", [SETUP, SCHEMA, PATCH, LOAD, LIVE])
    page = browser.new_page()
    try:
        open_and_run(page, lab, notebook)
        try:
            wait_row(page, 0, ["0", "0.0"], timeout=180_000)
        except PlaywrightTimeout:
            raise AssertionError(f"the table never showed its first row:\n{notebook_text(page)}")
        expect(page.locator(".convex-live-table .clt-count")).to_have_text("100,000 rows")
        page.evaluate(f"() => {{ ({TABLE})().__marker = 'same'; }}")
        # Sort by score, descending (two clicks: ascending, then descending).
        header = ".convex-live-table th[data-column='score']"
        page.click(header)
        page.wait_for_function(f'() => document.querySelector("{header}").dataset.sort === "asc"')
        page.click(header)
        page.wait_for_function(f'() => document.querySelector("{header}").dataset.sort === "desc"')
        wait_row(page, 0, ["99999", "9999.9"])
        wait_row(page, 1, ["99998", "9999.8"])
        # A patch moves row 500 to the top of the sorted order: it appears at position 0
        # and the former top row shifts down one, in the same table element.
        assert execute(page, 'convex.mutation("scores:set_score", id=ids[500], score=1e6)') == "ok"
        wait_row(page, 0, ["500", "1000000.0"])
        wait_row(page, 1, ["99999", "9999.9"])
        # The kernel follows the view's row changes (the shared store sends them too).
        expect(page.locator(".convex-live-table .clt-mode")).to_have_text("live · incremental")
        # An in-place change of a shown row changes only its cell.
        assert (
            execute(page, 'convex.mutation("scores:set_score", id=ids[99999], score=9999.95)')
            == "ok"
        )
        wait_row(page, 1, ["99999", "9999.95"])
        # Pushed below the window: the next row takes its place.
        assert execute(page, 'convex.mutation("scores:set_score", id=ids[500], score=-1.0)') == "ok"
        wait_row(page, 0, ["99999", "9999.95"])
        wait_row(page, 1, ["99998", "9999.8"])
        assert page.evaluate(f"() => ({TABLE})().__marker") == "same"
        expect(page.locator(".convex-live-table .clt-count")).to_have_text("100,000 rows")
    finally:
        page.close()

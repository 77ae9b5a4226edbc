"""LiveTable layout in a real JupyterLab: wide tables scroll sideways, paged tables say that
more rows are loading (issue 8)."""

from __future__ import annotations

import pytest
from jupyter_harness import open_and_run, write_notebook
from playwright.sync_api import expect

SETUP = """%load_ext kernel_ext"""
WIDE = """%%convex_query wide:row --live
return [{f"column_{i:02d}": f"a fairly long value number {i}" for i in range(30)}]"""

# How the wide table sits in its output area, once its last header cell is drawn.
LAYOUT = """() => {
  const scroller = document.querySelector('.convex-live-table .clt-scroller');
  const output = scroller.closest('.jp-OutputArea-output');
  const last = [...scroller.querySelectorAll('th')].pop();
  return {
    scrollWidth: scroller.scrollWidth, clientWidth: scroller.clientWidth,
    right: scroller.getBoundingClientRect().right,
    outputRight: output.getBoundingClientRect().right,
    lastColumn: last && last.textContent,
  };
}"""
LAST_COLUMN_VISIBLE = """() => {
  const scroller = document.querySelector('.convex-live-table .clt-scroller');
  const box = scroller.getBoundingClientRect();
  const cell = [...scroller.querySelectorAll('tr[data-position="0"] td')].pop();
  if (!cell || cell.textContent !== 'a fairly long value number 29') return false;
  const r = cell.getBoundingClientRect();
  return r.left >= box.left - 1 && r.right <= box.right + 1;
}"""


@pytest.mark.parametrize("app", ["lab", "notebook7"])
def test_wide_table_scrolls_sideways(app, request, browser):
    server = request.getfixturevalue(app)
    notebook = write_notebook(server.root, "wide", [SETUP, WIDE])
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    try:
        open_and_run(page, server, notebook)
        page.wait_for_function(
            "() => { const tr = document.querySelector('.convex-live-table tr[data-position=\"0\"]');"
            " return tr && tr.cells.length === 30 && tr.cells[29].textContent !== ''; }",
            timeout=60_000,
        )
        layout = page.evaluate(LAYOUT)
        assert layout["lastColumn"] == "column_29"
        assert layout["clientWidth"] > 500  # as wide as the output area, not collapsed
        assert layout["scrollWidth"] > layout["clientWidth"]  # it scrolls ...
        assert layout["right"] <= layout["outputRight"] + 1  # ... inside the output area
        page.evaluate(
            "() => { const s = document.querySelector('.convex-live-table .clt-scroller');"
            " s.scrollLeft = s.scrollWidth; }"
        )
        page.wait_for_function(LAST_COLUMN_VISIBLE, timeout=10_000)
    finally:
        page.close()


PAGED_SCHEMA = """%%convex_schema
many = define_table({"n": v.int64()})"""
PAGED_LOAD = """import pandas as pd
convex.import_dataframe("many", pd.DataFrame({"n": range(450)}), progress=False)"""
PAGED = """%%convex_query many:pages(paginationOpts: v.any()) --live
return db.query("many").paginate(paginationOpts)"""


SCROLL_TO_END_UNTIL_ALL = """() => {
  const s = document.querySelector('.convex-live-table .clt-scroller');
  s.scrollTop = s.scrollHeight;
  return document.querySelector('.convex-live-table .clt-count').textContent === '450 rows';
}"""


def test_paged_table_says_it_is_loading_more(lab, browser):
    notebook = write_notebook(lab.root, "paged", [SETUP, PAGED_SCHEMA, PAGED_LOAD, PAGED])
    page = browser.new_page()
    try:
        open_and_run(page, lab, notebook)
        count = page.locator(".convex-live-table .clt-count")
        expect(count).to_contain_text("loading more", timeout=60_000)
        assert "+" not in count.inner_text()
        # Keep scrolling to the end while pages load: then the count is exact.
        page.wait_for_function(SCROLL_TO_END_UNTIL_ALL, timeout=30_000, polling=100)
        expect(count).to_have_text("450 rows")
    finally:
        page.close()

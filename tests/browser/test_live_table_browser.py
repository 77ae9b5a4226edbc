"""LiveTable in a real JupyterLab 4 / Notebook 7 in headless Chromium."""

from __future__ import annotations

from jupyter_harness import execute, open_and_run, write_notebook
from playwright.sync_api import expect

SETUP = """%load_ext kernel_ext"""
SCHEMA = """%%convex_schema
items = define_table({"n": v.int64(), "label": v.string()}).index("by_n", ["n"])"""
ADD = """%%convex_mutation items:add(n: v.int64(), label: v.string())
return db.insert("items", {"n": n, "label": label})"""
SET = """%%convex_mutation items:set_label(id: v.id("items"), label: v.string())
db.patch(id, {"label": label})"""
SEED = """ids = [convex.mutation("items:add", n=i, label=f"row {i}") for i in range(50)]"""
LIVE = """%%convex_query items:list --live
return db.query("items").with_index("by_n").collect()"""

ROW_KINDS = """(n) => {
  const tr = document.querySelector(`.convex-live-table tr[data-position="${n}"]`);
  return tr ? [...tr.cells].map(td => td.dataset.kind) : null;
}"""


ROW_IS = """([n, cells]) => {
  const tr = document.querySelector(`.convex-live-table tr[data-position="${n}"]`);
  return !!tr && JSON.stringify([...tr.cells].map(td => td.textContent)) === JSON.stringify(cells);
}"""
#: Resolves after the browser has handled pending scroll events and drawn a frame.
NEXT_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def wait_row(page, position: int, cells: list[str], timeout: float = 10_000) -> None:
    """Wait until the row at `position` shows exactly `cells` (its content, not just its
    element: a row is first drawn as an empty placeholder until its data arrives)."""
    page.wait_for_function(ROW_IS, arg=[position, cells], timeout=timeout)


def test_mutation_patches_row_in_place(lab, browser):
    notebook = write_notebook(lab.root, "patch", [SETUP, SCHEMA, ADD, SET, SEED, LIVE])
    page = browser.new_page()
    try:
        open_and_run(page, lab, notebook)
        wait_row(page, 3, ["3", "row 3"], timeout=60_000)
        # Kinds travel as letters and style the cells (numbers right-aligned, etc.).
        assert page.evaluate(ROW_KINDS, 3) == ["int", "str"]
        # Mark the table element and scroll a bit: both must survive the update.
        page.evaluate(
            "() => { const t = document.querySelector('.convex-live-table table'); t.__marker = 'same'; document.querySelector('.clt-scroller').scrollTop = 56; }"
        )
        page.evaluate(NEXT_FRAMES)  # the scroll handler has run before the mutation
        status = execute(page, 'convex.mutation("items:set_label", id=ids[3], label="changed!")')
        assert status == "ok"
        wait_row(page, 3, ["3", "changed!"])
        assert (
            page.evaluate("() => document.querySelector('.convex-live-table table').__marker")
            == "same"
        )
        assert page.evaluate("() => document.querySelector('.clt-scroller').scrollTop") == 56
        assert page.evaluate(
            "() => document.querySelector('.convex-live-table tr[data-position=\"3\"] td.clt-flash') !== null"
        )
        # Sort by clicking a header (kernel-side), then a new row keeps the sort.
        page.click(".convex-live-table th[data-column='n']")
        page.click(".convex-live-table th[data-column='n']")
        page.wait_for_function(
            "() => document.querySelector(\".convex-live-table th[data-column='n']\").dataset.sort === 'desc'"
        )
        page.evaluate("() => { document.querySelector('.clt-scroller').scrollTop = 0; }")
        wait_row(page, 0, ["49", "row 49"])
        execute(page, 'convex.mutation("items:add", n=1000, label="top")')
        wait_row(page, 0, ["1000", "top"])
        assert (
            page.evaluate(
                "() => document.querySelector(\".convex-live-table th[data-column='n']\").dataset.sort"
            )
            == "desc"
        )
        assert (
            page.evaluate("() => document.querySelector('.convex-live-table table').__marker")
            == "same"
        )
        expect(page.locator(".convex-live-table .clt-count")).to_have_text("51 rows")
    finally:
        page.close()


def test_error_state_shows_query_message(lab, browser):
    failing = """%%convex_query broken --live
raise ConvexError("the query failed on purpose")"""
    notebook = write_notebook(
        lab.root, "error", [SETUP, "from kernel_ext import ConvexError", failing]
    )
    page = browser.new_page()
    try:
        open_and_run(page, lab, notebook)
        expect(page.locator(".convex-live-table[data-status='error'] .clt-status")).to_contain_text(
            "the query failed on purpose", timeout=60_000
        )
    finally:
        page.close()


def test_100k_rows_scroll_to_the_end(lab, browser):
    seed = """%%convex_schema
big = define_table({"n": v.int64()}).index("by_n", ["n"])"""
    load = """import pandas as pd
convex.import_dataframe("big", pd.DataFrame({"n": range(100_000)}), batch_size=20_000, progress=False)"""
    live = """%%convex_query big:all --live
return db.query("big").with_index("by_n").collect()"""
    notebook = write_notebook(lab.root, "big", [SETUP, seed, load, live])
    page = browser.new_page()
    try:
        open_and_run(page, lab, notebook)
        wait_row(page, 0, ["0"], timeout=120_000)
        expect(page.locator(".convex-live-table .clt-count")).to_have_text("100,000 rows")
        rows_in_dom = page.evaluate(
            "() => document.querySelectorAll('.convex-live-table tbody tr[data-key]').length"
        )
        assert rows_in_dom < 200  # only the window is in the browser
        page.evaluate(
            "() => { const s = document.querySelector('.clt-scroller'); s.scrollTop = s.scrollHeight; }"
        )
        wait_row(page, 99999, ["99999"], timeout=20_000)
    finally:
        page.close()


def test_notebook7_renders_and_updates(notebook7, browser):
    notebook = write_notebook(notebook7.root, "nb7", [SETUP, SCHEMA, ADD, SET, SEED, LIVE])
    page = browser.new_page()
    try:
        open_and_run(page, notebook7, notebook)
        wait_row(page, 0, ["0", "row 0"], timeout=60_000)
        execute(page, 'convex.mutation("items:set_label", id=ids[0], label="nb7")')
        wait_row(page, 0, ["0", "nb7"])
    finally:
        page.close()

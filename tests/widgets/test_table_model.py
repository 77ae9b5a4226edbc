"""The pure table model: formatting, kernel-side sort, windows and row diffs."""

from __future__ import annotations

import math

from kernel_ext import UNDEFINED
from widgets.table_model import TableModel, format_cell


def docs(*values):
    return [{"_id": f"id{i}", "_creationTime": float(i), "n": v} for i, v in enumerate(values)]


def test_format_cell_is_readable_and_exact():
    assert format_cell(2**63 - 1) == ("9223372036854775807", "int")
    assert format_cell(math.nan) == ("NaN", "float")
    assert format_cell(-math.inf) == ("-∞", "float")
    assert format_cell(None) == ("null", "null")
    assert format_cell(UNDEFINED) == ("", "missing")
    assert format_cell(b"\x00\xff") == ("<2 bytes: 00 ff>", "bytes")
    assert format_cell({"a": [1, "x"]}) == ("{a: [1, 'x']}", "object")
    assert format_cell(True) == ("true", "bool")


def test_system_columns_hidden_unless_asked():
    model = TableModel()
    model.set_rows(docs(1, 2))
    assert model.columns == ["n"]
    shown = TableModel(show_system=True)
    shown.set_rows(docs(1))
    assert shown.columns == ["_id", "_creationTime", "n"]


def test_first_patch_sends_window_then_only_changes():
    model = TableModel()
    model.set_rows(docs(*range(10)))
    model.set_window(0, 5)
    first = model.window_patch()
    assert first.total == 10
    assert [p for p, _, _ in first.rows] == [0, 1, 2, 3, 4]
    assert first.columns == ["n"]
    rows = docs(*range(10))
    rows[3]["n"] = 99
    model.set_rows(rows)
    second = model.window_patch()
    assert second.columns is None
    assert second.rows == [(3, "id3", [("99", "int")])]
    rows.append({"_id": "id10", "_creationTime": 10.0, "n": 5})
    model.set_rows(rows)
    third = model.window_patch()  # appended outside the window: only the count changes
    assert third.rows == []
    assert third.total == 11


def test_sort_is_exact_over_all_rows_and_uses_total_order():
    model = TableModel()
    model.set_rows(docs(3, "a", None, 1.5, 2))
    model.toggle_sort("n")
    assert [model.row_at(p)["n"] for p in range(5)] == [None, 2, 3, 1.5, "a"]
    model.toggle_sort("n")
    assert [model.row_at(p)["n"] for p in range(5)] == ["a", 1.5, 3, 2, None]
    model.toggle_sort("n")
    assert model.sort_column is None


def test_snapshot_html_has_first_rows_and_count():
    model = TableModel()
    model.set_rows(docs(*range(30)))
    html = model.snapshot_html(max_rows=3)
    assert html.count("<tr>") == 4  # header + 3 rows
    assert "30 rows (27 more not shown)" in html
    assert "overflow-x: auto" in html  # a wide table scrolls sideways in static viewers too


def test_snapshot_of_a_paged_result_says_more_rows_exist():
    model = TableModel()
    model.set_rows(docs(*range(5)))
    assert "5 rows loaded (the query has more)" in model.snapshot_html(complete=False)


def test_non_document_results():
    model = TableModel()
    model.set_rows(42)
    assert model.columns == ["value"]
    assert model.cells_at(0) == [("42", "int")]
    model.set_rows({"page": docs(1), "isDone": True, "continueCursor": "x"})
    assert model.columns == ["n"]


def test_the_wire_message_sends_kinds_once_per_message_unless_a_row_differs():
    from widgets.table_model import WindowPatch

    patch = WindowPatch(
        total=3,
        offset=0,
        rows=[
            (0, "a", [("1", "int"), ("x", "str")]),
            (1, "b", [("2", "int"), ("", "missing")]),
            (2, "c", [("3", "int"), ("y", "str")]),
        ],
        columns=["n", "s"],
    )
    assert patch.to_message() == {
        "total": 3,
        "offset": 0,
        "kinds": "is",
        "rows": [[0, "a", ["1", "x"]], [1, "b", ["2", ""], "im"], [2, "c", ["3", "y"]]],
        "columns": ["n", "s"],
    }
    assert WindowPatch(total=0, offset=0, rows=[]).to_message()["kinds"] == ""


def test_every_kind_has_a_wire_letter_the_front_end_knows():
    """The front end maps the letters back (widgets/static/live_table.js, KINDS)."""
    import re
    from pathlib import Path

    from widgets.table_model import KIND_CODES

    js = (Path(__file__).parents[2] / "widgets" / "static" / "live_table.js").read_text()
    table = dict(re.findall(r"(\w): \"(\w+)\"", js.split("const KINDS = {", 1)[1].split("}", 1)[0]))
    assert table == {letter: kind for kind, letter in KIND_CODES.items()}
    assert len(set(KIND_CODES.values())) == len(KIND_CODES)

"""The LiveTable's pure model: rows by id, columns, kernel-side sort, a window, row diffs.

The browser shows a window of the (sorted) rows. `TableModel.set_rows` takes a new result and
`TableModel.window_patch` says what the browser must change: the cells of the window positions
whose row changed, and the new row count. Nothing here does I/O.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kernel_ext import UNDEFINED
from kernel_ext import compare_values as compare

__all__ = ["KIND_CODES", "Cell", "TableModel", "WindowPatch", "format_cell"]

HIDDEN_BY_DEFAULT: Final = ("_id", "_creationTime")
_MAX_TEXT: Final = 200
_FLOAT_SAFE: Final = 2**53

#: A formatted cell: (display text, kind) where kind is one of "int", "float", "str", "bool",
#: "null", "missing", "bytes", "array", "object", "id".
Cell = tuple[str, str]
#: One letter per kind on the wire (the front end maps them back; keep the two in step).
KIND_CODES: Final = {
    "int": "i",
    "float": "f",
    "str": "s",
    "bool": "b",
    "null": "n",
    "missing": "m",
    "bytes": "y",
    "array": "a",
    "object": "o",
    "id": "d",
}


def _short(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _nested(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_nested(x)}" for k, x in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_nested(x) for x in value) + "]"
    return repr(value) if isinstance(value, str) else format_cell(value)[0]


def format_cell(value: Any) -> Cell:
    """Readable text and a kind for one value: ints exact at any size, floats with NaN/inf,
    None vs missing, bytes as a short hex preview, nested values compactly."""
    if value is UNDEFINED:
        return "", "missing"
    if value is None:
        return "null", "null"
    if isinstance(value, bool):
        return ("true" if value else "false"), "bool"
    if isinstance(value, int):
        return str(value), "int"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN", "float"
        if math.isinf(value):
            return ("∞" if value > 0 else "-∞"), "float"
        return repr(value), "float"
    if isinstance(value, str):
        return _short(value), "str"
    if isinstance(value, bytes):
        preview = value[:16].hex(" ")
        return f"<{len(value)} bytes: {preview}{' …' if len(value) > 16 else ''}>", "bytes"
    if isinstance(value, list):
        return _short(_nested(value)), "array"
    if isinstance(value, dict):
        return _short(_nested(value)), "object"
    return _short(repr(value)), "str"


def _row_key(row: Any, index: int) -> str:
    if isinstance(row, dict) and isinstance(row.get("_id"), str):
        return str(row["_id"])
    return f"#{index}"


@dataclass(frozen=True)
class WindowPatch:
    """What the browser must apply: new total, the window offset, and the changed rows
    (`(position, row key, cells)`); `columns` is set only when the columns changed."""

    total: int
    offset: int
    rows: list[tuple[int, str, list[Cell]]]
    columns: list[str] | None = None

    def to_message(self) -> dict[str, Any]:
        """The JSON-able message for the front end. A row is `[position, key, texts]`, plus
        its cells' kinds as a string of `KIND_CODES` letters when they differ from the
        message's `kinds` (rows of one query mostly share them: sent once, not per cell)."""
        rows: list[list[Any]] = []
        shared: str | None = None
        for position, key, cells in self.rows:
            texts = [text for text, _ in cells]
            kinds = "".join([KIND_CODES[kind] for _, kind in cells])
            if shared is None:
                shared = kinds
            rows.append(
                [position, key, texts] if kinds == shared else [position, key, texts, kinds]
            )
        message: dict[str, Any] = {
            "total": self.total,
            "offset": self.offset,
            "kinds": shared or "",
            "rows": rows,
        }
        if self.columns is not None:
            message["columns"] = self.columns
        return message


@dataclass
class TableModel:
    """Rows (in result order), the sort applied to them, and the window the browser holds."""

    show_system: bool = False
    rows: list[Any] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    sort_column: str | None = None
    sort_descending: bool = False
    offset: int = 0
    limit: int = 100
    _order: list[int] = field(default_factory=list)
    _sent: dict[int, tuple[str, list[Cell]]] = field(default_factory=dict)
    _sent_columns: list[str] | None = None

    # -- inputs --------------------------------------------------------------------------

    def set_rows(self, result: Any) -> None:
        """Take a new query result: a list of documents (or values), a single document, a
        page (`{"page": [...]}`) or None."""
        if isinstance(result, dict) and isinstance(result.get("page"), list):
            result = result["page"]
        if result is None:
            rows: list[Any] = []
        elif isinstance(result, list):
            rows = result
        else:
            rows = [result]
        self.rows = rows
        self.columns = self._columns_of(rows)
        self._resort()

    def _columns_of(self, rows: Sequence[Any]) -> list[str]:
        seen: dict[str, None] = {}
        for row in rows:
            if isinstance(row, dict):
                seen.update(dict.fromkeys(row))
            else:
                seen["value"] = None
        columns = list(seen)
        if not self.show_system:
            columns = [c for c in columns if c not in HIDDEN_BY_DEFAULT]
        return columns

    def set_sort(self, column: str | None, descending: bool = False) -> None:
        """Sort all rows by `column` (None: result order), exactly, in the kernel."""
        self.sort_column, self.sort_descending = column, descending
        self._resort()

    def toggle_sort(self, column: str) -> None:
        """A header click: ascending, then descending, then back to result order."""
        if self.sort_column != column:
            self.set_sort(column, False)
        elif not self.sort_descending:
            self.set_sort(column, True)
        else:
            self.set_sort(None)

    def set_window(self, offset: int, limit: int) -> None:
        """The positions the browser shows (plus its margin)."""
        self.offset = max(0, int(offset))
        self.limit = max(1, min(int(limit), 1000))

    def _resort(self) -> None:
        order = list(range(len(self.rows)))
        column = self.sort_column
        if column is not None:

            def cell(i: int) -> Any:
                row = self.rows[i]
                return row.get(column, UNDEFINED) if isinstance(row, dict) else row

            def by_value(a: int, b: int) -> int:
                return compare(cell(a), cell(b))

            order.sort(
                key=functools.cmp_to_key(by_value),
                reverse=self.sort_descending,
            )
        self._order = order

    # -- outputs -------------------------------------------------------------------------

    def row_at(self, position: int) -> Any:
        """The row shown at a position (after sorting)."""
        return self.rows[self._order[position]]

    def key_at(self, position: int) -> str:
        """The id (or `#index`) of the row shown at a position."""
        index = self._order[position]
        return _row_key(self.rows[index], index)

    def cells_at(self, position: int) -> list[Cell]:
        """The formatted cells of the row at a position, in column order."""
        row = self.row_at(position)
        if not isinstance(row, dict):
            return [format_cell(row)]
        return [format_cell(row.get(c, UNDEFINED)) for c in self.columns]

    def window_patch(self, *, full: bool = False) -> WindowPatch:
        """The changes since the last patch for the current window (everything if `full`)."""
        if full or self._sent_columns != self.columns:
            self._sent = {}
        offset = min(self.offset, max(0, len(self.rows) - 1))
        end = min(len(self.rows), offset + self.limit)
        changed: list[tuple[int, str, list[Cell]]] = []
        window: dict[int, tuple[str, list[Cell]]] = {}
        for position in range(offset, end):
            entry = (self.key_at(position), self.cells_at(position))
            window[position] = entry
            if self._sent.get(position) != entry:
                changed.append((position, *entry))
        columns = None if self._sent_columns == self.columns and not full else list(self.columns)
        self._sent, self._sent_columns = window, list(self.columns)
        return WindowPatch(len(self.rows), offset, changed, columns)

    def positions_of(self, keys: Sequence[str]) -> list[int]:
        """Positions of rows by key (for selection kept across sorts)."""
        wanted = set(keys)
        return [p for p in range(len(self.rows)) if self.key_at(p) in wanted]

    def snapshot_html(self, max_rows: int = 20, *, complete: bool = True) -> str:
        """A static HTML table of the first rows and the row count (for viewers without a
        kernel), in a box that scrolls sideways when the table is wide. `complete=False`
        (a paginated query with more pages): the count says more rows exist."""
        from html import escape

        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = []
        for position in range(min(max_rows, len(self.rows))):
            cells = "".join(f"<td>{escape(text)}</td>" for text, _ in self.cells_at(position))
            body.append(f"<tr>{cells}</tr>")
        more = len(self.rows) - min(max_rows, len(self.rows))
        loaded = " loaded (the query has more)" if not complete else ""
        footer = (
            f"<p>{len(self.rows)} rows{loaded}"
            + (f" ({more} more not shown)" if more else "")
            + "</p>"
        )
        return (
            "<div style='overflow-x: auto; max-width: 100%'>"
            f"<table class='convex-live-table-static'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>{footer}"
        )

"""The LiveTable's pure model: rows by id, columns, kernel-side sort, a window, row diffs.

The browser shows a window of the (sorted) rows. `TableModel.set_rows` takes a new result and
`TableModel.window_patch` says what the browser must change: the cells of the window positions
whose row changed, and the new row count. Nothing here does I/O.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kernel_ext import UNDEFINED
from widgets.sorted_order import SortedOrder

__all__ = [
    "KIND_CODES",
    "Cell",
    "TableModel",
    "WindowPatch",
    "declared_kinds",
    "format_cell",
    "format_declared",
]

HIDDEN_BY_DEFAULT: Final = ("_id", "_creationTime")
_MAX_TEXT: Final = 200
_FLOAT_SAFE: Final = 2**53

#: A formatted cell: (display text, kind) where kind is one of "int", "float", "str", "bool",
#: "null", "missing", "bytes", "array", "object", "id", "date".
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
    "date": "t",
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


def _as_rows(result: Any) -> Sequence[Any]:
    """The rows of a query result: a list or other sequence (a view's immutable snapshot) as
    it is, a page's rows, None as none, anything else as one row."""
    if isinstance(result, dict) and isinstance(result.get("page"), list):
        return list(result["page"])
    if result is None:
        return []
    if isinstance(result, Sequence) and not isinstance(result, str | bytes):
        return result
    return [result]


def _date_text(value: Any) -> str:
    """Milliseconds since the epoch (UTC), as `import_dataframe` stores datetimes."""
    import datetime

    try:
        stamp = datetime.datetime.fromtimestamp(value / 1000, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return format_cell(value)[0]
    text = stamp.isoformat(sep=" ").replace("+00:00", "")
    return text.removesuffix(" 00:00:00").removesuffix(".000000")


def declared_kinds(info: Mapping[str, Any]) -> dict[str, str]:
    """How to show each column, from what the store knows of it (`client.column_info`):
    `"id"` for `v.id(...)` fields, `"int"`/`"float"` for int64/float64 ones, `"date"` for the
    datetime columns `import_dataframe` recorded. Columns the store knows nothing of (or
    whose declared type is a union or `v.any()`) are shown by their values' types."""
    kinds: dict[str, str] = {}
    for column, facts in info.items():
        dtype = str(facts.get("dtype") or "")
        declared = (facts.get("validator") or {}).get("type")
        if dtype.startswith("datetime64"):
            kinds[column] = "date"
        elif declared == "id":
            kinds[column] = "id"
        elif declared == "bigint":
            kinds[column] = "int"
        elif declared == "number":
            kinds[column] = "float"
    kinds.setdefault("_creationTime", "date")
    kinds.setdefault("_id", "id")
    return kinds


def format_declared(value: Any, kind: str | None) -> Cell:
    """`format_cell`, but by the column's declared kind when the value fits it."""
    t = type(value)
    if kind == "date" and (t is float or t is int):
        return _date_text(value), "date"
    if kind == "id" and t is str:
        return value, "id"
    if kind == "float" and t is int:
        return repr(float(value)) if abs(value) <= _FLOAT_SAFE else str(value), "float"
    return format_cell(value)


@dataclass(frozen=True)
class WindowPatch:
    """What the browser must apply: new total, the window offset, and the changed rows
    (`(position, row key, cells)`); `columns` is set only when the columns changed.

    `splices` (`[position, deleted, inserted]`, applied in order before the rows) move the
    rows the browser holds when rows were removed or inserted before or inside its window;
    `reset` tells it to drop every row it holds first."""

    total: int
    offset: int
    rows: list[tuple[int, str, list[Cell]]]
    columns: list[str] | None = None
    splices: list[list[int]] = field(default_factory=list)
    reset: bool = False

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
        if self.splices:
            message["splices"] = self.splices
        if self.reset:
            message["reset"] = True
        return message


@dataclass
class TableModel:
    """Rows (in result order), the order they are shown in, and the window the browser holds.

    Two ways in: `set_rows(result)` replaces everything (a re-run query), `apply_diff(value,
    diff)` applies a maintained view's change (`Subscription` results with a `diff`): then
    nothing costs O(rows): the rows stay the view's immutable snapshot (never copied), the
    column set is updated from the changed rows only, a sort by a column is a `SortedOrder`
    updated per changed row, and `window_patch` formats only the window's changed rows.
    """

    show_system: bool = False
    rows: Sequence[Any] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    sort_column: str | None = None
    sort_descending: bool = False
    offset: int = 0
    limit: int = 100
    #: Declared display kinds by column (`declared_kinds`); others by the values' types.
    column_kinds: dict[str, str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)  # rows holding each column
    _sorted: SortedOrder | None = None
    _sent: dict[int, tuple[str, list[Cell]]] = field(default_factory=dict)
    _sent_columns: list[str] | None = None
    _dirty: set[int] = field(default_factory=set)  # window positions to format again
    _splices: list[list[int]] = field(default_factory=list)
    _reset: bool = False

    # -- inputs --------------------------------------------------------------------------

    def set_rows(self, result: Any) -> None:
        """Take a new query result: a list of documents (or values), a single document, a
        page (`{"page": [...]}`) or None. Every row is looked at (columns, sort)."""
        self.rows = _as_rows(result)
        self._sorted = None  # new rows: a sort index is built again
        self._counts = {}
        for row in self.rows:
            self._count(row, 1)
        self.columns = self._visible_columns()
        self._resort()
        self._dirty.update(self._sent)  # compared with what was sent: unchanged rows stay

    def apply_diff(self, value: Any, diff: Any) -> None:
        """Take a maintained view's new value and its `ResultDiff` from the current rows
        (`diff.removed` positions in `self.rows`; `inserted`/`updated` in the new value).
        Costs O(changed rows x log n) plus O(window) per changed row that moves the window."""
        previous, rows = self.rows, _as_rows(value)
        removed = [previous[p] for p in diff.removed]
        updated = [
            (p, old, row) for (p, row), old in zip(diff.updated, _old_positions(diff), strict=True)
        ]
        old_updated = [previous[old] for _, old, _ in updated]
        self.rows = rows
        for row in removed + old_updated:
            self._count(row, -1)
        for row in [row for _, row in diff.inserted] + [row for _, _, row in updated]:
            self._count(row, 1)
        columns = self._visible_columns()
        if columns != self.columns:
            self.columns = columns
        if self._sorted is None:
            self._apply_in_result_order(diff)
        else:
            self._apply_sorted(removed, diff, updated, old_updated)

    def _apply_in_result_order(self, diff: Any) -> None:
        for position in reversed(diff.removed):
            self._splice(position, 1, 0)
        for position, _ in diff.inserted:
            self._splice(position, 0, 1)
        self._mark(p for p, _ in diff.updated)

    def _apply_sorted(
        self,
        removed: list[Any],
        diff: Any,
        updated: list[tuple[int, int, Any]],
        old_updated: list[Any],
    ) -> None:
        order = self._sorted
        assert order is not None
        for row in removed:
            self._splice(order.remove(row), 1, 0)
        for (_, _, row), old in zip(updated, old_updated, strict=True):
            before = order.remove(old)
            after = order.insert(row)
            if before == after:  # changed in place: only its cells change
                self._mark((after,))
            else:
                self._splice(before, 1, 0)
                self._splice(after, 0, 1)
        for _, row in diff.inserted:
            self._splice(order.insert(row), 0, 1)

    def _splice(self, position: int, deleted: int, inserted: int) -> None:
        """Rows `position .. position + deleted` left and `inserted` rows arrived there:
        move what the browser holds (only window rows: O(window)), and tell it to do so."""
        # Past everything the browser holds: only the total changes. (Earlier splices of
        # this flush may have pushed held rows past the window's end: those still count.)
        end = self.offset + self.limit
        if self._reset or position >= max(end, max(self._sent, default=-1) + 1):
            return
        if len(self._splices) > self.limit:  # a big change: resending the window is cheaper
            self._reset, self._splices, self._sent = True, [], {}
            return
        shift = inserted - deleted
        moved: dict[int, tuple[str, list[Cell]]] = {}
        for p, entry in self._sent.items():
            if p >= position + deleted:
                moved[p + shift] = entry
            elif p < position:
                moved[p] = entry
        self._sent = moved
        # Drop the deleted rows' marks before shifting: a changed row right after them moves
        # into their positions and must stay marked.
        self._dirty = {
            p + shift if p >= position + deleted else p
            for p in self._dirty
            if not position <= p < position + deleted
        }
        self._mark(range(position, min(end, position + inserted)))
        self._splices.append([position, deleted, inserted])

    def _mark(self, positions: Iterable[int]) -> None:
        """Window positions whose row changed (others are not held by the browser)."""
        start, end, sent = self.offset, self.offset + self.limit, self._sent
        self._dirty.update(p for p in positions if start <= p < end or p in sent)

    def _count(self, row: Any, delta: int) -> None:
        counts = self._counts
        for column in row if isinstance(row, dict) else ("value",):
            left = counts.get(column, 0) + delta
            if left:
                counts[column] = left
            else:
                del counts[column]

    def _visible_columns(self) -> list[str]:
        columns = list(self._counts)
        if not self.show_system:
            columns = [c for c in columns if c not in HIDDEN_BY_DEFAULT]
        return columns

    def set_sort(self, column: str | None, descending: bool = False) -> None:
        """Sort all rows by `column` (None: result order), exactly, in the kernel."""
        self.sort_column, self.sort_descending = column, descending
        self._resort()
        self._dirty.update(self._sent)

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
        end = self.offset + self.limit
        self._sent = {p: e for p, e in self._sent.items() if self.offset <= p < end}

    def _resort(self) -> None:
        column = self.sort_column
        if column is None:
            self._sorted = None
        elif self._sorted is not None and self._sorted.column == column:
            self._sorted.descending = self.sort_descending  # the same index, read backwards
        else:
            self._sorted = SortedOrder(self.rows, column, descending=self.sort_descending)

    # -- outputs -------------------------------------------------------------------------

    @property
    def incremental(self) -> bool:
        """True when the rows are a maintained view's snapshot (not a list)."""
        return not isinstance(self.rows, list)

    def row_at(self, position: int) -> Any:
        """The row shown at a position (after sorting)."""
        if self._sorted is not None:
            return self._sorted.row_at(position)
        return self.rows[position]

    def key_at(self, position: int) -> str:
        """The id (or `#position`) of the row shown at a position."""
        return _row_key(self.row_at(position), position)

    def cells_at(self, position: int) -> list[Cell]:
        """The formatted cells of the row at a position, in column order."""
        return self._cells(self.row_at(position))

    def _cells(self, row: Any) -> list[Cell]:
        if not isinstance(row, dict):
            return [format_cell(row)]
        kinds = self.column_kinds
        return [format_declared(row.get(c, UNDEFINED), kinds.get(c)) for c in self.columns]

    def window_patch(self, *, full: bool = False) -> WindowPatch:
        """The changes since the last patch for the current window (everything if `full`):
        the rows of window positions that changed or that the browser does not hold."""
        reset = self._reset or full or self._sent_columns != self.columns
        if reset:
            self._sent = {}
        total = len(self.rows)
        offset = min(self.offset, max(0, total - 1))
        end = min(total, offset + self.limit)
        changed: list[tuple[int, str, list[Cell]]] = []
        sent = self._sent
        for position in range(offset, end):
            if position in sent and position not in self._dirty:
                continue
            row = self.row_at(position)
            entry = (_row_key(row, position), self._cells(row))
            if sent.get(position) != entry:
                changed.append((position, *entry))
                sent[position] = entry
        self._sent = {p: e for p, e in sent.items() if offset <= p < end}
        columns = None if not full and self._sent_columns == self.columns else list(self.columns)
        splices = [] if reset else self._splices
        self._sent_columns, self._splices, self._dirty = list(self.columns), [], set()
        self._reset = False
        return WindowPatch(total, offset, changed, columns, splices, reset)

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


def _old_positions(diff: Any) -> list[int]:
    """The positions in the previous value of the rows that `diff` updates (updated rows
    are neither removed nor inserted), in one merge walk over its ascending positions."""
    inserted = [p for p, _ in diff.inserted]
    removed = diff.removed
    olds: list[int] = []
    skipped = 0  # removed positions before the current row's old position
    for position, _ in diff.updated:
        kept = position - bisect.bisect_left(inserted, position)  # its index after removals
        while skipped < len(removed) and removed[skipped] <= kept + skipped:
            skipped += 1
        olds.append(kept + skipped)
    return olds

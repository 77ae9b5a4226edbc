"""LiveTable over maintained views: row diffs applied, not whole results; sorting kept by a
sort index updated per change; column kinds from the store's schema and import records.

A `Browser` below replays the widget's messages exactly as live_table.js does (splices, reset,
rows by position), so the tests check what the page ends up showing, not just the model."""

from __future__ import annotations

import datetime
import functools
from typing import Any

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polling import wait_for

import kernel_ext
from kernel_ext import compare_values, define_schema, define_table, mutation, query, v
from kernel_ext.store.rows import SortedRows
from kernel_ext.store.views import ResultDiff, diff_values
from widgets import LiveTable
from widgets.table_model import TableModel

ROWS = 100_000


class Browser:
    """What live_table.js keeps: the cached window rows by position."""

    def __init__(self) -> None:
        self.cache: dict[int, tuple[str, list[str]]] = {}
        self.total = 0
        self.offset = 0
        self.columns: list[str] = []

    def receive(self, message: dict[str, Any], limit: int) -> None:
        if "columns" in message:
            self.columns = message["columns"]
            self.cache.clear()
        if message.get("reset"):
            self.cache.clear()
        for pos, deleted, inserted in message.get("splices", []):
            moved = {}
            for p, entry in self.cache.items():
                if p >= pos + deleted:
                    moved[p + inserted - deleted] = entry
                elif p < pos:
                    moved[p] = entry
            self.cache = moved
        self.total, self.offset = message["total"], message["offset"]
        end = self.offset + max(limit, len(message["rows"]))
        self.cache = {
            p: e for p, e in self.cache.items() if self.offset <= p < min(end, self.total)
        }
        for pos, key, texts, *_ in message["rows"]:
            self.cache[pos] = (key, texts)

    def window(self, limit: int) -> list[tuple[str, list[str]]]:
        end = min(self.total, self.offset + limit)
        return [self.cache[p] for p in range(self.offset, end)]


class Recorder:
    def __init__(self, table: LiveTable) -> None:
        self.messages: list[dict[str, Any]] = []
        table.send = lambda content, buffers=None: self.messages.append(  # type: ignore[method-assign]
            orjson.loads(bytes(buffers[0]))
        )

    def after(self, count: int, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        return wait_for(
            lambda: next((m for m in self.messages[count:] if predicate(m)), None), timeout
        )


def _schema() -> Any:
    return define_schema(
        {
            "items": define_table(
                v.object(
                    {
                        "n": v.int64(),
                        "score": v.float64(),
                        "owner": v.optional(v.id("items")),
                        "at": v.optional(v.float64()),
                    }
                )
            ).index("by_n", ["n"])
        }
    )


@query
def items_by_n(ctx: Any) -> Any:
    return ctx.db.query("items").with_index("by_n")


@query
def items_collected(ctx: Any) -> Any:
    return ctx.db.query("items").with_index("by_n").collect()


@mutation(args={"id": v.id("items"), "fields": v.any()})
def patch(ctx: Any, id: str, fields: Any) -> None:
    ctx.db.patch(id, fields)


@pytest.fixture(scope="module")
def big() -> Any:
    """An embedded store with 100,000 items (n = 0..99,999, score = n / 10)."""
    client = kernel_ext.connect("memory")
    client.set_schema(_schema())
    for name, fn in dict(items=items_by_n, collected=items_collected, patch=patch).items():
        client.register(f"v:{name}", fn)
    frame = pd.DataFrame({"n": range(ROWS), "score": [n / 10 for n in range(ROWS)]})
    ids = client.import_dataframe("items", frame, batch_size=20_000, progress=False)
    yield client, ids
    client.close()


def _open(client: Any, limit: int = 50) -> tuple[LiveTable, Recorder, Browser]:
    table = LiveTable(client, "v:items")
    recorder, browser = Recorder(table), Browser()
    table._on_front_end_message(table, {"type": "ready"}, [])
    table._on_front_end_message(table, {"type": "window", "offset": 0, "limit": limit}, [])
    recorder.after(0, lambda m: m["total"] == ROWS and len(m["rows"]) > 0)
    for message in list(recorder.messages):
        browser.receive(message, limit)
    return table, recorder, browser


def _replay(table: LiveTable, recorder: Recorder, browser: Browser, limit: int) -> None:
    """Wait until no update is pending, then replay the messages the browser has not seen."""
    wait_for(lambda: not table._dirty and table._timer is None)
    seen = getattr(browser, "seen", 0)
    for message in recorder.messages[seen:]:
        browser.receive(message, limit)
    browser.seen = len(recorder.messages)  # type: ignore[attr-defined]


def _expected(client: Any, column: str | None = None, desc: bool = False) -> list[Any]:
    rows = client.query("v:collected")
    if column is not None:
        rows = sorted(
            rows,
            key=functools.cmp_to_key(
                lambda a, b: (
                    compare_values(a.get(column), b.get(column))
                    or compare_values(a["_id"], b["_id"])
                )
            ),
            reverse=desc,
        )
    return rows


def test_one_row_patch_sends_only_that_row(big):
    client, ids = big
    table, recorder, _ = _open(client)
    assert table.mode == "incremental"
    assert table.total == ROWS
    count = len(recorder.messages)
    client.mutation("v:patch", id=ids[10], fields={"score": -1.5})
    message = recorder.after(count, lambda m: m["reason"] == "data")
    assert [row[:2] for row in message["rows"]] == [[10, ids[10]]]
    assert message["rows"][0][2] == ["10", "-1.5"] and message["total"] == ROWS
    assert "splices" not in message and "columns" not in message
    # A row outside the window: only the (unchanged) total travels.
    count = len(recorder.messages)
    client.mutation("v:patch", id=ids[5_000], fields={"score": 0.25})
    message = recorder.after(count, lambda m: m["reason"] == "data")
    assert message["rows"] == []
    # The model still holds the view's snapshot (never copied into a list).
    assert not isinstance(table.model.rows, list)
    client.mutation("v:patch", id=ids[10], fields={"score": 1.0})
    table.close()


def test_sorted_patch_moves_a_row_across_the_window(big):
    client, ids = big
    limit = 40
    table, recorder, browser = _open(client, limit)
    count = len(recorder.messages)
    table._on_front_end_message(table, {"type": "sort", "column": "score"}, [])
    table._on_front_end_message(table, {"type": "sort", "column": "score"}, [])  # descending
    recorder.after(count, lambda m: m["rows"] and m["rows"][0][1] == ids[-1])
    _replay(table, recorder, browser, limit)
    # Row 50,000 jumps to the top (into the window), then row 99,999 drops out of it.
    for index, score in ((50_000, 1e9), (ROWS - 1, -5.0)):
        count = len(recorder.messages)
        client.mutation("v:patch", id=ids[index], fields={"score": score})
        message = recorder.after(count, lambda m: m["reason"] == "data")
        assert len(message["rows"]) <= 2, message  # the arriving row (and the one pushed in)
        _replay(table, recorder, browser, limit)
        wanted = _expected(client, "score", desc=True)[:limit]
        assert [key for key, _ in browser.window(limit)] == [r["_id"] for r in wanted]
        assert browser.window(limit)[0][1][1] == repr(wanted[0]["score"])
    client.mutation("v:patch", id=ids[50_000], fields={"score": 5000.0})
    client.mutation("v:patch", id=ids[ROWS - 1], fields={"score": 9999.9})
    table.close()


def test_status_says_incremental_or_rerun(big):
    client, _ = big
    rerun = LiveTable(client, "v:collected")
    wait_for(lambda: rerun.mode == "re-run", 20)
    rerun.close()


# -- the model against recomputing from the full value ----------------------------------

_doc = st.fixed_dictionaries(
    {
        "x": st.one_of(
            st.integers(-3, 3), st.floats(allow_nan=False), st.none(), st.text(max_size=2)
        )
    },
    optional={"y": st.integers(0, 5)},
)
_ops = st.lists(
    st.tuples(st.sampled_from(["put", "pop", "patch"]), st.integers(0, 40), _doc), max_size=12
)


def _key(i: int) -> bytes:
    return i.to_bytes(2, "big")


def _doc_of(i: int, fields: dict[str, Any]) -> dict[str, Any]:
    return {"_id": f"id{i:03d}", **fields}


def _sorted_rows(rows: list[Any], column: str | None, desc: bool) -> list[Any]:
    if column is None:
        return rows
    cell = kernel_ext.UNDEFINED
    return sorted(
        rows,
        key=functools.cmp_to_key(
            lambda a, b: (
                compare_values(a.get(column, cell), b.get(column, cell))
                or compare_values(a["_id"], b["_id"])
            )
        ),
        reverse=desc,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.dictionaries(st.integers(0, 40), _doc, max_size=25),
    rounds=st.lists(_ops, min_size=1, max_size=6),
    sort=st.sampled_from([None, ("x", False), ("x", True), ("y", True)]),
    window=st.tuples(st.integers(0, 12), st.integers(1, 10)),
    descending_view=st.booleans(),
    flush_every=st.sampled_from([1, 2, 3]),
)
def test_model_equals_recomputing_after_random_diffs(
    initial, rounds, sort, window, descending_view, flush_every
):
    """Several diffs may reach the model between two flushes (at most 30 a second): the
    browser, replaying the coalesced message as live_table.js does, shows the right rows."""
    state = SortedRows((_key(i), _doc_of(i, d)) for i, d in sorted(initial.items()))
    value = state.snapshot(reverse=descending_view)
    model, browser = TableModel(), Browser()
    model.set_rows(value)
    if sort is not None:
        model.set_sort(*sort)
    model.set_window(*window)
    browser.receive(model.window_patch(full=True).to_message(), model.limit)
    ts = 1
    for index, ops in enumerate(rounds):
        touched: dict[bytes, None] = {}  # as a view keeps them: each key once
        for op, i, fields in ops:
            if op == "pop":
                state.pop(_key(i))
            elif op == "put" or state.get(_key(i)) is not None:
                state.put(_key(i), _doc_of(i, fields))
            touched[_key(i)] = None
        current = state.snapshot(reverse=descending_view)
        diff = diff_values(value, current, touched, ts + 1, ts)
        model.apply_diff(current, diff)
        value, ts = current, ts + 1
        expected = _sorted_rows(list(current), *(sort or (None, False)))
        assert [model.row_at(p) for p in range(len(model.rows))] == expected
        columns = list(dict.fromkeys(k for row in expected for k in row if k != "_id"))
        assert sorted(model.columns) == sorted(c for c in columns if c != "_creationTime")
        if (index + 1) % flush_every and index + 1 < len(rounds):
            continue  # coalesced into the next flush
        browser.receive(model.window_patch().to_message(), model.limit)
        shown = browser.window(model.limit)
        start = model.offset if model.offset < len(expected) else max(0, len(expected) - 1)
        wanted = expected[start : start + model.limit]
        assert [key for key, _ in shown] == [row["_id"] for row in wanted]
        assert [texts for _, texts in shown] == [
            [text for text, _ in model._cells(row)] for row in wanted
        ]


def test_old_positions_of_updated_rows():
    from widgets.table_model import _old_positions

    previous = list("abcdefgh")
    rows = list(previous)
    diff = ResultDiff(
        2, 1, removed=(0, 3, 4), inserted=((1, "X"), (4, "Y")), updated=((2, "c2"), (6, "h2"))
    )
    diff.apply_to(rows)
    assert rows == ["b", "X", "c2", "f", "Y", "g", "h2"]
    assert _old_positions(diff) == [previous.index("c"), previous.index("h")]


# -- column kinds from the store --------------------------------------------------------


@mutation(args={"id": v.id("events"), "fields": v.any()})
def patch_event(ctx: Any, id: str, fields: Any) -> None:
    ctx.db.patch(id, fields)


def test_columns_render_by_their_declared_kinds():
    client = kernel_ext.connect("memory")
    client.set_schema(
        define_schema(
            {
                "events": define_table(
                    v.object(
                        {
                            "count": v.int64(),
                            "ratio": v.float64(),
                            "parent": v.optional(v.id("events")),
                            "at": v.float64(),
                            "label": v.string(),
                        }
                    )
                ).index("by_count", ["count"])
            }
        )
    )

    @query
    def events(ctx: Any) -> Any:
        return ctx.db.query("events").with_index("by_count")

    client.register("e:events", events)
    client.register("e:patch", patch_event)
    when = datetime.datetime(2024, 5, 17, 12, 30, tzinfo=datetime.UTC)
    frame = pd.DataFrame(
        {"count": [1, 2], "ratio": [2.0, 0.5], "at": [when, when], "label": ["a", "b"]}
    )
    first, _ = client.import_dataframe("events", frame, progress=False)
    client.mutation("e:patch", id=first, fields={"parent": first})
    table = LiveTable(client, "e:events")
    recorder = Recorder(table)
    table._on_front_end_message(table, {"type": "ready"}, [])
    message = recorder.after(0, lambda m: m["total"] == 2 and m["rows"])
    columns = message["columns"]
    row = message["rows"][0]
    kinds = dict(zip(columns, row[3] if len(row) > 3 else message["kinds"], strict=True))
    texts = dict(zip(columns, row[2], strict=True))
    assert kinds == {"count": "i", "ratio": "f", "at": "t", "label": "s", "parent": "d"}
    assert texts["at"] == "2024-05-17 12:30:00" and texts["ratio"] == "2.0"
    assert texts["parent"] == first
    table.close()
    client.close()

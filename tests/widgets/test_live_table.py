"""LiveTable's Python side: what it sends on results, scrolls, sorts and errors."""

from __future__ import annotations

import time

import orjson
import pytest
from polling import wait_for

import kernel_ext
from kernel_ext import ConvexError, mutation, query, v
from widgets import LiveTable


@pytest.fixture
def app():
    client = kernel_ext.connect("memory")

    @query
    def items(ctx):
        return ctx.db.query("items").collect()

    @query(args={"fail": v.boolean()})
    def maybe(ctx, fail):
        if fail:
            raise ConvexError("nope")
        return []

    @mutation(args={"n": v.int64()})
    def add(ctx, n):
        return ctx.db.insert("items", {"n": n})

    @mutation(args={"id": v.id("items"), "n": v.int64()})
    def set_n(ctx, id, n):
        ctx.db.patch(id, {"n": n})

    for name, fn in dict(items=items, maybe=maybe, add=add, set_n=set_n).items():
        client.register(f"t:{name}", fn)
    yield client
    client.close()


class Recorder:
    def __init__(self, table):
        self.messages = []
        table.send = lambda content, buffers=None: self.messages.append(
            orjson.loads(bytes(buffers[0]))
        )

    def until(self, predicate, timeout=5.0):
        """The first message (from the start) that satisfies `predicate`."""
        return wait_for(
            lambda: next((m for m in list(self.messages) if predicate(m)), None), timeout
        )

    def settle(self, quiet=0.15):
        """Wait until no message has arrived for `quiet` seconds; returns the count."""
        count = -1
        while count != len(self.messages):
            count = len(self.messages)
            time.sleep(quiet)
        return count

    def wait(self, count, timeout=5.0):
        wait_for(lambda: len(self.messages) >= count, timeout)
        return self.messages[count - 1]


def test_initial_rows_then_single_row_change(app):
    ids = [app.mutation("t:add", n=i) for i in range(5)]
    table = LiveTable(app, "t:items")
    rec = Recorder(table)
    table._on_front_end_message(table, {"type": "ready"}, [])
    first = rec.until(lambda m: m["total"] == 5)
    assert len(first["rows"]) == 5
    assert table.status == "ready"
    count = rec.settle()
    app.mutation("t:set_n", id=ids[2], n=42)
    second = rec.wait(count + 1)
    assert second["reason"] == "data"
    assert second["rows"] == [[2, ids[2], ["42"]]] and second["kinds"] == "i"
    table.close()


def test_scroll_requests_a_window(app):
    for i in range(300):
        app.mutation("t:add", n=i)
    table = LiveTable(app, "t:items")
    rec = Recorder(table)
    table._on_front_end_message(table, {"type": "window", "offset": 250, "limit": 20}, [])
    wait_for(lambda: rec.messages and rec.messages[-1]["offset"] == 250, 5)
    message = rec.messages[-1]
    assert message["offset"] == 250
    assert [r[0] for r in message["rows"]] == list(range(250, 270))
    table.close()


def test_sort_click_sorts_in_kernel(app):
    for n in (3, 1, 2):
        app.mutation("t:add", n=n)
    table = LiveTable(app, "t:items")
    rec = Recorder(table)
    table._on_front_end_message(table, {"type": "ready"}, [])
    rec.until(lambda m: m["total"] == 3)
    count = rec.settle()
    table._on_front_end_message(table, {"type": "sort", "column": "n"}, [])
    assert table.sort == ["n", "asc"]
    message = rec.wait(count + 1)
    assert [r[2][0] for r in message["rows"]] == ["1", "2", "3"]
    table.close()


def test_error_state_shows_message(app):
    table = LiveTable(app, "t:maybe", {"fail": True})
    wait_for(lambda: table.status == "error", 5)
    assert table.status == "error"
    assert "nope" in table.error
    table.close()


def test_selection_and_mimebundle(app):
    app.mutation("t:add", n=1)
    table = LiveTable(app, "t:items")
    wait_for(lambda: table.total == 1)  # the first result has arrived
    table._on_front_end_message(table, {"type": "select", "keys": ["abc"]}, [])
    assert table.selection == ["abc"]
    bundle = table._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "1 rows" in data["text/html"]
    table.close()


def test_front_end_ready_does_not_hide_an_error(app):
    table = LiveTable(app, "t:maybe", {"fail": True})
    rec = Recorder(table)
    wait_for(lambda: table.status == "error", 5)
    table._on_front_end_message(table, {"type": "ready"}, [])
    rec.wait(1)
    assert table.status == "error"
    table.close()


@pytest.fixture
def paged_app():
    client = kernel_ext.connect("memory")

    @query(args={"paginationOpts": v.any()})
    def pages(ctx, paginationOpts):
        return ctx.db.query("items").paginate(paginationOpts)

    @mutation(args={"n": v.int64()})
    def add(ctx, n):
        return ctx.db.insert("items", {"n": n})

    @mutation(args={"id": v.id("items"), "n": v.int64()})
    def set_n(ctx, id, n):
        ctx.db.patch(id, {"n": n})

    for name, fn in dict(pages=pages, add=add, set_n=set_n).items():
        client.register(f"p:{name}", fn)
    ids = client.backend.store.mutate(
        lambda txn: [txn.insert("items", {"n": i}) for i in range(1000)]
    )[0]
    yield client, ids
    client.close()


def test_paginated_query_loads_pages_as_the_window_moves(paged_app):
    client, ids = paged_app
    table = LiveTable(client, "p:pages")
    rec = Recorder(table)
    assert not table.sortable
    table._on_front_end_message(table, {"type": "window", "offset": 0, "limit": 50}, [])
    wait_for(lambda: table.total >= 200, timeout=5.0)
    assert table.complete is False
    pages_before = table._paged.page_count
    table._on_front_end_message(table, {"type": "window", "offset": 900, "limit": 50}, [])
    wait_for(lambda: table.total == 1000 and table.complete, timeout=5.0)
    assert table._paged.page_count > pages_before
    rec.until(lambda m: any(r[0] == 949 for r in m["rows"]))
    # A change in the first page re-runs only that page and reaches the browser as one row.
    count = rec.settle()
    table._on_front_end_message(table, {"type": "window", "offset": 0, "limit": 50}, [])
    rec.wait(count + 1)
    count = rec.settle()
    client.mutation("p:set_n", id=ids[5], n=-5)
    message = rec.wait(count + 1)
    assert message["rows"] == [[5, ids[5], ["-5"]]] and message["kinds"] == "i"
    table.close()


def test_paginated_pages_keep_their_boundaries(paged_app):
    client, _ids = paged_app
    table = LiveTable(client, "p:pages")
    table._on_front_end_message(table, {"type": "window", "offset": 0, "limit": 50}, [])
    wait_for(lambda: table.total >= 200, timeout=5.0)
    first_page_end = table.model.key_at(199)
    client.mutation("p:add", n=5000)  # appended at the end: the first page does not grow
    # Barrier: the mutation returned once every page re-ran; their callbacks run in order on
    # the client's callback thread, so a job queued behind them runs after them.
    client._dispatcher.submit(lambda: None).result(timeout=10)
    assert table.model.key_at(199) == first_page_end
    table.close()


def test_plain_query_is_not_paged(app):
    table = LiveTable(app, "t:items")
    assert table._paged is None
    assert table.sortable
    table.close()

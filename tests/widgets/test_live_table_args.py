"""LiveTable.set_args: the same query with other arguments, in place, without a flash."""

from __future__ import annotations

import threading

import orjson
import pytest
from polling import wait_for

import kernel_ext
from kernel_ext import ConvexError, mutation, query, v
from kernel_ext.errors import StoreError
from widgets import LiveTable


@pytest.fixture
def gate():
    """Holds the `at_least` query with `hold=True` until set (so a switch is under way)."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def app(gate):
    client = kernel_ext.connect("memory")

    @query(args={"min": v.int64(), "hold": v.optional(v.boolean())})
    def at_least(ctx, min, hold=None):
        if min < 0:
            raise ConvexError("min must be >= 0")
        if hold:
            assert gate.wait(10)
        return [d for d in ctx.db.query("items").collect() if d["n"] >= min]

    @mutation(args={"n": v.int64()})
    def add(ctx, n):
        return ctx.db.insert("items", {"n": n})

    for name, fn in dict(at_least=at_least, add=add).items():
        client.register(f"t:{name}", fn)
    ids = client.backend.store.mutate(
        lambda txn: [txn.insert("items", {"n": i}) for i in range(10)]
    )[0]
    yield client, ids
    client.close()


def live_queries(client) -> int:
    """How many live queries the store maintains (one per distinct subscription)."""
    return len(client.backend.subscriptions)


class Recorder:
    def __init__(self, table):
        self.messages = []
        table.send = lambda content, buffers=None: self.messages.append(
            orjson.loads(bytes(buffers[0]))
        )


def test_set_args_switches_rows_in_place_and_closes_the_old_subscription(app):
    client, ids = app
    table = LiveTable(client, "t:at_least", {"min": 0})
    rec = Recorder(table)
    table._on_front_end_message(table, {"type": "ready"}, [])
    wait_for(lambda: table.total == 10)
    table._on_front_end_message(table, {"type": "sort", "column": "n"}, [])
    table._on_front_end_message(table, {"type": "sort", "column": "n"}, [])
    assert table.sort == ["n", "desc"]
    wait_for(lambda: rec.messages and [r[1] for r in rec.messages[-1]["rows"]][:1] == [ids[9]])
    old = table.subscription
    sent = len(rec.messages)

    table.set_args({"min": 5})
    assert table.args == {"min": 5}
    assert table.subscription is not old  # the new one: its value is the new result
    assert [d["n"] for d in table.subscription.value] == [5, 6, 7, 8, 9]
    wait_for(lambda: table.total == 5)
    # The same widget, still sorted by the user; the rows in both results kept their keys
    # and positions (9..5 first either way): the browser is told only the new count.
    assert table.sort == ["n", "desc"]
    assert [table.model.key_at(p) for p in range(5)] == [ids[n] for n in (9, 8, 7, 6, 5)]
    message = wait_for(lambda: next((m for m in rec.messages[sent:] if m["total"] == 5), None))
    assert message["rows"] == [] and "reset" not in message
    wait_for(lambda: "closed" in repr(old))
    wait_for(lambda: live_queries(client) == 1)
    # Still live: a new matching row arrives from the new subscription.
    client.mutation("t:add", n=7)
    wait_for(lambda: table.total == 6)
    table.close()
    assert live_queries(client) == 0


def test_current_rows_stay_until_the_new_result_arrives(app, gate):
    client, _ids = app
    table = LiveTable(client, "t:at_least", {"min": 0})
    wait_for(lambda: table.total == 10 and table.status == "ready")
    table.set_args({"min": 5, "hold": True})  # its query waits for the gate
    assert table.args == {"min": 5, "hold": True}
    assert table.total == 10 and table.status == "ready" and len(table.model.rows) == 10
    assert live_queries(client) == 2  # both live until the new result arrives
    gate.set()
    wait_for(lambda: table.total == 5)
    wait_for(lambda: live_queries(client) == 1)
    table.close()


def test_back_to_the_shown_args_while_waiting_drops_the_pending_subscription(app, gate):
    client, _ids = app
    table = LiveTable(client, "t:at_least", {"min": 0})
    wait_for(lambda: table.total == 10)
    shown = table.subscription
    table.set_args({"min": 5, "hold": True})
    pending = table.subscription
    table.set_args({"min": 0})
    assert table.subscription is shown and "closed" in repr(pending)
    gate.set()
    wait_for(lambda: live_queries(client) == 1)
    client.mutation("t:add", n=100)  # read your writes: the table's query has run
    wait_for(lambda: table.total == 11)
    table.close()


def test_quick_successive_args_end_on_the_last_with_one_subscription(app):
    client, _ids = app
    table = LiveTable(client, "t:at_least", {"min": 0})
    for low in (1, 2, 3, 8):
        table.set_args({"min": low})
    wait_for(lambda: table.total == 2)
    wait_for(lambda: live_queries(client) == 1)
    assert [d["n"] for d in table.model.rows] == [8, 9]
    table.close()
    assert live_queries(client) == 0


def test_equal_args_change_nothing(app):
    client, _ids = app
    table = LiveTable(client, "t:at_least", {"min": 3})
    wait_for(lambda: table.total == 7)
    sub = table.subscription
    table.set_args({"min": 3})
    assert table.subscription is sub and table._pending is None
    assert live_queries(client) == 1
    table.close()


def test_an_error_for_the_new_args_shows_as_an_error(app):
    client, _ids = app
    table = LiveTable(client, "t:at_least", {"min": 0})
    wait_for(lambda: table.total == 10)
    table.set_args({"min": -1})
    wait_for(lambda: table.status == "error")
    assert "min must be >= 0" in table.error
    assert table.total == 10  # the last rows stay under the error
    wait_for(lambda: live_queries(client) == 1)
    table.set_args({"min": 9})
    wait_for(lambda: table.status == "ready" and table.total == 1)
    table.close()


def test_a_table_over_a_given_subscription_refuses_set_args(app):
    client, _ids = app
    sub = client.subscribe("t:at_least", {"min": 0})
    table = LiveTable(sub, client=client)
    with pytest.raises(StoreError, match=r"LiveTable\(client, ref, args\)"):
        table.set_args({"min": 1})
    table.close()
    assert "closed" not in repr(sub)  # the caller's: still the caller's to close
    sub.close()


def test_bad_args_raise_and_change_nothing(app):
    client, _ids = app
    table = LiveTable(client, "t:at_least", {"min": 0})
    sub = table.subscription
    with pytest.raises(kernel_ext.errors.ArgumentError):
        table.set_args({"min": "x"})
    assert table.subscription is sub and table.args == {"min": 0}
    table.close()


@pytest.fixture
def paged_app():
    client = kernel_ext.connect("memory")

    @query(args={"paginationOpts": v.any(), "min": v.int64()})
    def pages(ctx, paginationOpts, min):
        return (
            ctx.db.query("items")
            .filter(lambda q: q.gte(q.field("n"), min))
            .paginate(paginationOpts)
        )

    client.register("p:pages", pages)
    client.backend.store.mutate(lambda txn: [txn.insert("items", {"n": i}) for i in range(1000)])
    yield client
    client.close()


def test_paged_table_restarts_paging_with_the_new_args(paged_app):
    client = paged_app
    table = LiveTable(client, "p:pages", {"min": 0})
    table._on_front_end_message(table, {"type": "window", "offset": 300, "limit": 50}, [])
    wait_for(lambda: table.total >= 400)
    old = table._paged
    assert old is not None and old.page_count >= 2
    table.set_args({"min": 990})
    assert table.args == {"min": 990}
    wait_for(lambda: table.total == 10 and table.complete)
    assert [d["n"] for d in table.model.rows] == list(range(990, 1000))
    assert table._paged is not old and table._paged.page_count == 1
    wait_for(lambda: live_queries(client) == 1)  # the old pages are closed
    table.close()
    assert live_queries(client) == 0


def test_a_title_given_as_a_function_of_the_args_follows_set_args(app, gate):
    client, _ = app
    table = LiveTable(client, "t:at_least", {"min": 0}, title=lambda a: f"at least {a['min']}")
    assert table.title == "at least 0"
    table.set_args({"min": 3, "hold": True})
    assert table.title == "at least 0"  # the old rows are still shown, and their caption
    gate.set()
    wait_for(lambda: table.title == "at least 3")
    table.close()

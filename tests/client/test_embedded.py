"""End-to-end behaviour of the embedded client on file and memory stores."""

from __future__ import annotations

import threading

import pytest

from kernel_ext import ConvexError
from kernel_ext.errors import ArgumentError, UnknownFunction, WrongFunctionKind


def test_mutation_then_query_round_trip(client):
    task_id = client.mutation("tasks:add", text="write tests")
    doc = client.query("tasks:get", id=task_id)
    assert doc["text"] == "write tests"
    assert doc["done"] is False
    assert isinstance(doc["_creationTime"], float)


def test_subscription_reflects_mutation_when_it_returns(client):
    sub = client.subscribe("tasks:by_done", done=False)
    assert sub.value == []
    task_id = client.mutation("tasks:add", text="a")
    assert [d["_id"] for d in sub.value] == [task_id]
    client.mutation("tasks:finish", id=task_id)
    assert sub.value == []


def test_on_change_called_once_per_changed_result(client):
    sub = client.subscribe("tasks:by_done", done=True)
    sub.value
    seen: list[int] = []
    done = threading.Event()

    def record(value):
        seen.append(len(value))
        if len(seen) == 2:
            done.set()

    sub.on_change(record)
    first = client.mutation("tasks:add", text="x")  # not done: result unchanged, no callback
    client.mutation("tasks:finish", id=first)
    second = client.mutation("tasks:add", text="y")
    client.mutation("tasks:finish", id=second)
    assert done.wait(5)
    assert seen == [1, 2]


def test_failed_mutation_leaves_no_trace(client):
    with pytest.raises(RuntimeError, match="boom after insert") as info:
        client.mutation("tasks:add_then_fail", text="ghost")
    assert any("tasks:add_then_fail" in note for note in info.value.__notes__)
    assert client.query("tasks:all") == []


def test_convex_error_data_reaches_caller(client):
    task_id = client.mutation("tasks:add", text="x")
    client.query("tasks:get", id=task_id)
    with pytest.raises(ConvexError) as info:
        # A well-formed id of the tasks table whose document is gone.
        client.mutation("tasks:finish", id=_deleted_task_id(client))
    assert info.value.data["code"] == "NOT_FOUND"


def _deleted_task_id(client):
    from kernel_ext.store.ids import new_id

    number = client.backend.store.catalog.table("tasks").number
    return new_id(number)


def test_argument_validation_names_path(client):
    with pytest.raises(ArgumentError, match=r"Path: \.text"):
        client.mutation("tasks:add", text=3)


def test_internal_function_not_callable_by_client(client):
    with pytest.raises(UnknownFunction, match="Could not find public function"):
        client.mutation("tasks:add_internal", text="x")


def test_wrong_kind(client):
    with pytest.raises(WrongFunctionKind, match="defined as Query"):
        client.mutation("tasks:all")


def test_action_runs_internal_mutations(client):
    ids = client.action("tasks:add_many", texts=["a", "b"])
    assert len(ids) == 2
    assert sorted(d["text"] for d in client.query("tasks:all")) == ["a", "b"]


def test_identity(client):
    assert client.query("tasks:whoami") is None
    ada = client.with_identity({"sub": "u1", "iss": "local", "name": "Ada"})
    identity = ada.query("tasks:whoami")
    assert identity == {
        "tokenIdentifier": "local|u1",
        "subject": "u1",
        "issuer": "local",
        "name": "Ada",
    }


def test_an_argument_given_both_ways_is_an_error(client):
    from kernel_ext.errors import ValidationError

    with pytest.raises(ValidationError, match="'text' given twice"):
        client.mutation("tasks:add", {"text": "x"}, text="y")
    with pytest.raises(ValidationError, match="not both"):
        client.mutation("tasks:add", ["x"], text="y")


def test_an_owner_query_does_not_wait_for_slow_live_queries(client):
    """`%convex query` (call_as_owner) reads, it does not wait for live queries to catch up
    with the store: a blocked live query does not hold it up."""
    from kernel_ext import query

    gate, entered = threading.Event(), threading.Event()
    blocking = [False]

    @query
    def gated(ctx):
        if blocking[0]:
            entered.set()
            assert gate.wait(30)
        return len(ctx.db.query("tasks").collect())

    client.register("slow:gated", gated)
    sub = client.subscribe("slow:gated")
    try:
        assert sub.value == 0
        blocking[0] = True
        client.backend.store.mutate(lambda txn: txn.insert("tasks", {"text": "a", "done": False}))
        assert entered.wait(10), "the live query should re-run"
        answered: list[object] = []
        caller = threading.Thread(
            target=lambda: answered.append(client.call_as_owner("query", "tasks:all", {}))
        )
        caller.start()
        caller.join(10)
        assert not gate.is_set()  # the live query is still blocked ...
        assert len(answered) == 1 and len(answered[0]) == 1  # ... and the query returned
    finally:
        gate.set()
        sub.close()

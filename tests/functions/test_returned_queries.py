"""A query function may return the query itself: every caller gets the consumed value.

The consumption runs inside the function's transaction: the read set covers it (a live
subscription re-runs on a write in its range) and a mutation's returned query sees its own
writes. `returns=` validates the consumed value.
"""

from __future__ import annotations

import pytest

import kernel_ext
from kernel_ext import mutation, query, v
from kernel_ext.errors import QueryError, ReturnsError
from kernel_ext.store.query import LazyResult, Query
from tests.polling import wait_for


@pytest.fixture
def c(bare_client):
    schema = kernel_ext.define_schema(
        {"t": kernel_ext.define_table({"n": v.int64()}).index("by_n", ["n"])}
    )
    bare_client.backend.store.set_schema(schema)

    @mutation(args={"ns": v.array(v.int64())})
    def put(ctx, ns):
        for n in ns:
            ctx.db.insert("t", {"n": n})

    @query
    def top3(ctx):
        return ctx.db.query("t").with_index("by_n").order("desc").limit(3)

    @query(args={"k": v.int64()})
    def top(ctx, k):
        return ctx.db.query("t").with_index("by_n").order("desc").limit(k)

    @query
    def everything(ctx):
        return ctx.db.query("t").with_index("by_n")

    @query
    def via_run_query(ctx):
        return ctx.run_query("t:top3")

    for name, fn in {
        "put": put,
        "top3": top3,
        "top": top,
        "everything": everything,
        "via_run_query": via_run_query,
    }.items():
        bare_client.backend.register(f"t:{name}", fn)
    return bare_client


def ns(docs) -> list[int]:
    return [d["n"] for d in docs]


def test_returned_query_is_consumed(c):
    c.mutation("t:put", ns=[4, 1, 5, 2, 3])
    result = c.query("t:top3")
    assert type(result) is list
    assert ns(result) == [5, 4, 3]
    assert ns(c.query("t:everything")) == [1, 2, 3, 4, 5]
    assert ns(c.query("t:via_run_query")) == [5, 4, 3]
    assert c.query("t:top", k=0) == []
    assert ns(c.query("t:top", k=10)) == [5, 4, 3, 2, 1]


def test_query_is_a_lazy_result():
    assert issubclass(Query, LazyResult)
    with pytest.raises(TypeError):
        LazyResult()  # type: ignore[abstract]


def test_live_subscription_to_a_returned_query(c):
    sub = c.subscribe("t:top3")
    assert sub.value == []
    c.mutation("t:put", ns=[1, 2])
    wait_for(lambda: ns(sub.value) == [2, 1])
    c.mutation("t:put", ns=[9, 0])
    wait_for(lambda: ns(sub.value) == [9, 2, 1])


def test_returns_validates_the_consumed_list(c):
    c.mutation("t:put", ns=[7])
    row = v.object({"_id": v.id("t"), "_creationTime": v.number(), "n": v.int64()})

    @query(returns=v.array(row))
    def good(ctx):
        return ctx.db.query("t").limit(1)

    @query(returns=v.array(v.string()))
    def bad(ctx):
        return ctx.db.query("t").limit(1)

    c.backend.register("t:good", good)
    c.backend.register("t:bad", bad)
    assert ns(c.query("t:good")) == [7]
    with pytest.raises(ReturnsError, match="ReturnsValidationError for t:bad"):
        c.query("t:bad")


def test_mutation_returning_a_query_gets_its_own_writes(c):
    @mutation
    def add_and_list(ctx):
        ctx.db.insert("t", {"n": 8})
        return ctx.db.query("t").with_index("by_n")

    c.backend.register("t:add_and_list", add_and_list)
    c.mutation("t:put", ns=[3])
    assert ns(c.mutation("t:add_and_list")) == [3, 8]


def test_an_error_while_consuming_names_the_function(c):
    @query
    def broken(ctx):
        return ctx.db.query("t").filter(lambda q: q.field("n"))  # not a Boolean

    c.backend.register("t:broken", broken)
    c.mutation("t:put", ns=[1])
    with pytest.raises(QueryError, match="as a Boolean") as info:
        c.query("t:broken")
    assert "raised by query t:broken" in info.value.__notes__

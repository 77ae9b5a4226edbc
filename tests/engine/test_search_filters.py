"""Search index filters on every backend: a Python int compared with a `v.number()` (float64)
filter field as `with_index` and `.filter` compare it (the field holds floats, so `1` means
`1.0`), and filter values of every kind (missing, null, arrays, objects)."""

from __future__ import annotations

from typing import Any

import kernel_ext
from kernel_ext import UNDEFINED, define_schema, define_table, mutation, query, v

SCHEMA = define_schema(
    {
        "m": define_table(
            {
                "body": v.string(),
                "n": v.number(),
                "tags": v.array(v.string()),
                "o": v.optional(v.any()),
            }
        )
        .index("by_n", ["n"])
        .search_index("s", search_field="body", filter_fields=["n", "tags", "o"])
    }
)


@mutation
def add(ctx: Any, doc: dict[str, Any]) -> Any:
    return ctx.db.insert("m", doc)


@query
def by_index(ctx: Any, n: Any) -> Any:
    return [d["body"] for d in ctx.db.query("m").with_index("by_n", lambda q: q.eq("n", n))]


@query
def search(ctx: Any, field: str, value: Any, missing: bool = False) -> Any:
    wanted = UNDEFINED if missing else value
    q = ctx.db.query("m").with_search_index(
        "s", lambda q: q.search("body", "hello").eq(field, wanted)
    )
    return sorted(d["body"] for d in q.collect())


def test_search_filters_compare_values_as_index_ranges_do(store_url):
    client = kernel_ext.connect(store_url)
    try:
        for name, fn in (("add", add), ("by_index", by_index), ("search", search)):
            client.register(f"f:{name}", fn)
        client.set_schema(SCHEMA)
        client.mutation("f:add", doc={"body": "hello a", "n": 1, "tags": ["x", "y"], "o": None})
        client.mutation("f:add", doc={"body": "hello b", "n": 2.5, "tags": ["x"], "o": {"k": 1}})
        client.mutation("f:add", doc={"body": "hello c", "n": 3, "tags": []})
        assert client.query("f:by_index", n=1) == ["hello a"]
        assert client.query("f:search", field="n", value=1) == ["hello a"]  # 1 is 1.0 here
        assert client.query("f:search", field="n", value=2.5) == ["hello b"]
        assert client.query("f:search", field="tags", value=["x", "y"]) == ["hello a"]
        assert client.query("f:search", field="tags", value=[]) == ["hello c"]
        assert client.query("f:search", field="o", value={"k": 1}) == ["hello b"]
        assert client.query("f:search", field="o", value=None) == ["hello a"]  # null only
        assert client.query("f:search", field="o", value=None, missing=True) == ["hello c"]
    finally:
        client.close()

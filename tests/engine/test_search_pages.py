"""Paginated searches across commits, on every backend: every commit changes every score
(the document count and average length are in all of them), so the next page starts after
the cursor's document, not only after its old score."""

from __future__ import annotations

from typing import Any

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, query, v

SCHEMA = define_schema(
    {"m": define_table({"body": v.string()}).search_index("s", search_field="body")}
)


@mutation
def add(ctx: Any, body: str) -> None:
    ctx.db.insert("m", {"body": body})


@query
def page(ctx: Any, cursor: Any = None) -> Any:
    q = ctx.db.query("m").with_search_index("s", lambda q: q.search("body", "fox"))
    found = q.paginate({"numItems": 1, "cursor": cursor})
    return [d["body"] for d in found["page"]], found["continueCursor"], found["isDone"]


def test_pages_after_unrelated_writes_skip_nothing(store_url):
    client = kernel_ext.connect(store_url)
    try:
        client.register("p:add", add)
        client.register("p:page", page)
        client.set_schema(SCHEMA)
        for body in ("fox", "fox a", "fox a b c"):
            client.mutation("p:add", body=body)
        seen, cursor, done = client.query("p:page")
        for i in range(5):  # more documents: every "fox" score grows past the first page's
            client.mutation("p:add", body=f"filler words here {i} x y z")
        while not done:
            found, cursor, done = client.query("p:page", cursor=cursor)
            seen += found
        assert seen == ["fox", "fox a", "fox a b c"]
    finally:
        client.close()

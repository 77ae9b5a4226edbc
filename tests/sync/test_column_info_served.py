"""Column metadata of a served store: `RemoteClient.column_info` gives the same
`{column: {"validator", "dtype"}}` as the embedded client for the same schema (the server
answers the admin request `{"columnInfo": id}`), so a LiveTable over a served store renders a
`v.id` column as an id and int64/float64 columns by their declared type, as it does embedded."""

from __future__ import annotations

import datetime
from typing import Any

import pandas as pd
from polling import wait_for

import kernel_ext
from kernel_ext.functions.cells import base_namespace, compile_schema
from widgets import LiveTable

SCHEMA = """%%convex_schema
events = define_table({
    "count": v.int64(),
    "ratio": v.float64(),
    "parent": v.optional(v.id("events")),
    "at": v.float64(),
    "label": v.string(),
    "tags": v.optional(v.array(v.string())),
}).index("by_count", ["count"])"""
VIEW = '%%convex_query e:events\nreturn db.query("events").with_index("by_count")'
PATCH = "%%convex_mutation e:patch(id: v.id('events'), fields: v.any())\ndb.patch(id, fields)"
WHEN = datetime.datetime(2024, 5, 17, 12, 30, tzinfo=datetime.UTC)
# Integral floats: a value-typed guess would not tell them from ints once sent as numbers.
FRAME = pd.DataFrame(
    {"count": [1, 2], "ratio": [2.0, 1.0], "at": [WHEN, WHEN], "label": ["a", "b"]}
)


def _fill(client: Any) -> str:
    """Import the frame and point the first event at itself; returns its id."""
    first, _ = client.import_dataframe("events", FRAME, progress=False)
    client.mutation("e:patch", id=first, fields={"parent": first})
    return str(first)


def _table_kinds(client: Any) -> dict[str, str]:
    """The column kinds a LiveTable over `e:events` shows, once it has rows."""
    table = LiveTable(client, "e:events")
    try:
        # Read once, right after the first rows (declared_kinds always names `_id`).
        return dict(wait_for(lambda: table.model.column_kinds, timeout=20))
    finally:
        table.close()


def _embedded_client() -> Any:
    from kernel_ext import mutation, query, v

    client = kernel_ext.connect("memory")
    client.set_schema(compile_schema(SCHEMA.split("\n", 1)[1], base_namespace(), "<schema>"))

    @query
    def events(ctx: Any) -> Any:
        return ctx.db.query("events").with_index("by_count")

    @mutation(args={"id": v.id("events"), "fields": v.any()})
    def patch(ctx: Any, id: str, fields: Any) -> None:
        ctx.db.patch(id, fields)

    client.register("e:events", events)
    client.register("e:patch", patch)
    return client


def test_remote_column_info_and_live_table_kinds_equal_the_embedded_ones(server_factory):
    server = server_factory()
    embedded = _embedded_client()
    try:
        with kernel_ext.connect(server.url, admin_key=server.admin_key) as remote:
            for cell in (SCHEMA, VIEW, PATCH):
                remote.push_cell(cell)
            local_first, remote_first = _fill(embedded), _fill(remote)
            kinds = _table_kinds(remote)
            assert kinds == _table_kinds(embedded)
            assert kinds["parent"] == "id" and kinds["at"] == "date"
            assert kinds["count"] == "int" and kinds["ratio"] == "float"
            expected = embedded.column_info(local_first)
            assert expected["parent"]["validator"] == {"type": "id", "tableName": "events"}
            assert remote.column_info(remote_first) == expected
            assert remote.column_info("not-an-id") == embedded.column_info("not-an-id") == {}
    finally:
        embedded.close()


def test_column_info_without_the_admin_key_is_empty(server_factory):
    """Column metadata is an admin request: a plain client shows values by their types."""
    server = server_factory()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        for cell in (SCHEMA, VIEW, PATCH):
            owner.push_cell(cell)
        first = _fill(owner)
    with kernel_ext.connect(server.url) as anonymous:
        assert anonymous.column_info(first) == {}

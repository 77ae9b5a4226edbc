"""Ints in `v.number()` fields through a served store: the server validates writes with the
schema, so an int a remote client sends is stored as a float."""

from __future__ import annotations

import pandas as pd

import kernel_ext


def _values(client: kernel_ext.Client, name: str) -> list[object]:
    """The raw `value`s of the `name` counters, read through the admin table dump (values
    keep their Convex type: an int64 would come back as an int)."""
    return [d["value"] for d in client.table_df("counters").to_dict("records") if d["name"] == name]


def test_remote_int_into_a_number_field_is_stored_as_a_float(server_factory):
    server = server_factory()  # tests/sync/app: counters.value is v.number()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as client:
        frame = pd.DataFrame({"name": ["ints"], "value": pd.Series([41], dtype="int64")})
        client.import_dataframe("counters", frame, progress=False)
        (stored,) = _values(client, "ints")
        assert stored == 41.0
        assert type(stored) is float

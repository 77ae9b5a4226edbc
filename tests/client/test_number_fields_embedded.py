"""Ints in `v.number()` fields, end to end on an embedded store: a pandas int64 column imported
into a float field is stored as floats, so a float-bounded index query finds what pandas finds."""

from __future__ import annotations

import numpy as np
import pandas as pd

import kernel_ext
from kernel_ext import define_schema, define_table, query, v


def test_int64_column_into_a_float_field_answers_a_float_bound_like_pandas():
    rng = np.random.default_rng(7)
    cars = pd.DataFrame(
        {
            "name": [f"car{i}" for i in range(400)],
            "weight": rng.integers(1600, 5200, size=400).astype("int64"),
        }
    )
    expected = int((cars["weight"] > 4000).sum())
    assert expected > 0
    schema = define_schema(
        {
            "cars": define_table({"name": v.string(), "weight": v.number()}).index(
                "by_weight", ["weight"]
            )
        }
    )

    @query(args={"low": v.number()})
    def heavier(ctx, low):
        return ctx.db.query("cars").with_index("by_weight", lambda q: q.gt("weight", low)).collect()

    @query
    def heavier_than_4000(ctx):  # an int literal bound: compared as 4000.0 (float64-only field)
        return (
            ctx.db.query("cars").with_index("by_weight", lambda q: q.gt("weight", 4000)).collect()
        )

    with kernel_ext.connect("memory") as client:
        client.set_schema(schema)
        client.register("cars:heavier", heavier)
        client.register("cars:heavier_than_4000", heavier_than_4000)
        client.import_dataframe("cars", cars, batch_size=128, progress=False)
        heavy = client.query("cars:heavier", low=4000.0)
        assert len(heavy) == expected
        assert all(type(doc["weight"]) is float for doc in heavy)
        assert len(client.query("cars:heavier", low=4000)) == expected  # args coerce too
        assert len(client.query("cars:heavier_than_4000")) == expected
        back = client.table_df("cars")
        assert back["weight"].dtype == np.float64
        assert back["weight"].tolist() == cars["weight"].astype(float).tolist()

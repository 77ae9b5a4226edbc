"""DataFrames in and out: import_dataframe, table_df, sub.df."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kernel_ext import query, v


def test_import_dataframe_round_trip(bare_client):
    frame = pd.DataFrame(
        {
            "species": ["Adelie", "Gentoo", "Chinstrap"],
            "bill": [39.1, np.nan, 46.5],
            "year": np.array([2007, 2008, 2009], dtype="int64"),
            "seen": [True, False, True],
            "when": pd.to_datetime(["2020-01-01", "2020-01-02", None]),
        }
    )
    ids = bare_client.import_dataframe("penguins", frame, batch_size=2, progress=False)
    assert len(ids) == 3
    back = bare_client.table_df("penguins")
    assert list(back.index) == ids  # creation order, _id as index
    assert list(back["species"]) == ["Adelie", "Gentoo", "Chinstrap"]
    assert list(back["year"]) == [2007, 2008, 2009]
    assert back["year"].dtype == np.int64
    assert back["seen"].tolist() == [True, False, True]
    assert back.loc[ids[0], "when"] == "2020-01-01T00:00:00"
    # Missing values leave the field out: the document has no "bill" / "when".
    docs = bare_client.backend.store.read(lambda txn: txn.query("penguins").collect())[0]
    assert "bill" not in docs[1]
    assert "when" not in docs[2]
    assert math.isclose(docs[2]["bill"], 46.5)


def test_import_is_atomic_per_batch_and_validated(bare_client):
    import pytest

    from kernel_ext import define_schema, define_table
    from kernel_ext.errors import SchemaViolation

    bare_client.set_schema(define_schema({"nums": define_table({"n": v.int64()})}))
    frame = pd.DataFrame({"n": [1, 2, 3, 4]}, dtype="object")
    frame.loc[3, "n"] = "four"
    with pytest.raises(SchemaViolation) as info:
        bare_client.import_dataframe("nums", frame, batch_size=2, progress=False)
    assert list(bare_client.table_df("nums")["n"]) == [1, 2]  # the first batch committed
    # The error says which row failed and what was (not) imported.
    notes = "\n".join(info.value.__notes__)
    assert "(row 1 of its batch: {'n': 'four'})" in notes
    assert "rows 2..3 of the DataFrame (index 2..3) were not imported" in notes
    assert "the 2 rows before them were" in notes


def test_subscription_df_and_empty_results(bare_client):
    @query(args={"n": v.int64()})
    def rows(ctx, n):
        return [{"a": i, **({"b": "x"} if i % 2 else {})} for i in range(n)]

    bare_client.register("t:rows", rows)
    df = bare_client.subscribe("t:rows", n=3).df
    assert list(df.columns) == ["a", "b"]
    assert df["b"].isna().tolist() == [True, False, True]
    assert bare_client.subscribe("t:rows", n=0).df.empty
    assert bare_client.table_df("nothing_here").empty

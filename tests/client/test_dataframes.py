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
    assert back.loc[ids[0], "when"] == pd.Timestamp("2020-01-01")
    assert back["when"].dtype == frame["when"].dtype
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


# -- types round-trip (issue 8) ----------------------------------------------------------------


def typed_frame() -> pd.DataFrame:
    """One column of each kind a document cannot hold, each with a missing value."""
    return pd.DataFrame(
        {
            "naive": pd.to_datetime(
                ["2020-01-01 12:30:00.123456", None, "2021-06-30 23:59:59.000000"]
            ).astype("datetime64[us]"),
            "zoned": pd.to_datetime(["2020-03-29 01:30", "2020-10-25 03:15", None])
            .tz_localize("Europe/Paris")
            .astype("datetime64[ns, Europe/Paris]"),
            "count": pd.array([1, None, 3], dtype="Int64"),
            "size": pd.Categorical(
                ["low", "high", None], categories=["low", "mid", "high"], ordered=True
            ),
            "plain": [1.5, 2.5, 3.5],
        }
    )


def assert_types_round_trip(back: pd.DataFrame, frame: pd.DataFrame) -> None:
    for column in frame.columns:
        assert back[column].dtype == frame[column].dtype, column
        pd.testing.assert_series_equal(
            back[column].reset_index(drop=True), frame[column], check_names=False
        )
    assert str(back["_creationTime"].dtype) == "datetime64[us, UTC]"


def test_types_round_trip_through_a_reopened_file(tmp_path):
    import kernel_ext

    url = f"sqlite:///{tmp_path / 'store.db'}"
    frame = typed_frame()
    with kernel_ext.connect(url) as c:
        c.import_dataframe("typed", frame, batch_size=2, progress=False)
        assert_types_round_trip(c.table_df("typed"), frame)
        # Datetimes are stored as float ms since the epoch (UTC), so queries compare numbers.
        doc = c.backend.store.read(lambda txn: txn.query("typed").first())[0]
        assert doc["naive"] == 1577881800123.456
    with kernel_ext.connect(url) as c:  # the kinds survive reopening
        assert_types_round_trip(c.table_df("typed"), frame)

        @query(args={})
        def everything(ctx):
            return ctx.db.query("typed").collect()

        c.register("t:everything", everything)
        assert_types_round_trip(c.subscribe("t:everything").df, frame)


def test_a_later_import_merges_kinds_and_other_values_are_shown_as_stored(bare_client):
    import pytest

    first = pd.DataFrame({"size": pd.Categorical(["a"]), "n": pd.array([1], dtype="Int64")})
    second = pd.DataFrame({"size": pd.Categorical(["b"]), "n": ["text"]})
    bare_client.import_dataframe("t", first, progress=False)
    bare_client.import_dataframe("t", second, progress=False)
    back = bare_client.table_df("t")
    assert list(back["size"].cat.categories) == ["a", "b"]
    assert back["n"].tolist() == [1, "text"]  # imported with two kinds: left as stored
    ids = bare_client.import_dataframe(
        "when", pd.DataFrame({"t": pd.to_datetime(["2020-01-01"])}), progress=False
    )
    bare_client.backend.store.mutate(lambda txn: txn.patch(ids[0], {"t": "not a time"}))
    with pytest.warns(UserWarning, match="'t' was imported as datetime64"):
        assert bare_client.table_df("when")["t"].tolist() == ["not a time"]


def test_many_categories_come_back_with_the_values_added_since(bare_client):
    known = [f"c{i:05}" for i in range(3000)]
    frame = pd.DataFrame({"size": pd.Categorical(known[::-1], categories=known)})
    bare_client.import_dataframe("t", frame, progress=False)
    bare_client.backend.store.mutate(lambda txn: [txn.insert("t", {"size": s}) for s in "zyx"])
    back = bare_client.table_df("t")
    assert list(back["size"].cat.categories) == [*known, "x", "y", "z"]
    assert back["size"].tolist() == [*known[::-1], "z", "y", "x"]

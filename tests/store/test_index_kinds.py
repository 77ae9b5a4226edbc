"""Index kinds in schemas: search and vector index definitions, their limits and configs."""

from __future__ import annotations

import pytest

from kernel_ext import define_schema, define_table, v
from kernel_ext.errors import SchemaError
from kernel_ext.store.index_kinds import (
    SearchIndexConfig,
    VectorIndexConfig,
    config_from_json,
    config_to_json,
)

MESSAGES = {
    "body": v.string(),
    "channel": v.string(),
    "author": v.string(),
    "embedding": v.array(v.float64()),
}


def test_search_and_vector_indexes_are_declared_with_their_kind_and_config():
    table = (
        define_table(MESSAGES)
        .index("by_channel", ["channel"])
        .search_index("search_body", search_field="body", filter_fields=["channel"])
        .vector_index(
            "by_embedding", vector_field="embedding", dimensions=384, filter_fields=["channel"]
        )
    )
    by_name = {i.name: i for i in table.indexes}
    assert by_name["by_channel"].kind == "db" and by_name["by_channel"].config is None
    search = by_name["search_body"]
    assert search.kind == "search"
    assert search.config == SearchIndexConfig("body", ("channel",))
    assert search.fields == ("body", "channel")
    vector = by_name["by_embedding"]
    assert vector.kind == "vector"
    assert vector.config == VectorIndexConfig("embedding", 384, ("channel",))
    define_schema({"messages": table})  # a valid schema


def test_convex_style_config_mappings_are_accepted():
    table = (
        define_table(MESSAGES)
        .search_index("s", {"searchField": "body", "filterFields": ["author"]})
        .vector_index("e", {"vectorField": "embedding", "dimensions": 3})
    )
    configs = [i.config for i in table.indexes]
    assert configs == [SearchIndexConfig("body", ("author",)), VectorIndexConfig("embedding", 3)]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda t: t.search_index("s"), "give the field to search"),
        (lambda t: t.search_index("s", search_field="nope"), "'nope' is not in the table"),
        (
            lambda t: t.search_index("s", search_field="body", filter_fields=["nope"]),
            "'nope' is not in the table",
        ),
        (lambda t: t.vector_index("e", vector_field="embedding"), "dimensions must be"),
        (lambda t: t.vector_index("e", vector_field="embedding", dimensions=1), "from 2 to 4096"),
        (
            lambda t: t.vector_index("e", vector_field="embedding", dimensions=4097),
            "from 2 to 4096",
        ),
        (
            lambda t: t.vector_index("e", vector_field="embedding", dimensions=True),
            "dimensions must be",
        ),
        (
            lambda t: t.search_index("s", search_field="body", filter_fields="channel"),
            "must be a list",
        ),
        (
            lambda t: t.index("x", ["body"]).search_index("x", search_field="body"),
            "Duplicate index name",
        ),
        (lambda t: t.search_index("by_id", search_field="body"), "reserved"),
    ],
)
def test_bad_search_and_vector_indexes_are_refused_at_definition(build, message):
    with pytest.raises(SchemaError, match=message):
        build(define_table(MESSAGES))


def test_at_most_four_search_indexes_and_sixteen_filter_fields():
    fields = {f"f{i}": v.string() for i in range(17)}
    table = define_table(fields)
    for i in range(4):
        table = table.search_index(f"s{i}", search_field=f"f{i}")
    with pytest.raises(SchemaError, match="at most 4 search indexes"):
        table.search_index("s4", search_field="f4")
    with pytest.raises(SchemaError, match="at most 16"):
        define_table(fields).search_index(
            "s", search_field="f0", filter_fields=[f"f{i}" for i in range(1, 18)]
        )


def test_a_search_index_may_read_the_same_fields_as_an_ordered_index():
    table = define_table(MESSAGES).index("by_body", ["body"]).search_index("s", search_field="body")
    assert [i.kind for i in table.indexes] == ["db", "search"]


def test_configs_round_trip_through_their_catalog_text():
    search = SearchIndexConfig("body", ("a", "b"))
    assert config_from_json("search", config_to_json(search)) == search
    vector = VectorIndexConfig("e", 8, ("a",))
    assert config_from_json("vector", config_to_json(vector)) == vector
    assert config_to_json(search) == '{"filterFields":["a","b"],"searchField":"body"}'
    assert config_to_json(None) is None and config_from_json("db", None) is None
    with pytest.raises(SchemaError, match="kind 'fuzzy'"):
        config_from_json("fuzzy", "{}")

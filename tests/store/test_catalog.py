"""The catalog: tables, numbers, indexes and index keys."""

from __future__ import annotations

from kernel_ext.store.catalog import (
    BY_CREATION_TIME,
    BY_ID,
    Catalog,
    IndexInfo,
    TableInfo,
    document_suffix,
    new_table_info,
)
from kernel_ext.store.ids import new_id
from kernel_ext.store.keys import encode_key
from kernel_ext.store.values import UNDEFINED

ID = new_id(1)
DOC = {"_id": ID, "_creationTime": 5.0, "a": 1, "o": {"x": "y"}}


def test_key_fields_of_each_kind_of_index():
    assert IndexInfo(BY_ID, None, ()).key_fields == ("_id",)
    assert IndexInfo(BY_CREATION_TIME, 1, ()).key_fields == ("_creationTime", "_id")
    assert IndexInfo("by_a", 2, ("a", "o.x")).key_fields == ("a", "o.x", "_creationTime", "_id")


def test_key_of_encodes_fields_then_creation_time_then_id():
    assert IndexInfo(BY_ID, None, ()).key_of(DOC) == encode_key((ID,))
    assert IndexInfo(BY_CREATION_TIME, 1, ()).key_of(DOC) == encode_key((5.0, ID))
    assert IndexInfo("by_a", 2, ("a", "o.x")).key_of(DOC) == encode_key((1, "y", 5.0, ID))


def test_key_of_uses_undefined_for_missing_fields():
    index = IndexInfo("by_m", 3, ("missing", "a.deeper"))
    assert index.key_of(DOC) == encode_key((UNDEFINED, UNDEFINED, 5.0, ID))


def test_key_of_with_a_known_suffix_equals_key_of():
    for index in (IndexInfo(BY_CREATION_TIME, 1, ()), IndexInfo("by_a", 2, ("a", "o.x"))):
        assert index.key_of(DOC, document_suffix(DOC)) == index.key_of(DOC)


def test_same_fields_is_equality_of_the_encoded_keys_of_two_versions():
    index = IndexInfo("by_a", 2, ("a", "o.x"))
    versions = [
        {**DOC, "b": 2},  # a field outside the index
        {**DOC, "o": {"x": "y", "z": 1}},
        {**DOC, "a": 1.0},  # 1 and 1.0 are different values
        {**DOC, "a": True},
        {**DOC, "a": 2},
        {**DOC, "o": {"x": b"y"}},
        {**DOC, "o": "not an object"},
        {k: x for k, x in DOC.items() if k != "a"},  # missing: undefined
    ]
    for other in versions:
        for candidate in (index, IndexInfo(BY_ID, None, ()), IndexInfo(BY_CREATION_TIME, 1, ())):
            expected = candidate.key_of(DOC) == candidate.key_of(other)
            assert candidate.same_fields(DOC, other) == expected, (candidate.name, other)


def test_new_table_info_has_the_implicit_indexes():
    info = new_table_info("tasks", 7, 3)
    assert info.name == "tasks"
    assert info.number == 7
    assert info.indexes == {
        BY_ID: IndexInfo(BY_ID, None, ()),
        BY_CREATION_TIME: IndexInfo(BY_CREATION_TIME, 3, ()),
    }


def test_catalog_lookup_by_name_and_number():
    catalog = Catalog()
    assert catalog.table("tasks") is None
    assert catalog.table_by_number(1) is None
    assert catalog.table_name(1) is None
    assert catalog.tables() == []
    assert catalog.next_table_number() == 1
    assert catalog.next_index_id() == 1

    tasks = catalog.install(new_table_info("tasks", 1, 1))
    users = catalog.add_table("users", 4)
    assert catalog.table("tasks") is tasks
    assert catalog.table_by_number(4) is users
    assert catalog.table_name(1) == "tasks"
    assert catalog.tables() == [tasks, users]
    assert catalog.next_table_number() == 5
    assert users.indexes == {BY_ID: IndexInfo(BY_ID, None, ())}


def test_add_and_drop_indexes():
    catalog = Catalog()
    catalog.install(new_table_info("tasks", 1, 1))
    catalog.add_index("tasks", IndexInfo("by_done", 6, ("done",)))
    info = catalog.table("tasks")
    assert isinstance(info, TableInfo)
    assert info.indexes["by_done"] == IndexInfo("by_done", 6, ("done",))
    assert catalog.next_index_id() == 7
    catalog.drop_index("tasks", "by_done")
    catalog.drop_index("tasks", "by_done")  # no-op
    assert "by_done" not in info.indexes
    assert catalog.next_index_id() == 2

"""Transaction + Query against an in-memory Snapshot double (no SQLite, no threads).

`MemoryStore` keeps committed documents in a dict; `MemorySnapshot` implements the `Snapshot`
protocol of store/transaction.py with index rows built by `IndexInfo.key_of` and sorted, so
the transaction's overlay merge, read sets and pagination run exactly as in the engine.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from bisect import bisect_left
from collections.abc import Iterator

import pytest

from kernel_ext.errors import (
    DocumentNotFound,
    QueryError,
    SchemaViolation,
    StoreWarning,
    TransactionClosed,
    ValidationError,
)
from kernel_ext.store.catalog import Catalog, IndexInfo, TableInfo, new_table_info
from kernel_ext.store.ids import decode_id, new_id
from kernel_ext.store.keys import encode_key
from kernel_ext.store.query import MAX_PAGE_SIZE, Query, Row, decode_cursor, encode_cursor
from kernel_ext.store.schema import define_schema, define_table
from kernel_ext.store.transaction import Transaction, Write, copy_value, id_key, written_keys
from kernel_ext.store.validators import v
from kernel_ext.store.values import UNDEFINED, Value

# ---------------------------------------------------------------------------------------------
# The Snapshot double


class MemorySnapshot:
    """A consistent, dict-backed read view: documents by (table number, id key), and per index
    the rows `(IndexInfo.key_of(doc), doc)` sorted by key."""

    def __init__(self, catalog: Catalog, docs: dict[tuple[int, bytes], dict], ts: int) -> None:
        self.ts = ts
        self._docs = docs
        self._rows: dict[tuple[int, int | None], list[Row]] = {}
        for (number, _), doc in docs.items():
            table = catalog.table_by_number(number)
            assert table is not None
            for index in table.indexes.values():
                self._rows.setdefault((number, index.index_id), []).append((index.key_of(doc), doc))
        for rows in self._rows.values():
            rows.sort(key=lambda row: row[0])
        self.rows_read = 0

    def get(self, table_number: int, id_key: bytes) -> dict[str, Value] | None:
        doc = self._docs.get((table_number, id_key))
        return None if doc is None else copy.deepcopy(doc)

    def scan(
        self, table_number: int, index_id: int | None, lo: bytes, hi: bytes, descending: bool
    ) -> Iterator[Row]:
        rows = self._rows.get((table_number, index_id), [])
        keys = [key for key, _ in rows]
        selected = rows[bisect_left(keys, lo) : bisect_left(keys, hi)] if lo < hi else []
        for key, doc in reversed(selected) if descending else selected:
            self.rows_read += 1
            yield key, copy.deepcopy(doc)


class MemoryStore:
    """Committed documents plus a catalog; `begin()` opens a transaction on a fresh snapshot."""

    def __init__(self, schema=None) -> None:
        self.catalog = Catalog()
        self.catalog.install(new_table_info("tasks", 1, 1))
        self.catalog.add_index("tasks", IndexInfo("by_done", 2, ("done",)))
        self.catalog.add_index("tasks", IndexInfo("by_priority", 3, ("priority",)))
        self.catalog.add_index("tasks", IndexInfo("by_done_priority", 4, ("done", "priority")))
        self.catalog.install(new_table_info("_scheduled_functions", 2, 5))
        self.schema = schema
        self.docs: dict[tuple[int, bytes], dict] = {}
        self.ts = 0
        self._clock = itertools.count(1)

    def allocate_table(self, name: str) -> TableInfo:
        number, index_id = self.catalog.next_table_number(), self.catalog.next_index_id()
        return self.catalog.install(new_table_info(name, number, index_id))

    def creation_time(self) -> float:
        return 1_700_000_000_000.0 + next(self._clock)

    def begin(self, *, writable: bool = True) -> Transaction:
        return Transaction(
            MemorySnapshot(self.catalog, dict(self.docs), self.ts),
            self.catalog,
            self.schema,
            writable=writable,
            allocate_table=self.allocate_table,
            creation_time=self.creation_time,
        )

    def commit(self, txn: Transaction) -> None:
        for doc_id, write in txn.write_set().items():
            table = self.catalog.table(write.table)
            assert table is not None
            key = (table.number, id_key(doc_id))
            if write.new is None:
                del self.docs[key]
            else:
                self.docs[key] = copy.deepcopy(write.new)
        self.ts += 1
        txn.closed = True

    def seed(self, table: str, docs: list[dict]) -> list[str]:
        txn = self.begin()
        ids = [txn.insert(table, doc) for doc in docs]
        self.commit(txn)
        return ids


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def tasks(store: MemoryStore, priorities, done=False) -> list[str]:
    return store.seed("tasks", [{"priority": p, "done": done} for p in priorities])


def priorities(docs) -> list:
    return [d["priority"] for d in docs]


def tasks_info(store: MemoryStore) -> TableInfo:
    info = store.catalog.table("tasks")
    assert info is not None
    return info


def hypothetical(store: MemoryStore, **fields) -> dict:
    """A document that could be written later (to test read-set coverage)."""
    return {"_id": new_id(1), "_creationTime": 9e15, "done": False, **fields}


def read(txn: Transaction, store: MemoryStore, doc: dict, index: str) -> bool:
    """Would a commit writing `doc` invalidate what `txn` read through `index`?"""
    key = tasks_info(store).indexes[index].key_of(doc)
    return txn.read_set.finalize().overlaps([(f"tasks.{index}", key)])


# ---------------------------------------------------------------------------------------------
# insert / get


def test_insert_then_get(store):
    txn = store.begin()
    doc_id = txn.insert("tasks", {"text": "a", "tags": ("x", "y"), "gone": UNDEFINED})
    assert decode_id(doc_id)[0] == 1
    doc = txn.get(doc_id)
    assert doc == {
        "_id": doc_id,
        "_creationTime": doc["_creationTime"],
        "text": "a",
        "tags": ["x", "y"],
    }
    assert type(doc["_creationTime"]) is float


def test_creation_times_strictly_increase(store):
    txn = store.begin()
    ids = [txn.insert("tasks", {"i": i}) for i in range(5)]
    times = [txn.get(i)["_creationTime"] for i in ids]
    assert times == sorted(set(times))


def test_get_returns_copies(store):
    (stored,) = tasks(store, [1])
    txn = store.begin()
    pending = txn.insert("tasks", {"nested": {"a": 1}})
    for doc_id in (stored, pending):
        doc = txn.get(doc_id)
        doc["priority"] = "changed"
        doc.setdefault("nested", {})["a"] = "changed"
        assert txn.get(doc_id) != doc


def test_insert_creates_a_missing_table(store):
    txn = store.begin()
    doc_id = txn.insert("notes", {"text": "hi"})
    info = store.catalog.table("notes")
    assert info is not None
    assert decode_id(doc_id)[0] == info.number
    assert txn.get(doc_id)["text"] == "hi"
    assert [d["_id"] for d in txn.query("notes").collect()] == [doc_id]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"_id": "x"}, "cannot set"),
        ({"_creationTime": 1.0}, "cannot set"),
        ({"_private": 1}, "cannot start with '_'"),
        ({"$bad": 1}, r"starts with '\$'"),
        ({"a": [UNDEFINED]}, "undefined is not a valid Convex value"),
        ({"a": 2**64}, "outside int64"),
        (["not", "a", "dict"], "takes a dict"),
    ],
)
def test_insert_rejects_bad_values(store, value, message):
    txn = store.begin()
    with pytest.raises(ValidationError, match=message):
        txn.insert("tasks", value)
    assert txn.write_set() == {}


@pytest.mark.parametrize("table", ["_tasks", "1tasks", "bad name", ""])
def test_insert_rejects_bad_table_names(store, table):
    with pytest.raises(ValidationError):
        store.begin().insert(table, {})


def test_insert_rejects_documents_over_1_mib(store):
    txn = store.begin()
    with pytest.raises(ValidationError, match="too large"):
        txn.insert("tasks", {"s": "x" * (1 << 20)})
    txn.insert("tasks", {"s": "x" * ((1 << 20) - 200)})


def test_system_writer_may_use_underscore_tables_and_fields(store):
    txn = store.begin()
    job = txn.insert("_scheduled_functions", {"name": "m:f", "_internal": 1}, system=True)
    assert txn.get(job, system=True)["_internal"] == 1


def test_get_of_a_missing_document_is_none(store):
    txn = store.begin()
    assert txn.get(new_id(1)) is None


def test_get_of_an_unknown_table_is_none(store):
    assert store.begin().get(new_id(77)) is None


@pytest.mark.parametrize("bad", ["nope", "", 5, None, new_id(1)[:-1]])
def test_get_rejects_malformed_ids(store, bad):
    with pytest.raises(ValidationError, match=r"Invalid argument `id` for `db\.get`"):
        store.begin().get(bad)


def test_system_tables_only_through_db_system(store):
    txn = store.begin()
    job = txn.insert("_scheduled_functions", {"name": "x"}, system=True)
    user = txn.insert("tasks", {})
    with pytest.raises(
        ValidationError, match=r"System tables can only be accessed with db\.system"
    ):
        txn.get(job)
    with pytest.raises(ValidationError, match="can only read system tables"):
        txn.get(user, system=True)
    with pytest.raises(ValidationError, match="System tables"):
        txn.patch(job, {"name": "y"})
    with pytest.raises(QueryError, match=r"System tables can only be accessed with db\.system"):
        txn.query("_scheduled_functions")
    with pytest.raises(QueryError, match="reads system tables"):
        txn.query("tasks", system=True)
    assert [d["_id"] for d in txn.query("_scheduled_functions", system=True).collect()] == [job]


# ---------------------------------------------------------------------------------------------
# patch / replace / delete


def test_patch_is_a_shallow_merge(store):
    (doc_id,) = store.seed("tasks", [{"a": 1, "b": {"x": 1, "y": 2}, "c": "keep"}])
    txn = store.begin()
    txn.patch(doc_id, {"a": 2, "b": {"x": 5}, "d": (1, 2)})
    doc = txn.get(doc_id)
    assert {k: doc[k] for k in "abcd"} == {"a": 2, "b": {"x": 5}, "c": "keep", "d": [1, 2]}


def test_patch_undefined_removes_a_field(store):
    (doc_id,) = store.seed("tasks", [{"a": 1, "b": 2}])
    txn = store.begin()
    txn.patch(doc_id, {"a": UNDEFINED, "missing": UNDEFINED})
    doc = txn.get(doc_id)
    assert "a" not in doc
    assert doc["b"] == 2


def test_patch_keeps_system_fields_and_accepts_equal_ones(store):
    (doc_id,) = store.seed("tasks", [{"a": 1}])
    txn = store.begin()
    before = txn.get(doc_id)
    txn.patch(doc_id, {"_id": doc_id, "_creationTime": before["_creationTime"], "a": 2})
    after = txn.get(doc_id)
    assert after["_id"] == doc_id
    assert after["_creationTime"] == before["_creationTime"]
    assert after["a"] == 2


@pytest.mark.parametrize("field", ["_id", "_creationTime"])
def test_patch_rejects_different_system_fields(store, field):
    (doc_id,) = store.seed("tasks", [{"a": 1}])
    txn = store.begin()
    other = {"_id": new_id(1), "_creationTime": 1.0}[field]
    with pytest.raises(ValidationError, match=f"Provided `{field}` field value"):
        txn.patch(doc_id, {field: other})


@pytest.mark.parametrize("field", ["_id", "_creationTime"])
def test_patch_cannot_remove_system_fields(store, field):
    # `_id` / `_creationTime` may appear only with their current values (SEMANTICS.md §1);
    # UNDEFINED (remove) is not the current value.
    (doc_id,) = store.seed("tasks", [{"a": 1, "priority": 1}])
    txn = store.begin()
    with pytest.raises(ValidationError):
        txn.patch(doc_id, {field: UNDEFINED})
    doc = txn.get(doc_id)
    assert doc["_id"] == doc_id
    assert "_creationTime" in doc
    assert priorities(txn.query("tasks").with_index("by_priority").collect()) == [1]


def test_patch_rejects_new_underscore_fields(store):
    # Top-level user fields may not start with '_' (SEMANTICS.md §1) - not via patch either.
    (doc_id,) = store.seed("tasks", [{"a": 1}])
    txn = store.begin()
    with pytest.raises(ValidationError, match="_secret"):
        txn.patch(doc_id, {"_secret": 1})
    assert "_secret" not in txn.get(doc_id)


def test_patch_rejects_non_dicts_and_bad_values(store):
    (doc_id,) = store.seed("tasks", [{"a": 1}])
    txn = store.begin()
    with pytest.raises(ValidationError, match="takes a dict"):
        txn.patch(doc_id, [("a", 2)])
    with pytest.raises(ValidationError, match="not a supported Convex value"):
        txn.patch(doc_id, {"a": {1, 2}})
    assert txn.write_set() == {}


def test_no_op_patch_records_no_write_but_reads_the_document(store):
    (doc_id,) = store.seed("tasks", [{"a": 1}])
    txn = store.begin()
    txn.patch(doc_id, {"a": 1, "b": UNDEFINED})
    assert txn.write_set() == {}
    assert txn.read_set.finalize().overlaps([("tasks.by_id", id_key(doc_id))])


def test_patch_int_to_float_is_a_change(store):
    (doc_id,) = store.seed("tasks", [{"a": 1}])
    txn = store.begin()
    txn.patch(doc_id, {"a": 1.0})
    assert type(txn.get(doc_id)["a"]) is float
    assert list(txn.write_set()) == [doc_id]


def test_replace_replaces_user_fields_and_keeps_system_fields(store):
    (doc_id,) = store.seed("tasks", [{"a": 1, "b": 2}])
    txn = store.begin()
    before = txn.get(doc_id)
    txn.replace(doc_id, {"c": 3, "gone": UNDEFINED})
    assert txn.get(doc_id) == {
        "_id": doc_id,
        "_creationTime": before["_creationTime"],
        "c": 3,
    }
    txn.replace(doc_id, {"_id": doc_id, "_creationTime": before["_creationTime"], "d": 4})
    assert txn.get(doc_id)["d"] == 4


def test_replace_errors(store):
    (doc_id,) = store.seed("tasks", [{"a": 1}])
    txn = store.begin()
    with pytest.raises(ValidationError, match="Provided `_id`"):
        txn.replace(doc_id, {"_id": new_id(1)})
    with pytest.raises(ValidationError, match="takes a dict"):
        txn.replace(doc_id, "a")
    with pytest.raises(ValidationError, match="cannot start with '_'"):
        txn.replace(doc_id, {"_x": 1})


def test_identical_replace_records_no_write(store):
    (doc_id,) = store.seed("tasks", [{"a": 1}])
    txn = store.begin()
    txn.replace(doc_id, {"a": 1})
    assert txn.write_set() == {}


def test_delete(store):
    stored, other = tasks(store, [1, 2])
    txn = store.begin()
    txn.delete(stored)
    assert txn.get(stored) is None
    assert priorities(txn.query("tasks").collect()) == [2]
    assert txn.write_set()[stored].new is None
    assert other not in txn.write_set()


@pytest.mark.parametrize(
    ("method", "args", "verb"),
    [
        ("patch", ({"a": 1},), "Update"),
        ("replace", ({"a": 1},), "Replace"),
        ("delete", (), "Delete"),
    ],
)
def test_writes_to_missing_documents_fail(store, method, args, verb):
    (deleted,) = tasks(store, [1])
    txn = store.begin()
    txn.delete(deleted)
    for doc_id in (deleted, new_id(1), new_id(77)):
        with pytest.raises(DocumentNotFound, match=f"{verb} on nonexistent document ID {doc_id}"):
            getattr(txn, method)(doc_id, *args)


def test_writes_reject_malformed_ids(store):
    txn = store.begin()
    with pytest.raises(ValidationError, match=r"db\.patch"):
        txn.patch("garbage", {})
    with pytest.raises(ValidationError, match=r"db\.delete"):
        txn.delete("garbage")


def test_read_only_transactions_cannot_write(store):
    (doc_id,) = tasks(store, [1])
    txn = store.begin(writable=False)
    for call in (
        lambda: txn.insert("tasks", {}),
        lambda: txn.patch(doc_id, {}),
        lambda: txn.replace(doc_id, {}),
        lambda: txn.delete(doc_id),
    ):
        with pytest.raises(TransactionClosed, match="not available in a query"):
            call()
    assert txn.get(doc_id) is not None


def test_closed_transaction_refuses_everything(store):
    doc_id = tasks(store, [1, 2])[0]
    txn = store.begin()
    query = txn.query("tasks")
    txn.closed = True
    for call in (
        lambda: txn.get(doc_id),
        lambda: txn.insert("tasks", {}),
        lambda: txn.query("tasks"),
        lambda: txn.normalize_id("tasks", doc_id),
        lambda: query.collect(),
    ):
        with pytest.raises(TransactionClosed, match="already returned"):
            call()


def test_closing_mid_iteration_stops_the_scan(store):
    tasks(store, [1, 2, 3])
    txn = store.begin()
    rows = iter(txn.query("tasks"))
    next(rows)
    txn.closed = True
    with pytest.raises(TransactionClosed):
        next(rows)


# ---------------------------------------------------------------------------------------------
# normalize_id


def test_normalize_id(store):
    (doc_id,) = tasks(store, [1])
    txn = store.begin()
    notes = txn.insert("notes", {})
    assert txn.normalize_id("tasks", doc_id) == doc_id
    unused = new_id(1)
    assert txn.normalize_id("tasks", unused) == unused  # existence is not checked
    assert txn.normalize_id("notes", doc_id) is None
    assert txn.normalize_id("tasks", notes) is None
    assert txn.normalize_id("tasks", "garbage") is None
    assert txn.normalize_id("nope", doc_id) is None
    assert txn.normalize_id(5, doc_id) is None
    with pytest.raises(ValidationError, match="System tables"):
        txn.normalize_id("_scheduled_functions", doc_id)
    job = txn.insert("_scheduled_functions", {}, system=True)
    assert txn.normalize_id("_scheduled_functions", job, system=True) == job


# ---------------------------------------------------------------------------------------------
# Queries: sources, order, own writes


def test_full_scan_is_in_creation_order(store):
    tasks(store, [3, 1, 2])
    assert priorities(store.begin().query("tasks").collect()) == [3, 1, 2]
    assert priorities(store.begin().query("tasks").order("desc").collect()) == [2, 1, 3]


def test_index_order_and_missing_fields_first(store):
    store.seed(
        "tasks",
        [
            {"priority": 2},
            {},
            {"priority": None},
            {"priority": "z"},
            {"priority": 1.5},
            {"priority": 1},
        ],
    )
    docs = store.begin().query("tasks").with_index("by_priority").collect()
    assert [d.get("priority", "MISSING") for d in docs] == ["MISSING", None, 1, 2, 1.5, "z"]


def test_desc_reverses_the_whole_key_so_ties_come_newest_first(store):
    ids = tasks(store, [1, 1, 1])
    txn = store.begin()
    asc = txn.query("tasks").with_index("by_priority", lambda q: q.eq("priority", 1)).collect()
    desc = (
        store.begin()
        .query("tasks")
        .with_index("by_priority", lambda q: q.eq("priority", 1))
        .order("desc")
        .collect()
    )
    assert [d["_id"] for d in asc] == ids
    assert [d["_id"] for d in desc] == ids[::-1]


def test_reads_see_own_writes_in_index_order(store):
    one, three, five = tasks(store, [1, 3, 5])
    txn = store.begin()
    txn.insert("tasks", {"priority": 4, "done": False})
    txn.insert("tasks", {"priority": 2, "done": False})
    txn.patch(five, {"priority": 0})
    txn.delete(three)
    by_priority = txn.query("tasks").with_index("by_priority")
    assert priorities(by_priority.collect()) == [0, 1, 2, 4]
    assert priorities(by_priority.order("desc").collect()) == [4, 2, 1, 0]
    # Creation order: the patched document keeps its place; inserts come last.
    assert priorities(txn.query("tasks").collect()) == [1, 0, 4, 2]
    ranged = txn.query("tasks").with_index(
        "by_priority", lambda q: q.gt("priority", 0).lte("priority", 2)
    )
    assert priorities(ranged.collect()) == [1, 2]
    assert txn.get(one)["priority"] == 1


def test_own_writes_in_a_compound_index(store):
    tasks(store, [1, 2], done=False)
    tasks(store, [1], done=True)
    txn = store.begin()
    txn.insert("tasks", {"done": True, "priority": 0})
    txn.insert("tasks", {"done": False, "priority": 1.5})
    query = txn.query("tasks").with_index("by_done_priority", lambda q: q.eq("done", False))
    assert priorities(query.collect()) == [1, 2, 1.5]
    done = txn.query("tasks").with_index("by_done_priority", lambda q: q.eq("done", True))
    assert priorities(done.collect()) == [0, 1]


def test_documents_from_a_query_are_copies(store):
    tasks(store, [1])
    txn = store.begin()
    txn.insert("tasks", {"priority": 2, "tags": ["a"]})
    for doc in txn.query("tasks").collect():
        doc["priority"] = 99
        doc.setdefault("tags", []).append("b")
    assert priorities(txn.query("tasks").collect()) == [1, 2]
    assert [d.get("tags") for d in txn.query("tasks").collect()] == [None, ["a"]]


def test_query_on_a_missing_table_is_empty(store):
    txn = store.begin()
    assert txn.query("notes").collect() == []
    assert txn.query("notes").with_index("by_anything").collect() == []
    assert txn.query("notes").first() is None


def test_query_on_a_missing_table_depends_on_that_table(store):
    # A query that found no table must still be invalidated by the commit that creates it
    # (SEMANTICS.md §6: reads record the table's existence), or a subscription to it stays
    # empty forever.
    txn = store.begin(writable=False)
    assert txn.query("notes").collect() == []
    writer = store.begin()
    note = writer.insert("notes", {"text": "first"})
    info = store.catalog.table("notes")
    assert info is not None
    keys = written_keys(info, Write("notes", None, writer.get(note)))
    assert txn.read_set.finalize().overlaps(keys)


def test_unknown_index_of_an_existing_table(store):
    with pytest.raises(QueryError, match=r"Index tasks\.nope not found"):
        store.begin().query("tasks").with_index("nope").collect()


def test_query_needs_a_table_name(store):
    with pytest.raises(QueryError, match="table name"):
        store.begin().query(5)


# ---------------------------------------------------------------------------------------------
# Query builder rules


def test_builder_is_immutable_and_reusable(store):
    tasks(store, [1, 2, 3])
    base = store.begin().query("tasks").with_index("by_priority")
    high = base.filter(lambda q: q.gt(q.field("priority"), 1))
    assert priorities(base.collect()) == [1, 2, 3]
    assert priorities(high.collect()) == [2, 3]
    assert priorities(base.order("desc").collect()) == [3, 2, 1]
    assert isinstance(high, Query)


def test_builder_misuse(store):
    txn = store.begin()
    query = txn.query("tasks")
    with pytest.raises(QueryError, match="with_index"):
        query.with_index("by_done").with_index("by_done")
    with pytest.raises(QueryError, match="with_index"):
        query.order("asc").with_index("by_done")
    with pytest.raises(QueryError, match="with_index"):
        query.filter(lambda q: q.eq(1, 1)).with_index("by_done")
    with pytest.raises(QueryError, match="order at most once"):
        query.order("asc").order("desc")
    with pytest.raises(QueryError, match='"asc" or "desc"'):
        query.order("up")
    with pytest.raises(QueryError, match="must return the range builder"):
        query.with_index("by_done", lambda q: None)
    with pytest.raises(QueryError, match="must return an expression"):
        query.filter(lambda q: True)


def test_invalid_range_fails_when_the_query_runs(store):
    query = store.begin().query("tasks").with_index("by_done", lambda q: q.eq("priority", 1))
    with pytest.raises(QueryError, match="comparison with 'priority'"):
        query.collect()


def test_filter_result_must_be_boolean(store):
    tasks(store, [1])
    with pytest.raises(QueryError, match="as a Boolean"):
        store.begin().query("tasks").filter(lambda q: q.field("priority")).collect()


def test_filters_stack_and_use_the_total_order(store):
    store.seed("tasks", [{"priority": 1}, {"priority": "high"}, {}, {"priority": 7}])
    txn = store.begin()
    missing_or_low = txn.query("tasks").filter(lambda q: q.lt(q.field("priority"), 5))
    assert [d.get("priority") for d in missing_or_low.collect()] == [1, None]
    both = missing_or_low.filter(lambda q: q.neq(q.field("priority"), UNDEFINED))
    assert priorities(both.collect()) == [1]


# ---------------------------------------------------------------------------------------------
# Consumers


def test_take_first_unique(store):
    tasks(store, [3, 1, 2])
    query = store.begin().query("tasks").with_index("by_priority")
    assert priorities(query.take(2)) == [1, 2]
    assert priorities(query.take(10)) == [1, 2, 3]
    assert query.take(0) == []
    assert query.first()["priority"] == 1
    one = query.filter(lambda q: q.eq(q.field("priority"), 2))
    assert one.unique()["priority"] == 2
    assert query.filter(lambda q: q.eq(q.field("priority"), 9)).unique() is None
    assert query.filter(lambda q: q.eq(q.field("priority"), 9)).first() is None


def test_unique_with_two_results_raises(store):
    ids = tasks(store, [1, 1, 1])
    query = store.begin().query("tasks")
    with pytest.raises(QueryError, match="more than one result from table tasks") as info:
        query.unique()
    assert ids[0] in str(info.value)
    assert ids[1] in str(info.value)


@pytest.mark.parametrize("n", [-1, 1.0, True, "2", None])
def test_take_needs_a_non_negative_int(store, n):
    with pytest.raises(QueryError, match="non-negative integer"):
        store.begin().query("tasks").take(n)


def test_iteration_streams(store):
    tasks(store, range(50))
    txn = store.begin()
    for doc in txn.query("tasks").with_index("by_priority"):
        assert doc["priority"] == 0
        break
    assert txn.snapshot.rows_read <= 2


def test_take_reads_only_what_it_needs(store):
    tasks(store, range(50))
    txn = store.begin()
    assert priorities(txn.query("tasks").take(3)) == [0, 1, 2]
    assert txn.snapshot.rows_read == 3


# ---------------------------------------------------------------------------------------------
# Read sets


def test_get_records_a_point_even_for_missing_documents(store):
    (doc_id,) = tasks(store, [1])
    missing = new_id(1)
    txn = store.begin()
    txn.get(doc_id)
    txn.get(missing)
    reads = txn.read_set.finalize()
    assert reads.overlaps([("tasks.by_id", id_key(doc_id))])
    assert reads.overlaps([("tasks.by_id", id_key(missing))])
    assert not reads.overlaps([("tasks.by_id", id_key(new_id(1)))])
    assert not reads.overlaps([("tasks.by_priority", b"")])


def test_take_one_reads_up_to_the_last_row_consumed(store):
    tasks(store, [10, 20, 30])
    txn = store.begin()
    assert priorities(txn.query("tasks").with_index("by_priority").take(1)) == [10]
    assert read(txn, store, hypothetical(store, priority=5), "by_priority")
    assert read(txn, store, hypothetical(store), "by_priority")  # missing field sorts first
    assert read(txn, store, hypothetical(store, priority=10, _creationTime=0.0), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=15), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=20), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=100), "by_priority")


def test_desc_take_one_reads_from_the_top_down_to_the_last_row(store):
    tasks(store, [10, 20, 30])
    txn = store.begin()
    assert priorities(txn.query("tasks").with_index("by_priority").order("desc").take(1)) == [30]
    assert read(txn, store, hypothetical(store, priority=100), "by_priority")
    assert read(txn, store, hypothetical(store, priority="s"), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=25), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=30, _creationTime=0.0), "by_priority")


def test_collect_reads_the_whole_range(store):
    tasks(store, [1, 2, 3])
    txn = store.begin()
    txn.query("tasks").with_index("by_priority", lambda q: q.gte("priority", 2)).collect()
    assert read(txn, store, hypothetical(store, priority=2), "by_priority")
    assert read(txn, store, hypothetical(store, priority=100), "by_priority")
    assert read(txn, store, hypothetical(store, priority="s"), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=1), "by_priority")
    # Another index of the same table was not read.
    assert not read(txn, store, hypothetical(store, priority=2), "by_done")


def test_filtered_out_rows_still_count_as_read(store):
    tasks(store, [10, 20, 30, 40])
    txn = store.begin()
    found = (
        txn.query("tasks")
        .with_index("by_priority")
        .filter(lambda q: q.gte(q.field("priority"), 30))
        .first()
    )
    assert found["priority"] == 30
    # Rows 10 and 20 were scanned and dropped by the filter: changes there matter.
    assert read(txn, store, hypothetical(store, priority=15), "by_priority")
    assert read(txn, store, hypothetical(store, priority=25), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=35), "by_priority")


def test_unique_reads_past_its_one_result(store):
    tasks(store, [1])
    txn = store.begin()
    assert txn.query("tasks").with_index("by_priority").unique()["priority"] == 1
    assert read(txn, store, hypothetical(store, priority=5), "by_priority")


def test_empty_scan_reads_its_whole_range(store):
    txn = store.begin()
    txn.query("tasks").with_index("by_done", lambda q: q.eq("done", True)).collect()
    assert read(txn, store, hypothetical(store, done=True), "by_done")
    assert not read(txn, store, hypothetical(store, done=False), "by_done")


def test_writes_read_their_document(store):
    (doc_id,) = tasks(store, [1])
    txn = store.begin()
    txn.delete(doc_id)
    assert txn.read_set.finalize().overlaps([("tasks.by_id", id_key(doc_id))])


def test_written_keys_cover_old_and_new_versions_in_every_index(store):
    old = {"_id": new_id(1), "_creationTime": 1.0, "priority": 1, "done": False}
    new = {**old, "priority": 2}
    info = tasks_info(store)
    keys = written_keys(info, Write("tasks", old, new))
    assert len(keys) == 2 * len(info.indexes)
    assert ("tasks.by_priority", info.indexes["by_priority"].key_of(old)) in keys
    assert ("tasks.by_priority", info.indexes["by_priority"].key_of(new)) in keys
    assert ("tasks.by_id", encode_key((old["_id"],))) in keys
    assert len(written_keys(info, Write("tasks", None, new))) == len(info.indexes)


# ---------------------------------------------------------------------------------------------
# Pagination


def page_of(store, opts, *, order="asc", build=None):
    query = store.begin().query("tasks").with_index("by_priority")
    if order == "desc":
        query = query.order("desc")
    if build is not None:
        query = build(query)
    result = query.paginate(opts)
    return priorities(result["page"]), result


def test_pages_walk_the_range(store):
    tasks(store, [5, 1, 4, 2, 3])
    page, first = page_of(store, {"numItems": 2, "cursor": None})
    assert page == [1, 2]
    assert first["isDone"] is False
    assert isinstance(first["continueCursor"], str)
    page, second = page_of(store, {"numItems": 2, "cursor": first["continueCursor"]})
    assert page == [3, 4]
    assert second["isDone"] is False
    page, third = page_of(store, {"numItems": 2, "cursor": second["continueCursor"]})
    assert page == [5]
    assert third["isDone"] is True
    page, again = page_of(store, {"numItems": 2, "cursor": third["continueCursor"]})
    assert (page, again["isDone"], again["continueCursor"]) == ([], True, third["continueCursor"])


def test_full_last_page_is_not_done_then_an_empty_page_is(store):
    tasks(store, [1, 2, 3, 4])
    _, first = page_of(store, {"numItems": 2, "cursor": None})
    page, second = page_of(store, {"numItems": 2, "cursor": first["continueCursor"]})
    assert page == [3, 4]
    assert second["isDone"] is False
    page, third = page_of(store, {"numItems": 2, "cursor": second["continueCursor"]})
    assert page == []
    assert third["isDone"] is True


def test_cursor_is_a_key_position_not_an_offset(store):
    ids = tasks(store, [10, 20, 30, 40, 50, 60])
    _, first = page_of(store, {"numItems": 2, "cursor": None})
    cursor = first["continueCursor"]
    # Delete the already-returned documents: the next page does not shift.
    txn = store.begin()
    txn.delete(ids[0])
    txn.delete(ids[1])
    store.commit(txn)
    page, _ = page_of(store, {"numItems": 2, "cursor": cursor})
    assert page == [30, 40]
    # A document inserted before the cursor is never seen; one after it is.
    tasks(store, [15, 25])
    page, _ = page_of(store, {"numItems": 3, "cursor": cursor})
    assert page == [25, 30, 40]


def test_cursor_position_after_an_insert_between_pages(store):
    tasks(store, [10, 20, 30])
    _, first = page_of(store, {"numItems": 1, "cursor": None})
    tasks(store, [5, 15])
    page, _ = page_of(store, {"numItems": 10, "cursor": first["continueCursor"]})
    assert page == [15, 20, 30]


def test_descending_pages(store):
    tasks(store, [1, 2, 3, 4, 5])
    page, first = page_of(store, {"numItems": 2, "cursor": None}, order="desc")
    assert page == [5, 4]
    page, second = page_of(store, {"numItems": 2, "cursor": first["continueCursor"]}, order="desc")
    assert page == [3, 2]
    page, third = page_of(store, {"numItems": 2, "cursor": second["continueCursor"]}, order="desc")
    assert page == [1]
    assert third["isDone"] is True


def test_pages_count_only_documents_passing_the_filter(store):
    tasks(store, range(10))

    def even(query):
        return query.filter(lambda q: q.eq(q.mod(q.field("priority"), 2), 0))

    page, first = page_of(store, {"numItems": 2, "cursor": None}, build=even)
    assert page == [0, 2]
    page, _ = page_of(store, {"numItems": 2, "cursor": first["continueCursor"]}, build=even)
    assert page == [4, 6]


def test_end_cursor_returns_exactly_up_to_it(store):
    tasks(store, [10, 20, 30, 40, 50])
    _, first = page_of(store, {"numItems": 3, "cursor": None})
    end = first["continueCursor"]
    tasks(store, [25, 35])  # the page grows: it covers a key range, not a count
    page, result = page_of(store, {"numItems": 1, "cursor": None, "endCursor": end})
    assert page == [10, 20, 25, 30]
    assert result["continueCursor"] == end
    assert result["isDone"] is False
    page, rest = page_of(store, {"numItems": 1, "cursor": end, "endCursor": "_end"})
    assert page == [35, 40, 50]
    assert rest["isDone"] is True


def test_end_cursor_in_descending_order(store):
    tasks(store, [1, 2, 3, 4])
    _, first = page_of(store, {"numItems": 2, "cursor": None}, order="desc")
    page, result = page_of(
        store,
        {"numItems": 1, "cursor": None, "endCursor": first["continueCursor"]},
        order="desc",
    )
    assert page == [4, 3]
    assert result["continueCursor"] == first["continueCursor"]


def test_maximum_rows_read_splits_the_page(store):
    tasks(store, range(10))

    def big(query):
        return query.filter(lambda q: q.gte(q.field("priority"), 7))

    page, first = page_of(store, {"numItems": 5, "cursor": None, "maximumRowsRead": 3}, build=big)
    assert page == []
    assert first["isDone"] is False
    assert first["pageStatus"] == "SplitRequired"
    page, second = page_of(
        store,
        {"numItems": 5, "cursor": first["continueCursor"], "maximumRowsRead": 5},
        build=big,
    )
    assert page == [7]
    assert second["pageStatus"] == "SplitRequired"
    page, third = page_of(store, {"numItems": 5, "cursor": second["continueCursor"]}, build=big)
    assert page == [8, 9]
    assert third["isDone"] is True


def test_paginate_on_a_missing_table(store):
    result = store.begin().query("notes").paginate({"numItems": 3, "cursor": None})
    assert result["page"] == []
    assert result["isDone"] is True


def test_only_one_paginate_per_execution(store):
    tasks(store, [1, 2])
    txn = store.begin()
    txn.query("tasks").paginate({"numItems": 1, "cursor": None})
    with pytest.raises(QueryError, match="Only a single paginated query"):
        txn.query("tasks").paginate({"numItems": 1, "cursor": None})


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"numItems": 0, "cursor": None}, "at least 1"),
        ({"numItems": -3, "cursor": None}, "at least 1"),
        ({"numItems": MAX_PAGE_SIZE + 1, "cursor": None}, "too many items"),
        ({"numItems": "2", "cursor": None}, "positive integer"),
        ({"numItems": None, "cursor": None}, "positive integer"),
        ({"numItems": True, "cursor": None}, "positive integer"),
        ({"numItems": 1.5, "cursor": None}, "positive integer"),
        ({"cursor": None}, "positive integer"),
        ({"numItems": 1, "cursor": 5}, "cursor must be a string"),
        ({"numItems": 1, "cursor": None, "endCursor": 5}, "endCursor must be a string"),
        ({"numItems": 1, "cursor": None, "maximumRowsRead": 0}, "at least 1"),
        ({"numItems": 1, "cursor": "abc"}, "Invalid pagination cursor"),
        ([("numItems", 1)], "numItems"),
    ],
)
def test_paginate_validates_options(store, opts, message):
    with pytest.raises(QueryError, match=message):
        store.begin().query("tasks").paginate(opts)


def test_paginate_accepts_integral_floats_and_the_maximum(store):
    tasks(store, [1, 2])
    page, _ = page_of(store, {"numItems": 2.0, "cursor": None})
    assert page == [1, 2]
    page, _ = page_of(store, {"numItems": MAX_PAGE_SIZE, "cursor": None})
    assert page == [1, 2]


def test_cursor_round_trip():
    for key in (b"", b"\x00\xff", encode_key(("a", 1.0))):
        assert decode_cursor(encode_cursor(key)) == key
    assert decode_cursor("_end") is None
    with pytest.raises(QueryError):
        decode_cursor("é")


@pytest.mark.parametrize("garbage", ["%%%", "!!!!", "a cursor!"])
def test_garbage_cursors_are_rejected(garbage):
    # decode_cursor promises QueryError for strings that are not cursors; base64's lenient
    # mode silently drops characters outside the alphabet instead.
    with pytest.raises(QueryError):
        decode_cursor(garbage)


def test_page_read_set_ends_at_the_last_row_of_the_page(store):
    tasks(store, [10, 20, 30, 40])
    txn = store.begin()
    txn.query("tasks").with_index("by_priority").paginate({"numItems": 2, "cursor": None})
    assert read(txn, store, hypothetical(store, priority=15), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=25), "by_priority")


def test_later_page_read_set_starts_after_its_cursor(store):
    tasks(store, [10, 20, 30, 40])
    _, first = page_of(store, {"numItems": 2, "cursor": None})
    txn = store.begin()
    txn.query("tasks").with_index("by_priority").paginate(
        {"numItems": 1, "cursor": first["continueCursor"]}
    )
    assert not read(txn, store, hypothetical(store, priority=15), "by_priority")
    assert read(txn, store, hypothetical(store, priority=25), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=35), "by_priority")


# ---------------------------------------------------------------------------------------------
# Nested transactions and the write set


def test_nested_rollback_discards_only_the_child(store):
    (stored,) = tasks(store, [1])
    txn = store.begin()
    parent = txn.insert("tasks", {"priority": 2})
    txn.begin_nested()
    child = txn.insert("tasks", {"priority": 3})
    txn.patch(parent, {"priority": 20})
    txn.delete(stored)
    assert priorities(txn.query("tasks").collect()) == [20, 3]
    txn.rollback_nested()
    assert txn.get(child) is None
    assert txn.get(parent)["priority"] == 2
    assert txn.get(stored)["priority"] == 1
    assert set(txn.write_set()) == {parent}


def test_nested_commit_merges_into_the_parent(store):
    (stored,) = tasks(store, [1])
    txn = store.begin()
    parent = txn.insert("tasks", {"priority": 2})
    txn.begin_nested()
    child = txn.insert("tasks", {"priority": 3})
    txn.patch(parent, {"priority": 20})
    txn.patch(stored, {"priority": 10})
    txn.commit_nested()
    writes = txn.write_set()
    assert writes[parent].old is None
    assert writes[parent].new["priority"] == 20
    assert writes[child].old is None
    assert writes[stored].old["priority"] == 1
    assert writes[stored].new["priority"] == 10


def test_nested_levels_commit_and_roll_back_independently(store):
    txn = store.begin()
    txn.begin_nested()
    a = txn.insert("tasks", {"n": "a"})
    txn.begin_nested()
    b = txn.insert("tasks", {"n": "b"})
    txn.begin_nested()
    c = txn.insert("tasks", {"n": "c"})
    txn.rollback_nested()
    txn.commit_nested()
    txn.commit_nested()
    assert set(txn.write_set()) == {a, b}
    assert txn.get(c) is None


def test_nested_write_old_is_the_snapshot_version(store):
    (stored,) = tasks(store, [1])
    txn = store.begin()
    txn.patch(stored, {"priority": 2})
    txn.begin_nested()
    txn.patch(stored, {"priority": 3})
    txn.commit_nested()
    write = txn.write_set()[stored]
    assert write.old["priority"] == 1
    assert write.new["priority"] == 3


def test_write_set_drops_insert_then_delete(store):
    txn = store.begin()
    doc_id = txn.insert("tasks", {"a": 1})
    txn.delete(doc_id)
    assert txn.write_set() == {}
    txn.begin_nested()
    other = txn.insert("tasks", {"a": 2})
    txn.commit_nested()
    txn.delete(other)
    assert txn.write_set() == {}


def test_write_set_drops_changes_that_cancel_out(store):
    (stored,) = tasks(store, [1])
    txn = store.begin()
    txn.patch(stored, {"priority": 2})
    txn.patch(stored, {"priority": 1})
    assert txn.write_set() == {}


def test_write_set_records_old_and_new(store):
    stored, deleted = tasks(store, [1, 2])
    txn = store.begin()
    inserted = txn.insert("tasks", {"priority": 3})
    txn.patch(stored, {"priority": 10})
    txn.patch(stored, {"priority": 11})
    txn.delete(deleted)
    writes = txn.write_set()
    assert writes[inserted] == Write("tasks", None, txn.get(inserted))
    assert writes[stored].old["priority"] == 1
    assert writes[stored].new["priority"] == 11
    assert writes[deleted].old["priority"] == 2
    assert writes[deleted].new is None
    assert {w.table for w in writes.values()} == {"tasks"}


def test_committed_writes_are_visible_to_later_transactions(store):
    (stored,) = tasks(store, [1])
    txn = store.begin()
    txn.patch(stored, {"priority": 5})
    new = txn.insert("tasks", {"priority": 0})
    store.commit(txn)
    later = store.begin()
    assert priorities(later.query("tasks").with_index("by_priority").collect()) == [0, 5]
    assert later.get(new)["priority"] == 0


def test_copy_value_is_deep():
    value = {"a": [1, {"b": [2]}], "c": b"x"}
    copied = copy_value(value)
    assert copied == value
    copied["a"][1]["b"].append(3)
    assert value["a"][1]["b"] == [2]


# ---------------------------------------------------------------------------------------------
# Schema validation


@pytest.fixture
def schema_store() -> MemoryStore:
    schema = define_schema(
        {
            "tasks": define_table(
                {
                    "text": v.string(),
                    "priority": v.optional(v.number()),
                    "done": v.optional(v.boolean()),
                    "owner": v.optional(v.id("users")),
                }
            )
        }
    )
    store = MemoryStore(schema)
    store.catalog.install(new_table_info("users", 3, 6))
    return store


def test_schema_validates_inserts_naming_the_table(schema_store):
    txn = schema_store.begin()
    doc_id = txn.insert("tasks", {"text": "ok", "priority": 1})
    assert txn.get(doc_id)["priority"] == 1.0  # v.number(): the int is stored as a float
    with pytest.raises(SchemaViolation, match='table "tasks"'):
        txn.insert("tasks", {"priority": 1})
    with pytest.raises(SchemaViolation, match="extra field `other`"):
        txn.insert("tasks", {"text": "x", "other": 1})


def test_schema_validates_patch_and_replace_results(schema_store):
    txn = schema_store.begin()
    doc_id = txn.insert("tasks", {"text": "ok"})
    with pytest.raises(SchemaViolation, match=r"Path: \.done"):
        txn.patch(doc_id, {"done": "yes"})
    with pytest.raises(SchemaViolation, match="missing the required field `text`"):
        txn.patch(doc_id, {"text": UNDEFINED})
    with pytest.raises(SchemaViolation):
        txn.replace(doc_id, {"done": True})
    assert txn.get(doc_id)["text"] == "ok"


def test_schema_checks_ids_against_the_catalog(schema_store):
    txn = schema_store.begin()
    user = txn.insert("users", {"name": "ada"})
    task = txn.insert("tasks", {"text": "x", "owner": user})
    with pytest.raises(SchemaViolation, match="from table `tasks`"):
        txn.insert("tasks", {"text": "y", "owner": task})


def test_tables_outside_the_schema_are_not_validated(schema_store):
    txn = schema_store.begin()
    txn.insert("users", {"anything": [1, {"goes": True}]})


# ---------------------------------------------------------------------------------------------
# Ints in float fields: stored as floats, compared as floats


def by_priority(txn: Transaction, **bounds) -> list:
    def range_fn(q):
        for op, value in bounds.items():
            q = getattr(q, op)("priority", value)
        return q

    return priorities(txn.query("tasks").with_index("by_priority", range_fn).collect())


def test_ints_in_number_fields_are_stored_as_floats_by_every_write(schema_store):
    txn = schema_store.begin()
    doc_id = txn.insert("tasks", {"text": "a", "priority": 4000})
    assert type(txn.get(doc_id)["priority"]) is float
    txn.patch(doc_id, {"priority": 5})
    assert repr(txn.get(doc_id)["priority"]) == "5.0"
    txn.replace(doc_id, {"text": "b", "priority": -(2**53)})
    assert repr(txn.get(doc_id)["priority"]) == repr(-float(2**53))
    schema_store.commit(txn)
    stored = next(iter(schema_store.docs.values()))
    assert type(stored["priority"]) is float


def test_patching_an_int_equal_to_the_stored_float_writes_nothing(schema_store):
    (doc_id,) = schema_store.seed("tasks", [{"text": "a", "priority": 3}])
    txn = schema_store.begin()
    txn.patch(doc_id, {"priority": 3})
    txn.replace(doc_id, {"text": "a", "priority": 3})
    assert txn.write_set() == {}


def test_a_float_bound_finds_documents_inserted_with_ints(schema_store):
    schema_store.seed("tasks", [{"text": str(p), "priority": p} for p in range(1, 11)])
    txn = schema_store.begin(writable=False)
    assert by_priority(txn, gt=4000.0) == []
    assert by_priority(txn, gt=4.5) == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert by_priority(txn, gte=2.0, lt=4.0) == [2.0, 3.0]
    found = txn.query("tasks").filter(lambda q: q.gt(q.field("priority"), 8.5)).collect()
    assert priorities(found) == [9.0, 10.0]


def test_an_int_bound_on_a_float_field_compares_as_that_float(schema_store):
    schema_store.seed("tasks", [{"text": str(p), "priority": p} for p in range(1, 11)])
    txn = schema_store.begin(writable=False)
    assert by_priority(txn, gt=8) == [9.0, 10.0]
    assert by_priority(txn, eq=3) == [3.0]
    assert by_priority(txn, gte=2, lte=3) == [2.0, 3.0]
    for predicate in (
        lambda q: q.eq(q.field("priority"), 1),
        lambda q: q.eq(1, q.field("priority")),
        lambda q: q.not_(q.neq(q.field("priority"), 1)),
        lambda q: q.and_(q.gte(q.field("priority"), 1), q.lt(q.field("priority"), 2)),
    ):
        assert priorities(txn.query("tasks").filter(predicate).collect()) == [1.0]


def _int_schema_store(*, validation: bool = True) -> MemoryStore:
    schema = define_schema(
        {
            "tasks": define_table({"text": v.string(), "priority": v.optional(v.number())}),
            "counts": define_table({"n": v.int64(), "o": v.object({"x": v.float64()})}),
        },
        schema_validation=validation,
    )
    store = MemoryStore(schema)
    store.seed("counts", [{"n": i, "o": {"x": float(i)}} for i in range(3)])
    return store


def test_a_float_compared_with_an_int64_field_warns_once_naming_field_and_table():
    store = _int_schema_store()
    txn = store.begin(writable=False)
    with pytest.warns(StoreWarning) as record:
        for _ in range(3):  # once per function and field
            found = txn.query("counts").filter(lambda q: q.eq(q.field("n"), 1.0)).collect()
            assert found == []  # as written: the types differ
    assert len(record) == 1
    message = str(record[0].message)
    assert "field 'n'" in message and "table 'counts'" in message and "v.int64()" in message
    assert record[0].filename == __file__  # points at the user's line


def test_an_int_compared_with_a_float_field_warns_when_validation_is_off():
    store = _int_schema_store(validation=False)
    txn = store.begin(writable=False)
    with pytest.warns(
        StoreWarning, match=r"(?s)table 'tasks'.*field 'priority'.*validation is off"
    ):
        txn.query("tasks").filter(lambda q: q.gt(q.field("priority"), 3)).collect()
    big = 2**53 + 1
    store = _int_schema_store()
    txn = store.begin(writable=False)
    with pytest.warns(StoreWarning, match=r"(?s)field 'o\.x'.*beyond \+-2\*\*53"):
        txn.query("counts").filter(lambda q: q.lt(q.field("o.x"), big)).collect()


def test_same_types_and_untyped_fields_do_not_warn():
    store = _int_schema_store()
    txn = store.begin(writable=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(txn.query("counts").filter(lambda q: q.gte(q.field("n"), 1)).collect()) == 2
        txn.query("counts").filter(lambda q: q.eq(q.field("o.x"), 1.0)).collect()
        txn.query("counts").filter(lambda q: q.eq(q.field("other"), 1.5)).collect()
        txn.query("counts").filter(lambda q: q.eq(q.field("n"), q.field("o.x"))).collect()


# ---------------------------------------------------------------------------------------------
# Typos: tables the schema does not declare


def test_querying_an_undeclared_empty_table_warns_once_naming_the_declared_ones(schema_store):
    txn = schema_store.begin(writable=False)
    with pytest.warns(StoreWarning) as record:
        for _ in range(2):
            assert txn.query("taskz").collect() == []
    assert len(record) == 1
    message = str(record[0].message)
    assert "'taskz'" in message and "Declared tables: 'tasks'" in message
    assert record[0].filename == __file__


def test_declared_and_existing_tables_do_not_warn(schema_store):
    txn = schema_store.begin()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        txn.query("tasks").collect()
        txn.query("users").collect()  # outside the schema but in the store: allowed
        txn.query("_scheduled_functions", system=True).collect()
        txn.insert("notes", {"text": "new table"})
        txn.query("notes").collect()  # created by this transaction
    plain = MemoryStore().begin()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plain.query("anything").collect() == []  # no schema: nothing to compare with


def test_an_int_bound_on_creation_time_compares_as_a_float_without_a_schema(store):
    tasks(store, [1, 2, 3])
    txn = store.begin(writable=False)
    times = [d["_creationTime"] for d in txn.query("tasks").collect()]
    middle = int(times[1])  # e.g. int(time.time() * 1000)
    found = (
        txn.query("tasks")
        .with_index("by_creation_time", lambda q: q.gt("_creationTime", middle))
        .collect()
    )
    assert [d["_creationTime"] for d in found] == [t for t in times if t > middle]
    late = txn.query("tasks").filter(lambda q: q.lt(q.field("_creationTime"), middle)).collect()
    assert [d["_creationTime"] for d in late] == [t for t in times if t < middle]


# ---------------------------------------------------------------------------------------------
# limit(n): a lazy take(n)


def test_limit_consumed_is_take(store):
    tasks(store, [5, 3, 1, 4, 2])
    query = store.begin().query("tasks").with_index("by_priority")
    top = query.order("desc").limit(3)
    assert priorities(top.collect()) == [5, 4, 3]
    assert priorities(top) == [5, 4, 3]  # iteration
    assert priorities(top.take(2)) == [5, 4]
    assert priorities(top.take(10)) == [5, 4, 3]
    assert top.first()["priority"] == 5
    assert priorities(query.limit(10).collect()) == [1, 2, 3, 4, 5]
    assert query.limit(0).collect() == []
    assert query.limit(0).first() is None
    assert priorities(top.consume()) == [5, 4, 3]


def test_limit_after_filter_and_twice(store):
    tasks(store, [1, 2, 3, 4, 5, 6])
    query = store.begin().query("tasks").with_index("by_priority")
    even = query.filter(lambda q: q.eq(q.mod(q.field("priority"), 2), 0))
    assert priorities(even.limit(2).collect()) == [2, 4]
    assert priorities(query.limit(4).limit(2).collect()) == [1, 2]
    assert priorities(query.limit(2).limit(4).collect()) == [1, 2]


def test_unique_looks_at_the_limited_rows_only(store):
    tasks(store, [1, 2])
    query = store.begin().query("tasks").with_index("by_priority")
    assert query.limit(1).unique()["priority"] == 1
    with pytest.raises(QueryError, match="more than one result"):
        query.limit(2).unique()


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_limit_reads_what_take_reads(store, n, descending):
    tasks(store, [10, 20, 30, 40])
    order = "desc" if descending else "asc"
    limited, taken = store.begin(), store.begin()
    filtered = limited.query("tasks").with_index("by_priority").order(order)
    filtered = filtered.filter(lambda q: q.neq(q.field("priority"), 20))
    filtered.limit(n).collect()
    twin = taken.query("tasks").with_index("by_priority").order(order)
    twin.filter(lambda q: q.neq(q.field("priority"), 20)).take(n)
    assert limited.snapshot.rows_read == taken.snapshot.rows_read
    assert limited.read_set.finalize() == taken.read_set.finalize()


def test_limit_one_depends_only_up_to_its_row(store):
    tasks(store, [10, 20, 30])
    txn = store.begin()
    assert priorities(txn.query("tasks").with_index("by_priority").limit(1).collect()) == [10]
    assert read(txn, store, hypothetical(store, priority=5), "by_priority")
    assert not read(txn, store, hypothetical(store, priority=15), "by_priority")


@pytest.mark.parametrize("n", [-1, 1.0, True, False, "2", None])
def test_limit_needs_a_non_negative_int(store, n):
    with pytest.raises(QueryError, match=r"limit\(n\): n must be a non-negative integer"):
        store.begin().query("tasks").limit(n)


def test_limit_comes_last(store):
    query = store.begin().query("tasks").limit(2)
    with pytest.raises(QueryError, match=r"\.filter\(\) cannot follow \.limit\(n\)"):
        query.filter(lambda q: q.eq(1, 1))
    with pytest.raises(QueryError, match=r"\.order\(\) cannot follow \.limit\(n\)"):
        query.order("desc")
    with pytest.raises(QueryError, match=r"\.with_index\(\) cannot follow \.limit\(n\)"):
        query.with_index("by_done")
    with pytest.raises(QueryError, match=r"paginate\(\) cannot be used on a query with \.limit"):
        query.paginate({"numItems": 1, "cursor": None})

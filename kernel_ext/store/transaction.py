"""Transactions: snapshot reads, an own-writes overlay, a read set and a write set.

A transaction reads one consistent `Snapshot` (a timestamp of the store) through an overlay of
its own pending writes, so it sees what it wrote, in index order. Every read is recorded in the
read set as index key intervals. The engine commits the write set after checking that no later
commit wrote a key in the read set (optimistic concurrency control). Nested
`run_mutation` calls push overlay layers that commit into their parent or roll back alone.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

from kernel_ext.errors import (
    DocumentNotFound,
    QueryError,
    SchemaError,
    TransactionClosed,
    ValidationError,
)
from kernel_ext.store.catalog import (
    BY_CREATION_TIME,
    BY_ID,
    CatalogView,
    IndexInfo,
    TableInfo,
    document_suffix,
    id_key,
)
from kernel_ext.store.ids import decode_id, new_id, table_number_of
from kernel_ext.store.index_kinds import SearchIndexConfig
from kernel_ext.store.keys import KEY_MAX
from kernel_ext.store.notices import warn_once
from kernel_ext.store.query import Query, Row
from kernel_ext.store.ranges import KeyRange
from kernel_ext.store.readset import TABLES, ReadSet, ScanProgress, WrittenKey, table_created_key
from kernel_ext.store.schema import SYSTEM_FIELDS, SchemaDefinition, check_table_name
from kernel_ext.store.search import (
    MAX_RESULTS,
    Searcher,
    SearchFilterBuilder,
    compile_search,
    entry_of,
    ranking,
    search_read,
    search_read_name,
)
from kernel_ext.store.validators import NumberKind
from kernel_ext.store.values import (
    MAX_DOCUMENT_SIZE,
    UNDEFINED,
    Value,
    convex_size,
    normalize,
    same_value,
)

__all__ = [
    "IndexKeys",
    "Snapshot",
    "Transaction",
    "Write",
    "copy_value",
    "index_keys",
    "written_keys",
]


class Snapshot(Protocol):
    """A consistent read view of storage at one commit timestamp."""

    ts: int

    def get(self, table_number: int, id_key: bytes) -> dict[str, Value] | None:
        """The document with that (encoded) id in that table, or None."""

    def scan(
        self, table_number: int, index_id: int | None, lo: bytes, hi: bytes, descending: bool
    ) -> Iterator[Row]:
        """Rows of an index (`index_id` None: `by_id`) with keys in `[lo, hi)`, in order."""

    def close(self) -> None:
        """End this snapshot (idempotent); its owner may reuse what it held. Reads after it
        raise `PersistenceError`."""


class Write(NamedTuple):
    """One document's change in a commit: `old` None for an insert, `new` None for a delete."""

    table: str
    old: dict[str, Value] | None
    new: dict[str, Value] | None
    rewritten: bool = False  # written more than once in the transaction: may be a no-op


def copy_value(value: Value) -> Value:
    """A deep copy of a Convex value (lists and dicts are the only mutable parts)."""
    t = type(value)
    if t is dict:
        out = value.copy()  # shallow, in C; then copy the (rarer) nested containers
        for k, x in out.items():
            if type(x) is dict or type(x) is list:
                out[k] = copy_value(x)
        return out
    if t is list:
        return [copy_value(x) if type(x) is dict or type(x) is list else x for x in value]
    return value


#: A written document's keys in one index: `(index, "table.index", old, new, unchanged)`;
#: `old` None: inserted; `new` None: deleted, or `unchanged` (the new key equals the old one
#: and was not encoded again). A plain tuple: one is made per index of every write.
IndexKeys = tuple[IndexInfo, str, bytes | None, bytes | None, bool]


def index_keys(table: TableInfo, write: Write) -> list[IndexKeys]:
    """The old and new key of one written document in every index of its table. Most updates
    leave most keys alone: an index whose fields did not change is not encoded twice."""
    old_doc, new_doc = write.old, write.new
    old_suffix = None if old_doc is None else document_suffix(old_doc)
    new_suffix = None if new_doc is None else document_suffix(new_doc)
    # Versions of one document (always, here) can share keys; then compare fields, not keys.
    comparable = old_suffix is not None and new_suffix == old_suffix
    prefix = table.name + "."
    out: list[IndexKeys] = []
    for index in table.indexes.values():  # this runs for every index of every write: lean
        old = None if old_doc is None else index.key_of(old_doc, old_suffix)
        if new_doc is None:
            new, unchanged = None, False
        elif comparable and index.same_fields(old_doc, new_doc):  # type: ignore[arg-type]
            new, unchanged = None, True
        else:
            new, unchanged = index.key_of(new_doc, new_suffix), False
        out.append((index, prefix + index.name, old, new, unchanged))
    return out


def written_keys(table: TableInfo, write: Write) -> list[WrittenKey]:
    """The old and new index keys, in every index of the table, of one written document."""
    keys: list[WrittenKey] = []
    for _, name, old, new, unchanged in index_keys(table, write):
        written = old if unchanged else new
        keys.extend((name, key) for key in (old, written) if key is not None)
    return keys


class Transaction:
    """The state of one query or mutation execution (see the module docstring).

    Args:
        snapshot: the storage view to read.
        catalog: tables and indexes.
        schema: validates writes (None: no schema).
        writable: False for queries.
        allocate_table: creates a table on first insert and returns it.
        creation_time: returns the next `_creationTime` (strictly increasing).
    """

    #: The engine's vector indexes (`vector_query.VectorCandidates`), set by the store that
    #: made the transaction; None: vector searches scan the table.
    vectors: Any = None

    def __init__(
        self,
        snapshot: Snapshot,
        catalog: CatalogView,
        schema: SchemaDefinition | None,
        *,
        writable: bool,
        allocate_table: Callable[[str], TableInfo],
        creation_time: Callable[[], float],
    ) -> None:
        self.snapshot = snapshot
        self.catalog = catalog
        self.schema = schema
        self.writable = writable
        self.read_set = ReadSet()
        self.closed = False
        self.paginated = False
        #: Answers full-text searches (`store.search.Searcher`; set by the engine).
        self.searcher: Searcher | None = None
        self._layers: list[dict[str, Write]] = [{}]
        self._read_cache: dict[str, dict[str, Value] | None] = {}  # never handed out: copy
        self._allocate_table = allocate_table
        self._creation_time = creation_time

    # -- lifecycle -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise TransactionClosed(
                "This ctx belongs to a function that has already returned; use ctx.db only "
                "while the function runs"
            )

    def begin_nested(self) -> None:
        """Start a sub-transaction (a nested mutation)."""
        self._layers.append({})

    def commit_nested(self) -> None:
        """Merge the innermost sub-transaction's writes into its parent."""
        top = self._layers.pop()
        parent = self._layers[-1]
        for doc_id, write in top.items():
            previous = parent.get(doc_id)
            parent[doc_id] = (
                write if previous is None else Write(write.table, previous.old, write.new, True)
            )

    def rollback_nested(self) -> None:
        """Discard the innermost sub-transaction's writes."""
        self._layers.pop()

    def write_set(self) -> dict[str, Write]:
        """The net writes (inserted-then-deleted documents and no-ops dropped)."""
        if len(self._layers) == 1:
            merged = self._layers[0]  # no nested mutation is open: nothing to merge
        else:
            merged = {}
            for layer in self._layers:
                for doc_id, write in layer.items():
                    previous = merged.get(doc_id)
                    merged[doc_id] = (
                        write
                        if previous is None
                        else Write(write.table, previous.old, write.new, True)
                    )
        return {
            doc_id: w
            for doc_id, w in merged.items()
            if not (w.old is None and w.new is None)
            and not (
                w.rewritten and w.old is not None and w.new is not None and same_value(w.old, w.new)
            )
        }

    # -- reads ---------------------------------------------------------------------------

    def _pending(self, doc_id: str) -> Write | None:
        layers = self._layers
        if len(layers) == 1:  # no nested mutation open: the common case
            return layers[0].get(doc_id)
        for layer in reversed(layers):
            write = layer.get(doc_id)
            if write is not None:
                return write
        return None

    def _resolve_id(self, doc_id: object, method: str, *, system: bool) -> TableInfo | None:
        decoded = decode_id(doc_id)
        if decoded is None:
            raise ValidationError(
                f"Invalid argument `id` for `db.{method}`: {doc_id!r} is not a valid document id"
            )
        table = self.catalog.table_by_number(decoded[0])
        if table is None:
            # What was read is that no such table exists: a commit that creates it (in
            # another process of a shared store, say) conflicts with this read.
            self.read_set.add_point(TABLES, table_created_key(decoded[0]))
        elif table.name.startswith("_") != system:
            if system:
                raise ValidationError(f"db.system.{method} can only read system tables")
            raise ValidationError("System tables can only be accessed with db.system.")
        return table

    def _read(self, table: TableInfo, doc_id: str) -> dict[str, Value] | None:
        self.read_set.add_point(f"{table.name}.{BY_ID}", id_key(doc_id))
        pending = self._pending(doc_id)
        if pending is not None:
            return pending.new
        if doc_id not in self._read_cache:  # get() then patch() reads storage once
            self._read_cache[doc_id] = self.snapshot.get(table.number, id_key(doc_id))
        return self._read_cache[doc_id]

    def get(self, doc_id: str, *, system: bool = False) -> dict[str, Value] | None:
        """The document with that id (as this transaction sees it), or None."""
        self._check_open()
        table = self._resolve_id(doc_id, "get", system=system)
        if table is None:
            return None
        doc = self._read(table, doc_id)
        return None if doc is None else copy_value(doc)

    def query(self, table: str, *, system: bool = False) -> Query:
        """Start a query over `table` (system tables only through `db.system`)."""
        self._check_open()
        if not isinstance(table, str):
            raise QueryError(f"db.query() takes a table name, got {table!r}")
        if table.startswith("_") != system:
            raise QueryError(
                "System tables can only be accessed with db.system."
                if not system
                else f"db.system.query() reads system tables, not {table!r}"
            )
        if not system and self.schema is not None and table not in self.schema.tables:
            self._check_declared(table)
        return Query(self, table)

    def _check_declared(self, table: str) -> None:
        """Warn if `table` is neither in the schema nor in the store: likely a typo, which
        would return [] in silence (as in Convex)."""
        if self.catalog.table(table) is not None:
            return  # a table outside the schema that exists: allowed, never validated
        declared = ", ".join(repr(t) for t in sorted(self.schema.tables)) or "none"  # type: ignore[union-attr]
        warn_once(
            ("undeclared-table", table),
            f"db.query({table!r}): the schema does not declare table {table!r} and the store "
            f"has no such table, so the query returns no documents. Declared tables: "
            f"{declared}. Check the name (or declare the table in the schema).",
        )

    def number_kind(self, table: str, path: str) -> tuple[NumberKind, bool] | None:
        """See `QuerySource.number_kind`. `_creationTime` is always a float64 (with or without
        a schema): the store writes it."""
        if path == "_creationTime":
            return "float64", True
        schema = self.schema
        if schema is None:
            return None
        kind = schema.number_kind(table, path)
        return None if kind is None else (kind, schema.schema_validation)

    def normalize_id(self, table: str, doc_id: str, *, system: bool = False) -> str | None:
        """`doc_id` if it is a well-formed id of `table`, else None (existence not checked)."""
        self._check_open()
        if isinstance(table, str) and table.startswith("_") != system:
            raise ValidationError("System tables can only be accessed with db.system.")
        decoded = decode_id(doc_id)
        info = self.catalog.table(table) if isinstance(table, str) else None
        if decoded is None or info is None or decoded[0] != info.number:
            return None
        return doc_id

    # QuerySource ---------------------------------------------------------------------

    def index_info(self, table: str, index: str) -> IndexInfo | None:
        """See `QuerySource.index_info`."""
        self._check_open()
        info = self.catalog.table(table)
        if info is None:
            # The table does not exist yet; the insert that creates it writes a key here.
            self.read_set.add(f"{table}.{BY_CREATION_TIME}", b"", KEY_MAX)
            return None
        found = info.indexes.get(index)
        if found is None and index in info.search_indexes:
            kind = info.search_indexes[index].kind
            raise QueryError(
                f"Index {table}.{index} is a {kind} index, which with_index cannot read: use "
                f".with_{kind}_index({index!r}, ...) instead"
            )
        if found is None:
            raise QueryError(
                f"Index {table}.{index} not found. Declare it in the schema with "
                f'.index("{index}", [...]); existing: {sorted(info.indexes)}'
            )
        return found

    def search(
        self, table: str, index: str, build: Callable[[SearchFilterBuilder], Any]
    ) -> Iterator[tuple[float, dict[str, Value]]]:
        """See `QuerySource.search`: storage's index state merged with this transaction's
        writes, ranked."""
        self._check_open()
        info = self.catalog.table(table)
        if info is None:
            # The table does not exist yet; the insert that creates it writes a key here.
            self.read_set.add(f"{table}.{BY_CREATION_TIME}", b"", KEY_MAX)
            return iter(())
        found = info.search_indexes.get(index)
        if found is None or not isinstance(found.config, SearchIndexConfig):
            raise QueryError(
                f"Search index {table}.{index} not found. Declare it in the schema with "
                f'.search_index("{index}", search_field=...); search indexes: '
                f"{sorted(n for n, i in info.search_indexes.items() if i.kind == 'search')}"
            )
        builder = SearchFilterBuilder()
        if build(builder) is not builder:
            raise QueryError(
                "The with_search_index callback must return the search builder, e.g. "
                "lambda q: q.search('body', text)"
            )
        config = found.config
        spec = compile_search(table, index, config, builder)
        self.read_set.add_search(search_read_name(table, index), search_read(spec))
        if self.searcher is None or found.index_id is None:
            raise QueryError("This store cannot run full-text searches")
        state = self.searcher(
            self.snapshot, info.number, found.index_id, config, spec, self.writable
        )
        pending = self._pending_docs(table)
        for doc_id, new in pending.items():  # this transaction's own writes
            state.remove(spec, entry_of(config, self.snapshot.get(info.number, id_key(doc_id))))
            state.add(spec, entry_of(config, new))
        # Reading past MAX_RESULTS documents is an error (`search_query`): read no more.
        ranked = itertools.islice(ranking(spec, state), MAX_RESULTS + 1)
        return self._search_docs(info.number, ranked, pending)

    def _search_docs(
        self,
        table_number: int,
        ranked: Iterable[tuple[float, str]],
        pending: dict[str, dict[str, Value] | None],
    ) -> Iterator[tuple[float, dict[str, Value]]]:
        """The documents of ranked ids, read as they are asked for (`take(n)` reads n)."""
        for score, doc_id in ranked:
            new = doc_id in pending
            doc = pending[doc_id] if new else self.snapshot.get(table_number, id_key(doc_id))
            if doc is not None:
                yield score, copy_value(doc) if new else doc

    def begin_paginate(self) -> None:
        """See `QuerySource.begin_paginate`."""
        if self.paginated:
            raise QueryError("Only a single paginated query (.paginate()) is allowed per function")
        self.paginated = True

    def scan(
        self, table: str, index: IndexInfo, key_range: KeyRange, descending: bool
    ) -> Iterator[Row]:
        """See `QuerySource.scan`: storage rows merged with this transaction's writes."""
        info = self.catalog.table(table)
        assert info is not None  # index_info() returned an index of it
        lo, hi = key_range.lo, key_range.hi
        progress = self.read_set.track(ScanProgress(f"{table}.{index.name}", lo, hi, descending))
        pending = self._pending_docs(table)
        if not pending:  # always for a query: storage rows as they are
            for key, doc in self.snapshot.scan(info.number, index.index_id, lo, hi, descending):
                self._check_open()
                progress.last_key = key
                yield key, doc
            progress.exhausted = True
            return
        overlay = sorted(
            (
                (key, doc)
                for doc in pending.values()
                if doc is not None
                for key in (index.key_of(doc),)
                if lo <= key < hi
            ),
            key=lambda row: row[0],
            reverse=descending,
        )
        stored = (
            row
            for row in self.snapshot.scan(info.number, index.index_id, lo, hi, descending)
            if row[1]["_id"] not in pending
        )
        rows = (
            heapq.merge(stored, overlay, key=lambda row: row[0], reverse=descending)
            if overlay
            else stored
        )
        for key, doc in rows:
            self._check_open()
            progress.last_key = key
            yield key, copy_value(doc) if doc is pending.get(doc["_id"]) else doc
        progress.exhausted = True

    def _pending_docs(self, table: str) -> dict[str, dict[str, Value] | None]:
        docs: dict[str, dict[str, Value] | None] = {}
        for layer in self._layers:
            for doc_id, write in layer.items():
                if write.table == table:
                    docs[doc_id] = write.new
        return docs

    # -- writes --------------------------------------------------------------------------

    def _check_writable(self, method: str) -> None:
        self._check_open()
        if not self.writable:
            raise TransactionClosed(f"db.{method} is not available in a query; use a mutation")

    def _validate(self, table: str, doc: dict[str, Value]) -> dict[str, Value]:
        """The document to store: `doc`, or a copy with ints in `v.number()` fields made
        floats by the schema. Raises if it may not be stored."""
        size = convex_size(doc)
        if size > MAX_DOCUMENT_SIZE:
            raise ValidationError(f"Value is too large ({size} bytes > maximum size 1 MiB)")
        if self.schema is not None:
            return self.schema.validate_write(table, doc, self.catalog.table_name)
        return doc

    def _put(
        self, table: str, doc_id: str, old: dict[str, Value] | None, new: dict[str, Value] | None
    ) -> None:
        pending = self._pending(doc_id)
        base = pending.old if pending is not None else old
        self._layers[-1][doc_id] = Write(table, base, new, pending is not None)

    def insert(
        self,
        table: str,
        value: Mapping[str, Any],
        *,
        system: bool = False,
        doc_id: str | None = None,
    ) -> str:
        """Insert a new document; returns its id. `doc_id` (system tables only): the id,
        made beforehand with `new_id` of the table's number (a stored file is named by its
        `_storage` id before that row commits)."""
        self._check_writable("insert")
        info = self.catalog.table(table) if type(table) is str else None
        # An existing table's name was checked when it was created (a user may still not
        # insert into a system table).
        if not system and (info is None or table.startswith("_")):
            try:
                check_table_name(table)
            except SchemaError as exc:
                raise ValidationError(str(exc)) from exc
        fields = _user_fields(value, "insert", system=system)
        info = info or self._allocate_table(table)
        if doc_id is None:
            doc_id = new_id(info.number)
        elif not system or table_number_of(doc_id) != info.number:
            raise ValidationError(f"insert(doc_id=...) takes an id of system table {table!r}")
        doc = {"_id": doc_id, "_creationTime": self._creation_time(), **fields}
        self._put(table, doc_id, None, self._validate(table, doc))
        return doc_id

    def _existing(
        self, doc_id: str, method: str, system: bool
    ) -> tuple[TableInfo, dict[str, Value]]:
        self._check_writable(method)
        table = self._resolve_id(doc_id, method, system=system)
        current = None if table is None else self._read(table, doc_id)
        if table is None or current is None:
            verb = {"patch": "Update", "replace": "Replace", "delete": "Delete"}[method]
            raise DocumentNotFound(f"{verb} on nonexistent document ID {doc_id}")
        return table, current

    def patch(self, doc_id: str, partial: Mapping[str, Any], *, system: bool = False) -> None:
        """Shallow-merge `partial` into the document; `UNDEFINED` removes a field."""
        table, current = self._existing(doc_id, "patch", system)
        if type(partial) is not dict and not isinstance(partial, Mapping):
            raise ValidationError(f"db.patch() takes a dict of fields, got {partial!r}")
        if "_id" in partial or "_creationTime" in partial:
            _check_system_fields(partial, current)
            partial = {k: x for k, x in partial.items() if k not in SYSTEM_FIELDS}
        updates = normalize(partial, path="")  # drops the UNDEFINED fields: those are removed
        if not system:
            _check_user_field_names(updates)
        removed = [k for k, x in partial.items() if x is UNDEFINED]
        new = dict(current)
        for k in removed:
            new.pop(k, None)
        new.update(updates)
        stored = self._validate(table.name, new)
        if stored is not new:  # ints made floats: compare what is stored
            new, updates = stored, {k: stored[k] for k in updates}
        if _changes(current, updates, removed):  # a no-op patch records no write
            self._put(table.name, doc_id, current, new)

    def replace(self, doc_id: str, value: Mapping[str, Any], *, system: bool = False) -> None:
        """Replace all user fields of the document (system fields are kept)."""
        table, current = self._existing(doc_id, "replace", system)
        if not isinstance(value, Mapping):
            raise ValidationError(f"db.replace() takes a dict of fields, got {value!r}")
        _check_system_fields(value, current)
        fields = _user_fields(value, "replace", system=system)
        new = {"_id": current["_id"], "_creationTime": current["_creationTime"], **fields}
        new = self._validate(table.name, new)
        if not same_value(new, current):
            self._put(table.name, doc_id, current, new)

    def delete(self, doc_id: str, *, system: bool = False) -> None:
        """Delete the document."""
        table, current = self._existing(doc_id, "delete", system)
        self._put(table.name, doc_id, current, None)


def _changes(current: dict[str, Value], updates: dict[str, Value], removed: list[str]) -> bool:
    """True if setting `updates` and removing `removed` changes the document `current`."""
    for k in removed:
        if k in current:
            return True
    for k, x in updates.items():
        if k not in current:
            return True
        y = current[k]
        if x is not y and not same_value(x, y):
            return True
    return False


def _check_system_fields(value: Mapping[str, Any], current: dict[str, Value]) -> None:
    for name in SYSTEM_FIELDS:
        if name in value and (value[name] is UNDEFINED or value[name] != current[name]):
            raise ValidationError(
                f"Provided `{name}` field value {value[name]!r} does not match the document's "
                f"{current[name]!r}"
            )


def _user_fields(value: Any, method: str, *, system: bool) -> dict[str, Value]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(f"db.{method}() takes a dict of fields, got {value!r}")
    if "_id" not in value and "_creationTime" not in value:
        fields: dict[str, Value] = normalize(value)
    else:
        fields = normalize({k: x for k, x in value.items() if k not in SYSTEM_FIELDS})
        if method == "insert":
            raise ValidationError(f"db.insert(): a new document cannot set {list(SYSTEM_FIELDS)}")
    if not system:
        _check_user_field_names(fields)
    return fields


def _check_user_field_names(fields: Mapping[str, Any]) -> None:
    for name in fields:
        if name.startswith("_"):
            raise ValidationError(
                f"Field {name!r}: top-level field names cannot start with '_' (reserved for "
                "system fields)"
            )

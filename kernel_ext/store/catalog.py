"""The catalog: which tables exist, their numbers, and their indexes with storage ids.

Pure bookkeeping; the engine persists every change through the persistence layer before it
is applied here. Every table has the implicit indexes `by_id` (key `[_id]`, served by the
documents table itself, so it has no storage id) and `by_creation_time`
(key `[_creationTime, _id]`); a user index on `fields` is keyed `[*fields, _creationTime, _id]`.
Search and vector indexes (`index_kinds`) have no ordered entries: a table keeps them apart
(`TableInfo.search_indexes`), so that writes and range queries only ever see ordered indexes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Final, Protocol

from kernel_ext.store.expressions import field_value
from kernel_ext.store.index_kinds import DB, IndexConfig, IndexKind
from kernel_ext.store.keys import encode_key
from kernel_ext.store.values import Value, same_value

__all__ = [
    "BY_CREATION_TIME",
    "BY_ID",
    "Catalog",
    "CatalogView",
    "IndexInfo",
    "TableInfo",
    "document_suffix",
    "id_key",
]

BY_ID: Final = "by_id"
BY_CREATION_TIME: Final = "by_creation_time"


@functools.lru_cache(maxsize=1 << 16)
def id_key(doc_id: str) -> bytes:
    """The `by_id` key of a document id."""
    return encode_key((doc_id,))


def document_suffix(doc: dict[str, Value]) -> bytes:
    """The encoded `[_creationTime, _id]` that ends every index key of a document but `by_id`
    (the same for every version of the document)."""
    return _suffix(doc["_creationTime"], doc["_id"])


@functools.lru_cache(maxsize=1 << 12, typed=True)
def _suffix(creation_time: float, doc_id: str) -> bytes:
    # Cached: a commit needs it for the old and the new version of each document, and a
    # document written often (a counter) is written again soon.
    return encode_key((creation_time, doc_id))


@dataclass(frozen=True)
class IndexInfo:
    """An index of a table: storage id (None for `by_id`), user fields and full key fields;
    for a search or vector index its `kind` and `config` (`fields` then lists the fields it
    reads, and `key_of` does not apply)."""

    name: str
    index_id: int | None
    fields: tuple[str, ...]
    kind: IndexKind = DB
    config: IndexConfig | None = None
    #: The fields of the stored key, including the implicit suffix (derived from the others).
    key_fields: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key_fields = ("_id",) if self.name == BY_ID else (*self.fields, "_creationTime", "_id")
        object.__setattr__(self, "key_fields", key_fields)  # frozen: set once, here

    def key_of(self, doc: dict[str, Value], suffix: bytes | None = None) -> bytes:
        """The encoded index key of a document (`suffix`: its `document_suffix`, if known)."""
        if self.name == BY_ID:
            return id_key(doc["_id"])
        if suffix is None:
            suffix = document_suffix(doc)
        if not self.fields:
            return suffix
        return encode_key([field_value(doc, f) for f in self.fields]) + suffix

    @property
    def shape(self) -> tuple[str, tuple[str, ...], IndexConfig | None]:
        """What makes two definitions of an index the same index: kind, fields, config."""
        return (self.kind, self.fields, self.config)

    def same_fields(self, a: dict[str, Value], b: dict[str, Value]) -> bool:
        """True if two versions of one document (same `_id` and `_creationTime`) have the same
        key in this index: compares the indexed fields without encoding them."""
        for f in self.fields:
            x, y = field_value(a, f), field_value(b, f)
            if x is not y and not same_value(x, y):
                return False
        return True


@dataclass
class TableInfo:
    """A table: its name, number, ordered (`db`) indexes by name, and search and vector
    indexes by name (index names are unique across both)."""

    name: str
    number: int
    indexes: dict[str, IndexInfo] = field(default_factory=dict)
    search_indexes: dict[str, IndexInfo] = field(default_factory=dict)

    def all_indexes(self) -> dict[str, IndexInfo]:
        """Every index of the table, of every kind, by name."""
        return {**self.indexes, **self.search_indexes}


class CatalogView(Protocol):
    """Read access to tables, as a transaction needs it."""

    def table(self, name: str) -> TableInfo | None:
        """The table with that name, or None."""

    def table_by_number(self, number: int) -> TableInfo | None:
        """The table with that number, or None."""

    def table_name(self, number: int) -> str | None:
        """The name of the table with that number, or None."""


def new_table_info(name: str, number: int, creation_index_id: int) -> TableInfo:
    """A table with its implicit indexes (`by_id`, `by_creation_time`)."""
    return TableInfo(
        name,
        number,
        {
            BY_ID: IndexInfo(BY_ID, None, ()),
            BY_CREATION_TIME: IndexInfo(BY_CREATION_TIME, creation_index_id, ()),
        },
    )


class Catalog:
    """Tables and indexes by name and number."""

    def __init__(self) -> None:
        self._by_name: dict[str, TableInfo] = {}
        self._by_number: dict[int, TableInfo] = {}

    def add_table(self, name: str, number: int) -> TableInfo:
        """Record a table (with its `by_id` index); returns its info."""
        return self.install(TableInfo(name, number, {BY_ID: IndexInfo(BY_ID, None, ())}))

    def install(self, info: TableInfo) -> TableInfo:
        """Record a fully built table."""
        self._by_name[info.name] = info
        self._by_number[info.number] = info
        return info

    def remove_table(self, name: str) -> None:
        """Forget a table (a commit that created it failed)."""
        info = self._by_name.pop(name, None)
        if info is not None:
            self._by_number.pop(info.number, None)

    def add_index(self, table: str, index: IndexInfo) -> None:
        """Record an index of an existing table."""
        info = self._by_name[table]
        by_kind = info.indexes if index.kind == DB else info.search_indexes
        by_kind[index.name] = index

    def drop_index(self, table: str, name: str) -> None:
        """Forget an index (of any kind)."""
        info = self._by_name[table]
        info.indexes.pop(name, None)
        info.search_indexes.pop(name, None)

    def table(self, name: str) -> TableInfo | None:
        """The table with that name, or None."""
        return self._by_name.get(name)

    def table_by_number(self, number: int) -> TableInfo | None:
        """The table with that number, or None."""
        return self._by_number.get(number)

    def table_name(self, number: int) -> str | None:
        """The name of the table with that number (a `TableResolver` for `v.id`)."""
        info = self._by_number.get(number)
        return None if info is None else info.name

    def tables(self) -> list[TableInfo]:
        """All tables, in creation order."""
        return list(self._by_name.values())

    def next_table_number(self) -> int:
        """A number no table has yet (numbers start at 1)."""
        return max(self._by_number, default=0) + 1

    def next_index_id(self) -> int:
        """An index id no index has yet (ids start at 1)."""
        ids = [i.index_id or 0 for t in self._by_name.values() for i in t.all_indexes().values()]
        return max(ids, default=0) + 1

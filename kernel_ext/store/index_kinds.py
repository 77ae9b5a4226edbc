"""Index kinds: ordered (`db`), full-text (`search`) and vector (`vector`) indexes.

A `db` index is an ordered key list (`fields`), served by index entries. The other kinds have
no ordered entries: a `search` index is described by a `SearchIndexConfig`, a `vector` index by
a `VectorIndexConfig`, both JSON in the catalog (`config_to_json` / `config_from_json`, the
same text on every backend). The limits are Convex's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from kernel_ext.errors import SchemaError

__all__ = [
    "DB",
    "INDEX_KINDS",
    "MAX_FILTER_FIELDS",
    "MAX_VECTOR_DIMENSIONS",
    "MIN_VECTOR_DIMENSIONS",
    "SEARCH",
    "VECTOR",
    "IndexConfig",
    "IndexKind",
    "SearchIndexConfig",
    "VectorIndexConfig",
    "config_from_json",
    "config_to_json",
]

IndexKind = Literal["db", "search", "vector"]
DB: Final = "db"
SEARCH: Final = "search"
VECTOR: Final = "vector"
INDEX_KINDS: Final = (DB, SEARCH, VECTOR)
#: Convex's limits: filter fields per search or vector index, and vector dimensions.
MAX_FILTER_FIELDS: Final = 16
MIN_VECTOR_DIMENSIONS: Final = 2
MAX_VECTOR_DIMENSIONS: Final = 4096


@dataclass(frozen=True)
class SearchIndexConfig:
    """A full-text index of one string field, with equality filters on `filter_fields`."""

    search_field: str
    filter_fields: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the index reads (the searched one first)."""
        return (self.search_field, *self.filter_fields)

    def to_json(self) -> dict[str, Any]:
        """Convex's spelling (`searchField`, `filterFields`)."""
        return {"searchField": self.search_field, "filterFields": list(self.filter_fields)}


@dataclass(frozen=True)
class VectorIndexConfig:
    """A vector index of one array-of-numbers field of `dimensions` numbers, with equality
    filters on `filter_fields`."""

    vector_field: str
    dimensions: int
    filter_fields: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field the index reads (the vector first)."""
        return (self.vector_field, *self.filter_fields)

    def to_json(self) -> dict[str, Any]:
        """Convex's spelling (`vectorField`, `dimensions`, `filterFields`)."""
        return {
            "vectorField": self.vector_field,
            "dimensions": self.dimensions,
            "filterFields": list(self.filter_fields),
        }


IndexConfig = SearchIndexConfig | VectorIndexConfig


def config_to_json(config: IndexConfig | None) -> str | None:
    """The catalog text of a config (None for a `db` index): canonical, so equal configs
    give equal text on every backend."""
    if config is None:
        return None
    return json.dumps(config.to_json(), sort_keys=True, separators=(",", ":"))


def config_from_json(kind: str, text: str | None) -> IndexConfig | None:
    """The config stored as `text` for an index of `kind`.

    Raises:
        SchemaError: an unknown kind, or a config that does not fit its kind.
    """
    if kind == DB:
        return None
    data = json.loads(text) if text else None
    if kind == SEARCH and isinstance(data, Mapping):
        return SearchIndexConfig(str(data["searchField"]), tuple(data.get("filterFields", ())))
    if kind == VECTOR and isinstance(data, Mapping):
        return VectorIndexConfig(
            str(data["vectorField"]), int(data["dimensions"]), tuple(data.get("filterFields", ()))
        )
    raise SchemaError(
        f"The catalog holds an index of kind {kind!r} with config {text!r}, which this version "
        f"does not read (kinds: {', '.join(INDEX_KINDS)}); open the store with the version "
        "that made it"
    )

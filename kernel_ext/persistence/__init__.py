"""Storage behind the engine: the `Persistence` interface (`base`), its backends (`sqlite`,
`memory`), and `open_persistence(url)` (`urls`), the one place that builds a store from a URL."""

from __future__ import annotations

from kernel_ext.persistence.base import CommitRecord, IndexChange, Persistence, Snapshot
from kernel_ext.persistence.urls import describe_url, open_persistence, parse_store_url

__all__ = [
    "CommitRecord",
    "IndexChange",
    "Persistence",
    "Snapshot",
    "describe_url",
    "open_persistence",
    "parse_store_url",
]

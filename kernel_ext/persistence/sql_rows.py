"""The rows a commit changes in the SQL backends' tables (SQLite, PostgreSQL).

Both keep documents as `(table_number, id_key, body)` and index entries as `(index_id, key,
id_key)`; `commit_rows` sorts a commit's records into the statements' parameter rows, so that
each backend only supplies its SQL.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kernel_ext.persistence.base import CommitRecord
from kernel_ext.store.codec import encode_document

__all__ = ["CommitRows", "commit_rows"]


class CommitRows(NamedTuple):
    """Parameter rows by statement.

    Attributes:
        inserts: `(table_number, id_key, body)` of new documents.
        updates: `(body, table_number, id_key)` of replaced documents.
        deletes: `(table_number, id_key)` of deleted documents.
        removed: `(index_id, key)` of index entries to delete.
        moved: `(new_key, index_id, old_key)` of index entries whose key changed (keys end
            with the document's id, so a moved key never lands on another's old key).
        added: `(index_id, key, id_key)` of new index entries.
    """

    inserts: list[tuple[Any, ...]]
    updates: list[tuple[Any, ...]]
    deletes: list[tuple[Any, ...]]
    removed: list[tuple[Any, ...]]
    moved: list[tuple[Any, ...]]
    added: list[tuple[Any, ...]]


def commit_rows(records: list[CommitRecord]) -> CommitRows:
    """The rows `records` insert, update and delete (an index change that keeps its key is
    left out)."""
    rows = CommitRows([], [], [], [], [], [])
    for r in records:
        if r.doc is None:
            rows.deletes.append((r.table_number, r.id_key))
        elif r.replaces:
            rows.updates.append((encode_document(r.doc), r.table_number, r.id_key))
        else:
            rows.inserts.append((r.table_number, r.id_key, encode_document(r.doc)))
        for index_id, old, new in r.index_changes:
            if old == new:
                continue
            if old is not None and new is not None:
                rows.moved.append((new, index_id, old))
            elif old is not None:
                rows.removed.append((index_id, old))
            else:
                rows.added.append((index_id, new, r.id_key))
    return rows

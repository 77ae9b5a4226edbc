"""The commit log's entries: what one commit changed, in bytes another process can replay.

A store that several processes share (PostgreSQL) keeps, beside the documents, a log of recent
commits. Each process reads the entries of commits made elsewhere and replays them into its own
engine: the index keys written drive its OCC validation and the invalidation of its live
queries; the documents' old and new versions drive its incremental views and aggregates; the
tables created and the catalog flag keep its catalog current.

Pure: no I/O. Layout of an entry (all lengths big-endian u32):

    [header length][header: orjson]{[chunk length][chunk]}...

The header is `{"w": [[doc_id, table, has_old, has_new, rewritten], ...], "k": [index_name,
...], "t": [[table, number, [[index, index_id, [fields...]], ...]], ...], "c": catalog_changed,
"d": definitions_changed}`; the chunks follow in order: for each write its old then its new
document (`codec.encode_document`, when present), then one chunk per written key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from kernel_ext.store.catalog import IndexInfo, TableInfo
from kernel_ext.store.codec import decode_document, encode_document
from kernel_ext.store.readset import WrittenKey
from kernel_ext.store.transaction import Write

__all__ = ["LoggedCommit", "decode_commit", "encode_commit"]

_LENGTH: Final = struct.Struct(">I")


@dataclass
class LoggedCommit:
    """One commit as the log carries it.

    Attributes:
        writes: each written document's id and its `Write` (table name, old and new version).
        keys: the index keys written (old and new), as the engine's write log takes them.
        new_tables: the tables the commit created, with their indexes.
        catalog_changed: the commit created or dropped indexes: reload the catalog.
        definitions_changed: a change of function definitions (`Store.record_change`).
    """

    writes: dict[str, Write] = field(default_factory=dict)
    keys: list[WrittenKey] = field(default_factory=list)
    new_tables: list[TableInfo] = field(default_factory=list)
    catalog_changed: bool = False
    definitions_changed: bool = False


def encode_commit(commit: LoggedCommit) -> bytes:
    """The log entry of `commit` (see the module docstring)."""
    chunks: list[bytes] = []
    writes: list[list[Any]] = []
    for doc_id, write in commit.writes.items():
        writes.append(
            [doc_id, write.table, write.old is not None, write.new is not None, write.rewritten]
        )
        if write.old is not None:
            chunks.append(encode_document(write.old))
        if write.new is not None:
            chunks.append(encode_document(write.new))
    chunks.extend(key for _, key in commit.keys)
    header = orjson.dumps(
        {
            "w": writes,
            "k": [name for name, _ in commit.keys],
            "t": [
                [
                    t.name,
                    t.number,
                    [[i.name, i.index_id, list(i.fields)] for i in t.indexes.values()],
                ]
                for t in commit.new_tables
            ],
            "c": commit.catalog_changed,
            "d": commit.definitions_changed,
        }
    )
    parts = [_LENGTH.pack(len(header)), header]
    for chunk in chunks:
        parts.append(_LENGTH.pack(len(chunk)))
        parts.append(chunk)
    return b"".join(parts)


def decode_commit(data: bytes) -> LoggedCommit:
    """Inverse of `encode_commit`.

    Raises:
        ValueError: `data` is not an entry `encode_commit` wrote.
    """
    view = memoryview(data)
    offset = 0

    def take() -> bytes:
        nonlocal offset
        if offset + 4 > len(view):
            raise ValueError("a commit log entry ends in the middle of a length")
        (length,) = _LENGTH.unpack_from(view, offset)
        start, offset = offset + 4, offset + 4 + length
        if offset > len(view):
            raise ValueError("a commit log entry ends in the middle of a chunk")
        return bytes(view[start:offset])

    header = orjson.loads(take())
    writes: dict[str, Write] = {}
    for doc_id, table, has_old, has_new, rewritten in header["w"]:
        old = decode_document(take()) if has_old else None
        new = decode_document(take()) if has_new else None
        writes[doc_id] = Write(table, old, new, rewritten)
    keys: list[WrittenKey] = [(name, take()) for name in header["k"]]
    if offset != len(view):
        raise ValueError("a commit log entry has bytes after its last chunk")
    tables = [
        TableInfo(
            name,
            number,
            {index: IndexInfo(index, index_id, tuple(fields)) for index, index_id, fields in idx},
        )
        for name, number, idx in header["t"]
    ]
    return LoggedCommit(writes, keys, tables, bool(header["c"]), bool(header["d"]))

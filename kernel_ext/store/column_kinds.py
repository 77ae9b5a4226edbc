"""Column kinds: the pandas types `import_dataframe` remembers for each table.

A document store has no datetime, nullable-integer or categorical type, so
`import_dataframe` stores such columns as plain values (datetimes as float milliseconds since
the Unix epoch, UTC) and records each column's kind in the system table `_column_kinds`, in
the same transaction as the rows. `table_df` and `Subscription.df` read the record back and
convert the columns, so a round trip keeps the dtype. One document per user table:
`{"table": name, "tableNumber": n, "columns": [{"column": name, "dtype": str, ...}]}`; a
categorical kind also carries `categories` and `ordered`. A column imported with two
different kinds is marked `"mixed"` and is never converted. Pure: runs on a transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from kernel_ext.store.transaction import Transaction

__all__ = [
    "COLUMN_KINDS",
    "MIXED",
    "column_kinds_by_number",
    "insert_rows",
    "record_column_kinds",
]

COLUMN_KINDS: Final = "_column_kinds"
#: The dtype of a column imported with different kinds (left as stored).
MIXED: Final = "mixed"


def _merge(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The kind of a column after another import of it."""
    if old is None:
        return dict(new)
    if old["dtype"] != new["dtype"]:
        return {"column": new["column"], "dtype": MIXED}
    if new["dtype"] != "category":
        return dict(old)
    categories = list(old.get("categories", []))
    seen = set(categories)
    categories += [c for c in new.get("categories", []) if c not in seen]
    return {**old, "categories": categories}


def record_column_kinds(txn: Transaction, table: str, kinds: list[dict[str, Any]]) -> None:
    """Merge `kinds` (`[{"column", "dtype", ...}]`) into the record of `table`. Call it in
    the transaction that inserts the rows, after the table exists."""
    if not kinds:
        return
    existing = next(
        (d for d in txn.query(COLUMN_KINDS, system=True).collect() if d.get("table") == table),
        None,
    )
    columns: dict[str, Any] = {}
    if existing is not None:
        columns = {str(c["column"]): c for c in existing.get("columns", [])}
    for kind in kinds:
        columns[kind["column"]] = _merge(columns.get(kind["column"]), kind)
    info = txn.catalog.table(table)
    number = info.number if info is not None else None
    document = {"table": table, "tableNumber": number, "columns": list(columns.values())}
    if existing is None:
        txn.insert(COLUMN_KINDS, document, system=True)
    else:
        txn.replace(str(existing["_id"]), document, system=True)


def insert_rows(
    txn: Transaction, table: str, rows: list[dict[str, Any]], kinds: list[dict[str, Any]]
) -> list[str]:
    """Insert `rows` into `table` and record their column `kinds`, in this one transaction
    (an import's batch: rows and kinds agree); returns the new ids in order. A row that
    cannot be inserted raises with a note naming its position in the batch."""
    ids = []
    for position, row in enumerate(rows):
        try:
            ids.append(txn.insert(table, row))
        except Exception as exc:
            exc.add_note(f"(row {position} of its batch: {row!r:.200})")
            raise
    record_column_kinds(txn, table, kinds)
    return ids


def column_kinds_by_number(txn: Transaction) -> dict[int, dict[str, dict[str, Any]]]:
    """`{table number: {column: kind}}` of every table with recorded kinds."""
    if txn.catalog.table(COLUMN_KINDS) is None:
        return {}
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for doc in txn.query(COLUMN_KINDS, system=True).collect():
        number = doc.get("tableNumber")
        if isinstance(number, int):
            out[number] = {str(c["column"]): dict(c) for c in doc.get("columns", [])}
    return out

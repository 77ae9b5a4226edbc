"""What a store knows of a table's columns, for displays (the LiveTable's column kinds).

One function, shared by the embedded client (`Client.column_info`) and the server's admin
request `{"columnInfo": id}` (`kernel_ext.sync.deploy`), so that a remote client gets exactly
what an embedded one computes for the same store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel_ext.store.column_kinds import column_kinds_by_number
from kernel_ext.store.ids import table_number_of

if TYPE_CHECKING:
    from kernel_ext.engine.store import Store

__all__ = ["column_info"]


def column_info(store: Store, document_id: str) -> dict[str, dict[str, Any]]:
    """The columns of the table `document_id` belongs to: `{column: {"validator": <the
    schema's validator JSON of the field>, "dtype": <the pandas kind import_dataframe
    recorded>}}`, each key only when known. Plain JSON (validator JSON is Convex's).

    Empty for a string that is no document id of a table of this store; a table whose
    declared validator is not an object (a union, `v.any()`) declares no fields.
    """
    number = table_number_of(document_id)
    if number is None:
        return {}
    kinds = store.read(column_kinds_by_number)[0].get(number, {})
    info: dict[str, dict[str, Any]] = {
        column: {"dtype": kind.get("dtype")} for column, kind in kinds.items()
    }
    name = store.catalog.table_name(number)
    definition = None if store.schema is None else store.schema.tables.get(str(name))
    declared = {} if definition is None else definition.validator.to_json()
    if declared.get("type") == "object":
        for column, field_info in (declared.get("value") or {}).items():
            info.setdefault(column, {})["validator"] = field_info["fieldType"]
    return info

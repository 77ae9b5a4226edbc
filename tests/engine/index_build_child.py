"""Child process of `test_index_build_crash.py`: applies a schema (building its indexes over
the documents already stored) and waits to be killed.

    python index_build_child.py STORE_PATH INDEX_NAMES

INDEX_NAMES is a comma-separated subset of `INDEXES` (may be empty). Prints `building` once
the store is open and the schema is about to be applied, then `built` once `set_schema` has
returned; then it sleeps until it is killed.
"""

from __future__ import annotations

import sys
import time

import kernel_ext
from kernel_ext import define_schema, define_table, v

#: The indexes a round may declare on the `docs` table: name -> fields.
INDEXES = {"by_a": ["a"], "by_b": ["b"], "by_b_a": ["b", "a"]}


def schema_with(names: list[str]):
    """The schema of the `docs` table with the given indexes of `INDEXES`."""
    table = define_table({"a": v.float64(), "b": v.string()})
    for name in names:
        table = table.index(name, INDEXES[name])
    return define_schema({"docs": table})


def main() -> None:
    path, names = sys.argv[1], [n for n in sys.argv[2].split(",") if n]
    client = kernel_ext.connect(path)
    print("building", flush=True)
    client.backend.store.set_schema(schema_with(names))
    print("built", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()

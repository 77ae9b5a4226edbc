"""Conversions between query results and pandas DataFrames."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["rows_from_dataframe", "to_dataframe"]


def to_dataframe(value: Any) -> pd.DataFrame:
    """A DataFrame of a query result: one row per document, columns in first-seen order,
    `_id` as the index when present. A single document gives one row; None gives an empty
    frame; a list of scalars gives one `value` column."""
    import pandas as pd

    if value is None:
        return pd.DataFrame()
    if isinstance(value, dict) and "page" in value and isinstance(value["page"], list):
        value = value["page"]  # a paginated result
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return pd.DataFrame({"value": [value]})
    if not all(isinstance(row, dict) for row in value):
        return pd.DataFrame({"value": value})
    columns: dict[str, None] = {}
    for row in value:
        columns.update(dict.fromkeys(row))
    frame = pd.DataFrame.from_records(value, columns=list(columns))
    if "_id" in columns:
        frame = frame.set_index("_id")
    return frame


def _cell(value: Any) -> Any:
    """A DataFrame cell as a Convex value; missing (None, NaN, NaT, NA) becomes absent."""
    import numpy as np
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return _MISSING
    if isinstance(value, float | np.floating):
        return _MISSING if math.isnan(value) else float(value)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return [_plain(x) for x in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(x) for x in value]
    if isinstance(value, dict):
        return {str(k): _plain(x) for k, x in value.items()}
    return value


def _plain(value: Any) -> Any:
    cell = _cell(value)
    return None if cell is _MISSING else cell


_MISSING = object()


def rows_from_dataframe(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Documents for the rows of a DataFrame: numpy scalars become Python values, missing
    values (None, NaN, NaT) leave the field out, timestamps become ISO 8601 strings. Column
    names must be strings."""
    names = [str(c) for c in frame.columns]
    for row in frame.itertuples(index=False, name=None):
        doc = {}
        for name, value in zip(names, row, strict=True):
            cell = _cell(value)
            if cell is not _MISSING:
                doc[name] = cell
        yield doc


def import_in_batches(
    table: str,
    frame: pd.DataFrame,
    insert: Callable[[list[dict[str, Any]]], list[str]],
    *,
    batch_size: int,
    progress: bool,
) -> list[str]:
    """Insert the rows of `frame` with `insert(batch)` (one transaction per batch), with a
    progress bar; returns the new ids in row order. A failing batch's error gets a note
    saying which rows were imported and which were not.

    Raises:
        ValidationError: `batch_size` is below 1.
    """
    from tqdm.auto import tqdm

    from kernel_ext.errors import ValidationError

    if batch_size < 1:
        raise ValidationError("batch_size must be at least 1")
    ids: list[str] = []
    rows = rows_from_dataframe(frame)
    with tqdm(total=len(frame), desc=f"import {table}", unit="row", disable=not progress) as bar:
        while batch := [row for _, row in zip(range(batch_size), rows, strict=False)]:
            start, end = len(ids), len(ids) + len(batch) - 1
            try:
                ids += insert(batch)
            except Exception as exc:
                exc.add_note(
                    f"import_dataframe: rows {start}..{end} of the DataFrame (index "
                    f"{frame.index[start]!r}..{frame.index[end]!r}) were not imported; the "
                    f"{start} rows before them were."
                )
                raise
            bar.update(len(batch))
    return ids

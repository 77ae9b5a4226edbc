"""Conversions between query results and pandas DataFrames."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
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

"""Conversions between query results and pandas DataFrames.

Types that a document cannot hold keep their pandas dtype through `import_dataframe` and back
(`table_df`, `Subscription.df`), because the import records each such column's kind
(`kernel_ext.store.column_kinds`):

- `datetime64` columns, naive or with a time zone, are stored as float milliseconds since the
  Unix epoch (UTC; naive values are taken as UTC), like Convex's `Date.now()` and
  `_creationTime`, so queries compare them as numbers; they come back with their dtype and
  zone, exact to the microsecond.
- nullable extension dtypes (`Int64`, `UInt8`, `Float64`, `boolean`, `string`, ...) come back
  as themselves (a column with missing values stays `Int64`, not float).
- categoricals of strings come back as categoricals (with their categories and order).

`_creationTime` is always a UTC datetime column in DataFrames (it is stored as float ms).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kernel_ext.store.rows import RowsSnapshot

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["column_kinds_of", "rows_from_dataframe", "to_dataframe"]

#: `{table number: {column: kind}}`, as `kernel_ext.store.column_kinds` records them.
Kinds = dict[int, dict[str, dict[str, Any]]]
#: Extension dtypes that come back with `astype(name)` from their stored values.
_MASKED = frozenset(
    [f"Int{n}" for n in (8, 16, 32, 64)]
    + [f"UInt{n}" for n in (8, 16, 32, 64)]
    + ["Float32", "Float64", "boolean", "string"]
)


def to_dataframe(value: Any, kinds: Callable[[], Kinds] | None = None) -> pd.DataFrame:
    """A DataFrame of a query result: one row per document, columns in first-seen order,
    `_id` as the index when present. A single document gives one row; None gives an empty
    frame; a list of scalars gives one `value` column. `_creationTime` becomes a UTC
    datetime column; when every document comes from one table whose column kinds are in
    `kinds()`, those columns get their imported dtype back (see the module docstring).
    `kinds` (e.g. `client.column_kinds`, which may ask a server) is called only for
    documents, which have an `_id` column."""
    import pandas as pd

    if value is None:
        return pd.DataFrame()
    if isinstance(value, dict) and "page" in value and isinstance(value["page"], list):
        value = value["page"]  # a paginated result
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, RowsSnapshot):
        value = list(value)  # a maintained view's rows
    if not isinstance(value, list):
        return pd.DataFrame({"value": [value]})
    if not all(isinstance(row, dict) for row in value):
        return pd.DataFrame({"value": value})
    columns: dict[str, None] = {}
    for row in value:
        columns.update(dict.fromkeys(row))
    frame = pd.DataFrame.from_records(value, columns=list(columns))
    if "_creationTime" in columns:
        frame["_creationTime"] = _datetimes(frame["_creationTime"], "datetime64[us, UTC]")
    if "_id" in columns:
        for name, kind in _table_kinds(frame["_id"], kinds).items():
            if name in columns and not name.startswith("_"):
                frame[name] = _restore(frame[name], kind)
        frame = frame.set_index("_id")
    return frame


def _table_kinds(ids: pd.Series, kinds: Callable[[], Kinds] | None) -> dict[str, dict[str, Any]]:
    """The recorded column kinds of the table of the documents with these ids, if they all
    come from one table (else, or when nothing is recorded, none)."""
    from kernel_ext.store.ids import table_number_of

    recorded = kinds() if kinds is not None else {}
    if not recorded:  # the common case: no id to decode
        return {}
    numbers = {table_number_of(i) for i in ids}
    number = numbers.pop() if len(numbers) == 1 else None
    return recorded.get(number, {}) if number is not None else {}


def _restore(column: pd.Series, kind: dict[str, Any]) -> pd.Series:
    """`column` with the dtype it was imported with; as stored (and a warning) if its values
    no longer fit (a mutation wrote something else into it)."""
    import warnings

    import pandas as pd

    dtype = str(kind.get("dtype"))
    try:
        if dtype.startswith("datetime64"):
            return _datetimes(column, dtype)
        if dtype == "category":
            present = sorted({x for x in column.dropna() if isinstance(x, str)})
            categories = list(kind.get("categories") or [])
            known = set(categories)
            categories += [c for c in present if c not in known]
            values = pd.Categorical(
                column, categories=categories, ordered=bool(kind.get("ordered"))
            )
            return pd.Series(values, index=column.index, name=column.name)
        if dtype in _MASKED:
            extension: Any = pd.api.types.pandas_dtype(dtype)
            return column.astype(extension)
    except (TypeError, ValueError, OverflowError) as exc:
        warnings.warn(
            f"Column {column.name!r} was imported as {dtype} but holds other values now "
            f"({exc}); it is shown as stored",
            stacklevel=3,
        )
    return column


def _datetimes(column: pd.Series, dtype: str) -> pd.Series:
    """Float ms since the epoch (UTC) as `dtype` (`datetime64[unit]` or
    `datetime64[unit, zone]`), rounded to the microsecond (what float ms can hold)."""
    import pandas as pd

    target = pd.api.types.pandas_dtype(dtype)
    zone = getattr(target, "tz", None)
    stamps = pd.to_datetime(column.astype("float64"), unit="ms", utc=True).dt.round("us")
    stamps = stamps.dt.tz_convert(zone) if zone is not None else stamps.dt.tz_localize(None)
    return stamps.astype(target)


def column_kinds_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The kinds of the columns of `frame` (`[{"column", "dtype", ...}]`, see
    `kernel_ext.store.column_kinds`); `to_dataframe` converts the datetime, nullable and
    categorical ones back."""
    import pandas as pd

    kinds: list[dict[str, Any]] = []
    for name, dtype in frame.dtypes.items():
        # Every column is recorded (plain ones too), so that a column imported once as
        # `Int64` and once as text is known to be mixed and is left alone.
        kind: dict[str, Any] = {"column": str(name), "dtype": str(dtype)}
        if isinstance(dtype, pd.CategoricalDtype):
            categories = list(dtype.categories)
            if not all(isinstance(c, str) for c in categories):
                kind["dtype"] = "category of values"  # comes back as its values
            else:
                kind.update(categories=categories, ordered=bool(dtype.ordered))
        kinds.append(kind)
    return kinds


def _stored_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its datetime columns as float ms since the epoch (NaT as NaN)."""
    import pandas as pd

    converted: dict[str, pd.Series] = {}
    for name, dtype in frame.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            column = frame[name]
            if getattr(dtype, "tz", None) is not None:
                column = column.dt.tz_convert("UTC").dt.tz_localize(None)
            converted[str(name)] = (column - pd.Timestamp(0)) / pd.Timedelta(milliseconds=1)
    return frame.assign(**converted) if converted else frame


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
    values (None, NaN, NaT) leave the field out, `datetime64` columns become float ms since
    the epoch (UTC), other timestamps (in object columns) ISO 8601 strings. Column names must
    be strings."""
    names = [str(c) for c in frame.columns]
    frame = _stored_columns(frame)
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
    insert: Callable[[list[dict[str, Any]], list[dict[str, Any]]], list[str]],
    *,
    batch_size: int,
    progress: bool,
) -> list[str]:
    """Insert the rows of `frame` with `insert(batch, kinds)` (one transaction per batch,
    which also records `kinds`, the columns' kinds: `column_kinds_of`), with a progress bar;
    returns the new ids in row order. A failing batch's error gets a note
    saying which rows were imported and which were not.

    Raises:
        ValidationError: `batch_size` is below 1.
    """
    from tqdm.auto import tqdm

    from kernel_ext.errors import ValidationError

    if batch_size < 1:
        raise ValidationError("batch_size must be at least 1")
    ids: list[str] = []
    kinds = column_kinds_of(frame)
    rows = rows_from_dataframe(frame)
    with tqdm(total=len(frame), desc=f"import {table}", unit="row", disable=not progress) as bar:
        while batch := [row for _, row in zip(range(batch_size), rows, strict=False)]:
            start, end = len(ids), len(ids) + len(batch) - 1
            try:
                ids += insert(batch, kinds)
            except Exception as exc:
                exc.add_note(
                    f"import_dataframe: rows {start}..{end} of the DataFrame (index "
                    f"{frame.index[start]!r}..{frame.index[end]!r}) were not imported; the "
                    f"{start} rows before them were."
                )
                raise
            bar.update(len(batch))
    return ids

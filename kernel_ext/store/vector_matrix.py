"""An exact vector index: the normalised vectors of one index in a float32 matrix.

Row `r` holds the unit vector of document `ids[r]` (a zero vector stays zero: it scores 0
with everything), its `_creationTime` and a code per filter field for the field's value.
Writes update a row in place; a delete moves the last row into the hole, so the rows stay
dense and a search is one matrix-vector product over `len(self)` rows (or over the rows a
filter selects), then a partial sort. Pure data structure: the caller serialises access.

Float32 scores are candidates, not answers: a float32 score may be off from the float64 cosine
by up to `(dimensions + 2)` float32 roundings (`error_bound`), so `top` hands out every row
whose score is within twice that of the k-th; the caller ranks them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from kernel_ext.store.keys import encode_key
from kernel_ext.store.values import Value

__all__ = ["VectorMatrix", "error_bound", "rescaled", "unit"]

_INITIAL_ROWS: Final = 64
#: float32's unit roundoff.
_U32: Final = 2.0**-24


def error_bound(dimensions: int) -> float:
    """How far a float32 score of this matrix may be from the float64 cosine: rounding the
    two unit vectors to float32 (2 roundings) and a float32 dot product of `dimensions` terms
    (at most `dimensions` roundings, in any summation order), with room for the float64
    normalisation before them."""
    return (dimensions + 3) * _U32


def rescaled(vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """`vectors` (one, or a matrix of rows) as float64, each multiplied by the power of two
    that brings its largest magnitude into [0.5, 1): exact, and then norms and dot products
    of finite vectors can neither overflow (1e200) nor underflow to 0 (1e-200); zero vectors
    stay zero."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.size == 0:
        return v
    _, exponent = np.frexp(np.max(np.abs(v), axis=-1, keepdims=True))
    scaled: npt.NDArray[np.float64] = np.ldexp(v, -exponent)
    return scaled


def unit(vector: Sequence[float] | npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """`vector` scaled to length 1 as float32 (a zero vector as it is)."""
    v = np.asarray(vector, dtype=np.float64)
    with np.errstate(over="ignore"):  # an infinite norm is handled below
        norm = float(np.linalg.norm(v))
    if not 1e-150 < norm < 1e150:  # rare: rescaled first, or the norm over/underflows
        v = rescaled(v)
        norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else v).astype(np.float32)


class VectorMatrix:
    """The rows of one vector index (see the module docstring).

    Args:
        dimensions: the length of every vector.
        filter_fields: the index's filter fields, in order (`upsert` takes their values).
    """

    def __init__(self, dimensions: int, filter_fields: Sequence[str]) -> None:
        self.dimensions = dimensions
        # Two scores compared, each off by up to the bound.
        self._margin = 2 * error_bound(dimensions)
        self._fields = {f: i for i, f in enumerate(filter_fields)}
        self._vectors = np.zeros((_INITIAL_ROWS, dimensions), dtype=np.float32)
        self._codes = np.zeros((len(filter_fields), _INITIAL_ROWS), dtype=np.int64)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        # Filter values by their key encoding (Convex equality: 1 and 1.0 differ).
        self._value_codes: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._rows

    def upsert(self, doc_id: str, vector: Sequence[float], filter_values: Sequence[Value]) -> None:
        """Put (or replace) a document's row."""
        row = self._rows.get(doc_id)
        if row is None:
            row = len(self._ids)
            if row == len(self._vectors):
                self._grow()
            self._ids.append(doc_id)
            self._rows[doc_id] = row
        self._vectors[row] = unit(vector)
        for i, value in enumerate(filter_values):
            self._codes[i, row] = self._code(value)

    def remove(self, doc_id: str) -> None:
        """Remove a document's row, if it has one (the last row fills the hole)."""
        row = self._rows.pop(doc_id, None)
        if row is None:
            return
        last = len(self._ids) - 1
        moved = self._ids.pop()
        if row != last:
            self._vectors[row] = self._vectors[last]
            self._codes[:, row] = self._codes[:, last]
            self._ids[row] = moved
            self._rows[moved] = row
        if last < len(self._vectors) // 4 and len(self._vectors) > _INITIAL_ROWS:
            self._resize(max(_INITIAL_ROWS, len(self._vectors) // 2))

    def top(
        self,
        query: Sequence[float],
        k: int,
        clauses: Sequence[tuple[str, Value]] | None = None,
    ) -> list[str]:
        """The ids of the `k` rows most similar to `query` (cosine) among those passing
        `clauses` (an OR of `(filter field, value)`; None: every row), plus every row whose
        float32 score is within float32 error of the k-th's (any of them may be among the
        exact top k); in no particular order: the caller ranks exactly."""
        n = len(self._ids)
        if n == 0 or k <= 0:
            return []
        rows: npt.NDArray[np.intp] | None = None
        if clauses is not None:
            rows = np.flatnonzero(self._mask(n, clauses))
            if len(rows) == 0:
                return []
        q = unit(query)
        if rows is not None and len(rows) * 4 < n:
            scores = self._vectors[rows] @ q  # a selective filter: only its rows
        else:
            # Gathering many rows copies more than the product of all of them costs.
            scores = self._vectors[:n] @ q
            if rows is not None:
                scores = scores[rows]
        if k < len(scores):
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            chosen = np.flatnonzero(scores >= kth - self._margin)
        else:
            chosen = np.arange(len(scores))
        if rows is not None:
            chosen = rows[chosen]
        ids = self._ids
        return [ids[r] for r in chosen.tolist()]

    def _mask(self, n: int, clauses: Sequence[tuple[str, Value]]) -> npt.NDArray[np.bool_]:
        mask = np.zeros(n, dtype=bool)
        for field, value in clauses:
            code = self._value_codes.get(encode_key((value,)))
            if code is not None:
                mask |= self._codes[self._fields[field], :n] == code
        return mask

    def _code(self, value: Value) -> int:
        key = encode_key((value,))
        code = self._value_codes.get(key)
        if code is None:
            code = self._value_codes[key] = len(self._value_codes)
        return code

    def _grow(self) -> None:
        self._resize(len(self._vectors) * 2)

    def _resize(self, rows: int) -> None:
        n = len(self._ids)
        vectors = np.zeros((rows, self.dimensions), dtype=np.float32)
        vectors[:n] = self._vectors[:n]
        codes = np.zeros((self._codes.shape[0], rows), dtype=np.int64)
        codes[:, :n] = self._codes[:, :n]
        self._vectors, self._codes = vectors, codes

"""`SortedRows` / `PositionalRows` / `RowsSnapshot`: a persistent B+tree, against a dict and a
list model (with tiny nodes, so that splits, several levels and node removals happen)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_ext.store import rows as rows_module
from kernel_ext.store.rows import PositionalRows, RowsSnapshot, SortedRows

keys = st.binary(min_size=0, max_size=3)
operations = st.lists(st.tuples(st.sampled_from(["put", "pop"]), keys, st.integers()), max_size=80)


@pytest.fixture(autouse=True)
def tiny_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "LEAF", 3)
    monkeypatch.setattr(rows_module, "FANOUT", 3)


@given(initial=st.dictionaries(keys, st.integers(), max_size=20), ops=operations)
def test_sorted_rows_match_a_sorted_dict(initial: dict[bytes, int], ops: list[Any]) -> None:
    model = dict(initial)
    rows = SortedRows(sorted(initial.items()))
    snapshots: list[tuple[RowsSnapshot, list[int]]] = []
    for op, key, value in ops:
        if op == "put":
            assert rows.put(key, value) == model.get(key)
            model[key] = value
        else:
            assert rows.pop(key) == model.pop(key, None)
        expected = [model[k] for k in sorted(model)]
        snapshot = rows.snapshot()
        snapshots.append((snapshot, expected))
        assert len(rows) == len(model)
        assert snapshot == expected and list(snapshot) == expected
        assert rows.snapshot(reverse=True) == expected[::-1]
        for i, k in enumerate(sorted(model)):
            assert snapshot.position_of(k) == i
            assert rows.snapshot(reverse=True).position_of(k) == len(model) - 1 - i
            assert snapshot[i] == model[k] and snapshot[i - len(model)] == model[k]
        assert snapshot[1:3] == expected[1:3]
        assert rows.first_key() == (min(model) if model else None)
        assert rows.last_key() == (max(model) if model else None)
    for snapshot, expected in snapshots:  # later changes never altered an earlier snapshot
        assert list(snapshot) == expected


def test_a_snapshot_is_a_read_only_sequence() -> None:
    snapshot = SortedRows([(b"a", 1), (b"b", 2)]).snapshot()
    assert snapshot == [1, 2] and [1, 2] == snapshot and snapshot != [2, 1]
    assert list(reversed(snapshot)) == [2, 1]
    with pytest.raises(IndexError):
        snapshot[2]
    with pytest.raises(TypeError):
        snapshot[0] = 3  # type: ignore[index]
    assert "2 rows" in repr(snapshot)


positional_ops = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "set"]), st.integers(-1, 40), st.integers()),
    max_size=80,
)


@given(initial=st.lists(st.integers(), max_size=20), ops=positional_ops)
def test_positional_rows_match_a_list(initial: list[int], ops: list[Any]) -> None:
    model = list(initial)
    rows = PositionalRows(initial)
    snapshots: list[tuple[RowsSnapshot, list[int]]] = []
    for op, position, value in ops:
        valid = 0 <= position <= len(model) if op == "insert" else 0 <= position < len(model)
        if not valid:
            with pytest.raises(IndexError):
                getattr(rows, op)(position, *([] if op == "delete" else [value]))
            continue
        if op == "insert":
            rows.insert(position, value)
            model.insert(position, value)
        elif op == "delete":
            rows.delete(position)
            del model[position]
        else:
            rows.set(position, value)
            model[position] = value
        snapshot = rows.snapshot()
        snapshots.append((snapshot, list(model)))
        assert len(rows) == len(model) and snapshot == model
        assert [snapshot[i] for i in range(len(model))] == model
        assert snapshot.position_of(b"x") is None and list(snapshot.keys()) == []
    for snapshot, expected in snapshots:
        assert list(snapshot) == expected


def test_positional_rows_of_a_snapshot_share_it_and_never_change_it() -> None:
    original = PositionalRows(list(range(10)))
    shared = original.snapshot()
    rows = PositionalRows.of(shared)
    rows.delete(0)
    rows.insert(5, 99)
    assert list(shared) == list(range(10))
    assert list(rows.snapshot()) == [1, 2, 3, 4, 5, 99, 6, 7, 8, 9]
    keyed = SortedRows([(b"a", 1), (b"b", 2)]).snapshot(reverse=True)
    copied = PositionalRows.of(keyed)  # keyed or reversed: copied
    copied.set(0, 7)
    assert list(copied.snapshot()) == [7, 1] and list(keyed) == [2, 1]

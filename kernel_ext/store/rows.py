"""Rows with immutable snapshots: the state of a maintained view (and of a received one).

A persistent B+tree of rows: leaves hold up to `LEAF` rows (and their keys, when keyed),
branches up to `FANOUT` children with each child's row count (as prefix offsets) and, when
keyed, its last key. A change copies the leaf and the branches on its path (path copying)
and never alters a node in place, so a snapshot is just the root: `snapshot()` is O(1) and
every snapshot handed out stays valid and unchanged forever, while a change costs
O(log n) node copies of at most `FANOUT` entries. Nothing is rebalanced on deletes beyond
dropping empty nodes: depth stays logarithmic in the largest size the tree ever had.

- `SortedRows`: rows by unique byte key (index keys, group keys), in key order; answers the
  position of a key.
- `PositionalRows`: rows by position (the remote client's copy of a view, changed by the
  positions of diffs).
- `RowsSnapshot`: a read-only `collections.abc.Sequence` of the rows at one moment.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, overload

__all__ = ["FANOUT", "LEAF", "PositionalRows", "RowsSnapshot", "SortedRows"]

#: A leaf is split above this many rows.
LEAF: Final = 64
#: A branch is split above this many children.
FANOUT: Final = 64


class _Leaf:
    """Rows (and their keys, or None when positional) in order; never changed once built."""

    __slots__ = ("keys", "rows")

    def __init__(self, keys: tuple[bytes, ...] | None, rows: tuple[Any, ...]) -> None:
        self.keys = keys
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def last_key(self) -> bytes:
        assert self.keys is not None
        return self.keys[-1]


class _Branch:
    """Children in order with their row counts (`sizes`; `offsets[i]`: rows before child i,
    `offsets[-1]`: all rows) and, when keyed, their last keys (`maxes`); never changed once
    built."""

    __slots__ = ("children", "maxes", "offsets", "sizes")

    def __init__(
        self,
        children: tuple[_Node, ...],
        sizes: tuple[int, ...],
        maxes: tuple[bytes, ...] | None,
    ) -> None:
        self.children = children
        self.sizes = sizes
        self.offsets = (0, *itertools.accumulate(sizes))
        self.maxes = maxes

    @classmethod
    def of(cls, children: tuple[_Node, ...], keyed: bool) -> _Branch:
        """A branch over `children`, counting them."""
        sizes = tuple(len(c) for c in children)
        return cls(children, sizes, tuple(c.last_key() for c in children) if keyed else None)

    def __len__(self) -> int:
        return self.offsets[-1]

    def last_key(self) -> bytes:
        assert self.maxes is not None
        return self.maxes[-1]

    def child_at(self, position: int) -> int:
        """The child holding row `position` (0 <= position < len; len: the last child)."""
        return min(bisect.bisect_right(self.offsets, position) - 1, len(self.children) - 1)

    def child_for(self, key: bytes) -> int:
        """The child whose key range holds `key` (the last one past every key)."""
        assert self.maxes is not None
        return min(bisect.bisect_left(self.maxes, key), len(self.children) - 1)


_Node = _Leaf | _Branch


def _build(rows: Sequence[Any], keys: Sequence[bytes] | None) -> _Node | None:
    """A tree of `rows` (with `keys`, in key order), leaves and branches filled to 3/4."""
    if not rows:
        return None
    step = max(1, LEAF * 3 // 4)
    level: list[_Node] = [
        _Leaf(None if keys is None else tuple(keys[i : i + step]), tuple(rows[i : i + step]))
        for i in range(0, len(rows), step)
    ]
    fan = max(2, FANOUT * 3 // 4)
    while len(level) > 1:
        level = [
            _Branch.of(tuple(level[i : i + fan]), keys is not None)
            for i in range(0, len(level), fan)
        ]
    return level[0]


def _with_child(branch: _Branch, i: int, new: tuple[_Node, ...]) -> tuple[_Node, ...]:
    """`branch` with child i replaced by `new` (zero, one or two nodes), split in two if it
    outgrew `FANOUT`: the one or two branches that replace it (none if it emptied). The
    other children's counts and keys are sliced, not recomputed."""
    children = (*branch.children[:i], *new, *branch.children[i + 1 :])
    if not children:
        return ()
    sizes = (*branch.sizes[:i], *[len(n) for n in new], *branch.sizes[i + 1 :])
    maxes = branch.maxes
    if maxes is not None:
        maxes = (*maxes[:i], *[n.last_key() for n in new], *maxes[i + 1 :])
    if len(children) > FANOUT:
        h = len(children) // 2
        return (
            _Branch(children[:h], sizes[:h], None if maxes is None else maxes[:h]),
            _Branch(children[h:], sizes[h:], None if maxes is None else maxes[h:]),
        )
    return (_Branch(children, sizes, maxes),)


def _leaf_split(keys: tuple[bytes, ...] | None, rows: tuple[Any, ...]) -> tuple[_Node, ...]:
    if not rows:
        return ()
    if len(rows) > LEAF:
        half = len(rows) // 2
        return (
            _Leaf(None if keys is None else keys[:half], rows[:half]),
            _Leaf(None if keys is None else keys[half:], rows[half:]),
        )
    return (_Leaf(keys, rows),)


def _root_of(nodes: tuple[_Node, ...], keyed: bool) -> _Node | None:
    """The root over the nodes that replaced the old root: a new level when it split, and
    a branch of one branch collapsed, so that deletes do not leave a tall thin tree."""
    if not nodes:
        return None
    if len(nodes) > 1:
        return _Branch.of(nodes, keyed)
    root = nodes[0]
    while isinstance(root, _Branch) and len(root.children) == 1:
        root = root.children[0]
    return root


class RowsSnapshot(Sequence[Any]):
    """An immutable sequence of rows (a view's value at one timestamp).

    Supports `len`, indexing (negative too), slices (a list), iteration, `reversed`, and `==`
    with any sequence of the same rows (a `list` included). `list(snapshot)` copies it.
    `position_of(key)` finds a row by its key (None for positional rows).
    """

    __slots__ = ("_len", "_reverse", "_root")

    def __init__(self, root: _Node | None, *, reverse: bool = False) -> None:
        self._root = root
        self._len = 0 if root is None else len(root)
        self._reverse = reverse

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("RowsSnapshot index out of range")
        if self._reverse:
            index = self._len - 1 - index
        node = self._root
        while isinstance(node, _Branch):
            i = node.child_at(index)
            index -= node.offsets[i]
            node = node.children[i]
        assert node is not None
        return node.rows[index]

    def _leaves(self) -> Iterator[_Leaf]:
        stack: list[_Node] = [] if self._root is None else [self._root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Leaf):
                yield node
            elif self._reverse:
                stack.extend(node.children)
            else:
                stack.extend(reversed(node.children))

    def __iter__(self) -> Iterator[Any]:
        for leaf in self._leaves():
            yield from (reversed(leaf.rows) if self._reverse else leaf.rows)

    def __reversed__(self) -> Iterator[Any]:
        return iter(RowsSnapshot(self._root, reverse=not self._reverse))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(other) == self._len and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so not hashable

    def __repr__(self) -> str:
        shown = ", ".join(repr(row) for row in itertools.islice(self, 3))
        more = ", ..." if self._len > 3 else ""
        return f"RowsSnapshot([{shown}{more}], {self._len} rows)"

    def position_of(self, key: bytes) -> int | None:
        """The position of the row with `key` in this sequence, None if it has none."""
        node = self._root
        position = 0
        while isinstance(node, _Branch):
            if node.maxes is None:
                return None
            i = node.child_for(key)
            position += node.offsets[i]
            node = node.children[i]
        if node is None or node.keys is None:
            return None
        i = bisect.bisect_left(node.keys, key)
        if i == len(node.keys) or node.keys[i] != key:
            return None
        position += i
        return self._len - 1 - position if self._reverse else position

    def row_of(self, key: bytes) -> Any:
        """The row with `key`, None if there is none."""
        position = self.position_of(key)
        return None if position is None else self[position]

    def keys(self) -> Iterator[bytes]:
        """The keys in this sequence's order (none for positional rows)."""
        for leaf in self._leaves():
            if leaf.keys is not None:
                yield from (reversed(leaf.keys) if self._reverse else leaf.keys)


class SortedRows:
    """Rows by unique key, in key order (see the module docstring).

    Args:
        items: the initial `(key, row)` pairs, in ascending key order, keys unique.
    """

    __slots__ = ("_root",)

    def __init__(self, items: Iterable[tuple[bytes, Any]] = ()) -> None:
        pairs = list(items)
        self._root = _build([r for _, r in pairs], [k for k, _ in pairs])

    def __len__(self) -> int:
        return 0 if self._root is None else len(self._root)

    def __contains__(self, key: bytes) -> bool:
        return self.snapshot().position_of(key) is not None

    def get(self, key: bytes) -> Any:
        """The row with `key`, None if absent."""
        return self.snapshot().row_of(key)

    def put(self, key: bytes, row: Any) -> Any:
        """Set the row of `key` (inserted if absent); returns the row it replaced, or None."""
        if self._root is None:
            self._root = _Leaf((key,), (row,))
            return None
        replaced: list[Any] = [None]
        self._root = _root_of(_put(self._root, key, row, replaced), True)
        return replaced[0]

    def pop(self, key: bytes) -> Any:
        """Remove `key`; returns its row (None if it was absent)."""
        if self._root is None:
            return None
        removed: list[Any] = [None]
        nodes = _pop(self._root, key, removed)
        if nodes is not None:
            self._root = _root_of(nodes, True)
        return removed[0]

    def first_key(self) -> bytes | None:
        """The smallest key, None if empty."""
        node = self._root
        while isinstance(node, _Branch):
            node = node.children[0]
        return None if node is None or node.keys is None else node.keys[0]

    def last_key(self) -> bytes | None:
        """The largest key, None if empty."""
        return None if self._root is None else self._root.last_key()

    def snapshot(self, *, reverse: bool = False) -> RowsSnapshot:
        """The current rows as an immutable sequence (descending key order if `reverse`)."""
        return RowsSnapshot(self._root, reverse=reverse)


def _put(node: _Node, key: bytes, row: Any, replaced: list[Any]) -> tuple[_Node, ...]:
    """The nodes replacing `node` once `key` holds `row` (its old row into `replaced`)."""
    if isinstance(node, _Leaf):
        keys = node.keys
        assert keys is not None
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            replaced[0] = node.rows[i]
            return (_Leaf(keys, (*node.rows[:i], row, *node.rows[i + 1 :])),)
        return _leaf_split((*keys[:i], key, *keys[i:]), (*node.rows[:i], row, *node.rows[i:]))
    i = node.child_for(key)
    return _with_child(node, i, _put(node.children[i], key, row, replaced))


def _pop(node: _Node, key: bytes, removed: list[Any]) -> tuple[_Node, ...] | None:
    """The nodes replacing `node` without `key` (its row into `removed`); None if absent."""
    if isinstance(node, _Leaf):
        keys = node.keys
        assert keys is not None
        i = bisect.bisect_left(keys, key)
        if i == len(keys) or keys[i] != key:
            return None
        removed[0] = node.rows[i]
        return _leaf_split((*keys[:i], *keys[i + 1 :]), (*node.rows[:i], *node.rows[i + 1 :]))
    if node.maxes is None or key > node.maxes[-1]:
        return None
    i = node.child_for(key)
    new = _pop(node.children[i], key, removed)
    return None if new is None else _with_child(node, i, new)


class PositionalRows:
    """Rows by position, changed by position (a received view: diffs give positions).

    Args:
        rows: the initial rows.
    """

    __slots__ = ("_root",)

    def __init__(self, rows: Sequence[Any] = ()) -> None:
        self._root = _build(rows, None)

    @classmethod
    def of(cls, snapshot: RowsSnapshot) -> PositionalRows:
        """Rows starting as `snapshot`'s: its tree is shared when it is positional and in
        its own order (no copy), else its rows are copied."""
        root = snapshot._root
        if snapshot._reverse or (root is not None and _keyed(root)):
            return cls(list(snapshot))
        rows = cls()
        rows._root = root
        return rows

    def __len__(self) -> int:
        return 0 if self._root is None else len(self._root)

    def insert(self, position: int, row: Any) -> None:
        """Insert `row` at `position` (0 <= position <= len); raises `IndexError` else."""
        if not 0 <= position <= len(self):
            raise IndexError(f"insert position {position} is out of range (0..{len(self)})")
        if self._root is None:
            self._root = _Leaf(None, (row,))
            return
        self._root = _root_of(_at(self._root, position, row, "insert"), False)

    def delete(self, position: int) -> None:
        """Remove the row at `position`; raises `IndexError` if there is none."""
        self._check(position)
        assert self._root is not None
        self._root = _root_of(_at(self._root, position, None, "delete"), False)

    def set(self, position: int, row: Any) -> None:
        """Replace the row at `position`; raises `IndexError` if there is none."""
        self._check(position)
        assert self._root is not None
        self._root = _root_of(_at(self._root, position, row, "set"), False)

    def _check(self, position: int) -> None:
        if not 0 <= position < len(self):
            raise IndexError(f"position {position} is out of range (0..{len(self) - 1})")

    def snapshot(self) -> RowsSnapshot:
        """The current rows as an immutable sequence."""
        return RowsSnapshot(self._root)


def _keyed(node: _Node) -> bool:
    return node.maxes is not None if isinstance(node, _Branch) else node.keys is not None


def _at(node: _Node, position: int, row: Any, op: str) -> tuple[_Node, ...]:
    """The nodes replacing `node` after `op` ("insert", "delete", "set") at `position`."""
    if isinstance(node, _Leaf):
        rows = node.rows
        if op == "insert":
            return _leaf_split(None, (*rows[:position], row, *rows[position:]))
        if op == "delete":
            return _leaf_split(None, (*rows[:position], *rows[position + 1 :]))
        return (_Leaf(None, (*rows[:position], row, *rows[position + 1 :])),)
    i = node.child_at(position)
    new = _at(node.children[i], position - node.offsets[i], row, op)
    return _with_child(node, i, new)

"""`MemoryPersistence` (dicts, no SQLite) against `SqlitePersistence`: the same operations
give the same results, and its snapshots stay at their commit while later commits are
written, also from other threads."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel_ext.errors import PersistenceError
from kernel_ext.persistence.base import CommitRecord, IndexChange
from kernel_ext.persistence.memory import MemoryPersistence
from kernel_ext.persistence.sqlite import SqlitePersistence
from kernel_ext.store.catalog import new_table_info
from kernel_ext.store.keys import encode_key

TABLE = 1
BY_CREATION = 10
BY_SCORE = 11

Persistences = tuple[SqlitePersistence, MemoryPersistence]


@pytest.fixture
def both(tmp_path: Path) -> Iterator[Persistences]:
    """A SQLite file store and a memory store, each with table 1 and its index 10."""
    sqlite, memory = SqlitePersistence(tmp_path / "store.db"), MemoryPersistence()
    for p in (sqlite, memory):
        p.write_commit(0, [], [new_table_info("items", TABLE, BY_CREATION)])
    yield sqlite, memory
    sqlite.close()
    memory.close()


def _id(n: int) -> bytes:
    return encode_key((f"doc{n:05d}",))


def _score_key(score: int, n: int) -> bytes:
    return encode_key((score, f"doc{n:05d}"))


def _record(n: int, old: int | None, new: int | None, *, by_score: bool = True) -> CommitRecord:
    """Document `n` going from score `old` to score `new` (None: absent), in the index
    `by_score` too if `by_score`."""
    doc = None if new is None else {"_id": f"doc{n:05d}", "n": n, "score": new}
    changes = (
        IndexChange(
            BY_SCORE,
            None if old is None else _score_key(old, n),
            None if new is None else _score_key(new, n),
        ),
        IndexChange(
            BY_CREATION,
            None if old is None else encode_key((n,)) + _id(n),
            None if new is None else encode_key((n,)) + _id(n),
        ),
    )
    return CommitRecord(
        TABLE, _id(n), doc, changes if by_score else changes[1:], None not in (old, new)
    )


def _everything(p: SqlitePersistence | MemoryPersistence) -> list[object]:
    """Every read a snapshot answers: gets, and scans of each index both ways and in ranges."""
    snap = p.snapshot()
    try:
        out: list[object] = [snap.get(TABLE, _id(n)) for n in range(60)]
        for index in (None, BY_CREATION, BY_SCORE):
            for descending in (False, True):
                out.append(list(snap.scan(TABLE, index, b"", b"\xff", descending)))
                lo, hi = sorted([encode_key((7,)), encode_key((30,))])
                out.append(list(snap.scan(TABLE, index, lo, hi, descending)))
        return out
    finally:
        snap.close()


def test_the_same_commits_read_the_same_on_both(both: Persistences) -> None:
    rng = random.Random(7)
    scores: dict[int, int] = {}
    for p in both:
        p.create_index(BY_SCORE, TABLE, "by_score", ("score",), [])
    for ts in range(1, 80):
        records = []
        for n in rng.sample(range(60), rng.randint(1, 8)):
            old = scores.get(n)
            new = None if old is not None and rng.random() < 0.3 else rng.randint(0, 40)
            records.append(_record(n, old, new))
            if new is None:
                del scores[n]
            else:
                scores[n] = new
        for p in both:
            p.write_commit(ts * 1000, records)
        assert _everything(both[0]) == _everything(both[1])
    assert [p.last_ts() for p in both] == [79_000, 79_000]
    assert both[0].load_catalog() == both[1].load_catalog()
    assert list(both[0].documents_of(TABLE)) == list(both[1].documents_of(TABLE))
    assert both[0].unfilled_indexes() == both[1].unfilled_indexes() == []
    for p in both:
        p.drop_index(BY_SCORE)
    assert both[0].load_catalog() == both[1].load_catalog()
    assert _everything(both[0]) == _everything(both[1])


def test_an_index_is_created_from_the_documents_and_reads_the_same(both: Persistences) -> None:
    for p in both:
        p.write_commit(5, [_record(n, None, n % 7, by_score=False) for n in range(50)])
        entries = [(_score_key(n % 7, n), _id(n)) for n in range(50)]
        p.create_index(BY_SCORE, TABLE, "by_score", ("score",), entries[:20])
        p.fill_index(BY_SCORE, entries[20:])
    assert both[0].load_catalog() == both[1].load_catalog()
    assert _everything(both[0]) == _everything(both[1])


def test_a_snapshot_stays_at_its_commit_while_later_ones_are_written(both: Persistences) -> None:
    for p in both:
        p.create_index(BY_SCORE, TABLE, "by_score", ("score",), [])
        p.write_commit(1, [_record(n, None, 1) for n in range(40)])
    before = [_everything(p) for p in both]
    snaps = [p.snapshot() for p in both]
    # A scan half read when the commits come (40 rows: more than its first batch).
    scans = [s.scan(TABLE, BY_SCORE, b"", b"\xff", False) for s in snaps]
    firsts = [[next(scan) for _ in range(20)] for scan in scans]
    for p in both:
        p.write_commit(2, [_record(n, 1, 2) for n in range(0, 40, 2)])
        p.write_commit(3, [_record(n, 1, None) for n in range(1, 40, 2)])
        p.write_commit(4, [_record(n, None, 3) for n in range(40, 45)])
    for snap, scan, first in zip(snaps, scans, firsts, strict=True):
        rows = first + list(scan)
        assert [doc["n"] for _, doc in rows] == list(range(40))
        assert all(doc["score"] == 1 for _, doc in rows)
        assert snap.get(TABLE, _id(0)) == {"_id": "doc00000", "n": 0, "score": 1}
        assert snap.get(TABLE, _id(41)) is None
        assert snap.ts == 1
        snap.close()
    assert [_everything(p) for p in both] != before
    assert _everything(both[0]) == _everything(both[1])


def test_versions_are_dropped_once_no_snapshot_sees_them() -> None:
    p = MemoryPersistence()
    p.write_commit(0, [], [new_table_info("items", TABLE, BY_CREATION)])
    p.write_commit(1, [_record(n, None, 0) for n in range(10)])
    snap = p.snapshot()
    for ts in range(2, 12):
        p.write_commit(ts, [_record(n, ts - 2, ts - 1) for n in range(10)])
    p.write_commit(12, [_record(0, 10, None)])
    assert snap.get(TABLE, _id(0)) == {"_id": "doc00000", "n": 0, "score": 0}
    docs = p._docs[TABLE].versions
    # The version the snapshot sees and the latest: never the ones in between.
    assert {len(v) for v in docs.values()} == {2}
    snap.close()
    p.write_commit(13, [_record(1, 10, 11)])
    assert {len(v) for v in docs.values()} == {1}
    assert _id(0) not in docs and _id(0) not in p._docs[TABLE].keys
    assert len(p._entries[BY_CREATION].versions) == 9
    p.close()


def test_a_snapshot_left_open_keeps_one_older_version_per_key() -> None:
    """Many writes while a snapshot stays open: each key keeps the version the snapshot sees
    and the latest, and the compaction queue holds each key once, not each write."""
    p = MemoryPersistence()
    p.write_commit(0, [], [new_table_info("items", TABLE, BY_CREATION)])
    p.write_commit(1, [_record(n, None, 0) for n in range(3)])
    snap = p.snapshot()
    for ts in range(2, 1000):
        p.write_commit(ts, [_record(n, ts - 2, ts - 1) for n in range(3)])
    assert {len(v) for v in p._docs[TABLE].versions.values()} == {2}
    # by_score: the 3 keys the snapshot sees (deleted since) and the 3 latest ones.
    assert len(p._entries[BY_SCORE].versions) == 6
    assert len(p._pending) == len(p._queued) == 6  # 3 documents, 3 old by_score keys
    assert [d["score"] for _, d in snap.scan(TABLE, None, b"", b"\xff", False)] == [0, 0, 0]
    snap.close()
    p.write_commit(1000, [])
    assert {len(v) for v in p._docs[TABLE].versions.values()} == {1}
    assert not p._pending and not p._queued
    assert len(p._entries[BY_SCORE].versions) == 3
    p.close()


def test_a_current_reader_reads_the_latest_commit(both: Persistences) -> None:
    for p in both:
        p.write_commit(1, [_record(0, None, 1)])
        reader = p.current_reader(1)
        p.write_commit(2, [_record(0, 1, 2), _record(1, None, 2)])
        assert reader.get(TABLE, _id(0)) == {"_id": "doc00000", "n": 0, "score": 2}
        assert [d["n"] for _, d in reader.scan(TABLE, None, b"", b"\xff", True)] == [1, 0]


def test_a_closed_snapshot_or_store_refuses_reads() -> None:
    p = MemoryPersistence()
    p.write_commit(0, [], [new_table_info("items", TABLE, BY_CREATION)])
    snap = p.snapshot()
    snap.close()
    snap.close()
    with pytest.raises(PersistenceError, match="snapshot is closed"):
        snap.get(TABLE, _id(0))
    p.close()
    p.close()
    with pytest.raises(PersistenceError, match="store is closed"):
        p.snapshot()
    with pytest.raises(PersistenceError, match="store is closed"):
        p.write_commit(1, [_record(0, None, 1)])


def test_an_insert_of_a_stored_document_writes_nothing() -> None:
    p = MemoryPersistence()
    p.write_commit(0, [], [new_table_info("items", TABLE, BY_CREATION)])
    p.write_commit(1, [_record(0, None, 1)])
    with pytest.raises(PersistenceError, match="already holds"):
        p.write_commit(2, [_record(1, None, 1), _record(0, None, 5)])
    assert p.last_ts() == 1
    assert [d["n"] for d in (d for _, d in p.documents_of(TABLE))] == [0]


def test_snapshots_in_threads_see_whole_commits() -> None:
    """A writer moves score between two documents (their sum stays 100) while readers in
    other threads take snapshots and read both: every snapshot sees the same sum."""
    p = MemoryPersistence()
    p.write_commit(0, [], [new_table_info("items", TABLE, BY_CREATION)])
    p.write_commit(1, [_record(0, None, 100), _record(1, None, 0)])
    done = threading.Event()
    sums: list[int] = []

    def read() -> None:
        while not done.is_set():
            snap = p.snapshot()
            rows = list(snap.scan(TABLE, None, b"", b"\xff", False))
            got = [snap.get(TABLE, _id(n)) for n in (0, 1)]
            snap.close()
            sums.append(sum(int(d["score"]) for _, d in rows))
            sums.append(sum(int(d["score"]) for d in got if d))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    a = 100
    for ts in range(2, 3000):
        b = (a * 7 + 3) % 101
        p.write_commit(ts, [_record(0, a, b), _record(1, 100 - a, 100 - b)])
        a = b
    done.set()
    for t in readers:
        t.join(timeout=30)
    assert sums and set(sums) == {100}
    p.write_commit(3000, [_record(0, a, 50), _record(1, 100 - a, 50)])  # compacts, none open
    assert {len(v) for v in p._docs[TABLE].versions.values()} == {1}
    p.close()

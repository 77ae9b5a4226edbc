"""Read sets: intervals per index, scans that become intervals, overlap with written keys."""

from __future__ import annotations

from kernel_ext.store.keys import key_successor
from kernel_ext.store.readset import ReadSet, ScanProgress

IDX = "t.by_x"


def test_add_and_overlaps_are_half_open():
    reads = ReadSet()
    reads.add(IDX, b"b", b"d")
    assert reads.overlaps([(IDX, b"b")])
    assert reads.overlaps([(IDX, b"c\xff")])
    assert not reads.overlaps([(IDX, b"d")])
    assert not reads.overlaps([(IDX, b"a")])
    assert not reads.overlaps([("t.other", b"c")])
    assert not reads.overlaps([])


def test_add_point_covers_exactly_one_key():
    reads = ReadSet()
    reads.add_point(IDX, b"k")
    assert list(reads.all_intervals()) == [(IDX, b"k", key_successor(b"k"))]
    assert reads.overlaps([(IDX, b"k")])
    assert not reads.overlaps([(IDX, b"k\x00")])
    assert not reads.overlaps([(IDX, b"j\xff")])


def test_scan_not_started_reads_nothing():
    scan = ScanProgress(IDX, b"a", b"z", descending=False)
    assert scan.interval() is None
    reads = ReadSet()
    reads.track(scan)
    assert list(reads.finalize().all_intervals()) == []


def test_exhausted_scan_covers_its_whole_range():
    scan = ScanProgress(IDX, b"a", b"z", descending=False, last_key=b"c", exhausted=True)
    assert scan.interval() == (IDX, b"a", b"z")
    empty = ScanProgress(IDX, b"a", b"z", descending=True, exhausted=True)
    assert empty.interval() == (IDX, b"a", b"z")


def test_ascending_scan_stopped_early_covers_up_to_the_last_row():
    scan = ScanProgress(IDX, b"a", b"z", descending=False, last_key=b"m")
    assert scan.interval() == (IDX, b"a", key_successor(b"m"))


def test_descending_scan_stopped_early_covers_from_the_last_row():
    scan = ScanProgress(IDX, b"a", b"z", descending=True, last_key=b"m")
    assert scan.interval() == (IDX, b"m", b"z")


def test_finalize_turns_tracked_scans_into_intervals_once():
    reads = ReadSet()
    scan = reads.track(ScanProgress(IDX, b"a", b"z", descending=False))
    scan.last_key = b"c"
    assert reads.finalize() is reads
    assert list(reads.all_intervals()) == [(IDX, b"a", key_successor(b"c"))]
    reads.finalize()
    assert len(list(reads.all_intervals())) == 1
    assert reads.overlaps([(IDX, b"c")])
    assert not reads.overlaps([(IDX, b"d")])


def test_merge_adds_the_other_read_set_finalized():
    parent = ReadSet()
    parent.add(IDX, b"a", b"b")
    child = ReadSet()
    child.add("t.by_id", b"k", b"l")
    scan = child.track(ScanProgress(IDX, b"x", b"z", descending=False, exhausted=True))
    assert scan.interval() is not None
    parent.merge(child)
    assert sorted(parent.all_intervals()) == sorted(
        [(IDX, b"a", b"b"), ("t.by_id", b"k", b"l"), (IDX, b"x", b"z")]
    )
    assert child.scans == []

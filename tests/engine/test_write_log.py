"""The write log: what OCC validation and reads as of an earlier ts check against."""

from __future__ import annotations

from kernel_ext.engine import write_log
from kernel_ext.engine.write_log import HISTORY_NS, WriteLog
from kernel_ext.store.readset import ReadSet

SECOND = 1_000_000_000


def keys(n: int, table: str = "t") -> list[tuple[str, bytes]]:
    return [(f"{table}.by_id", bytes([i % 256, i // 256])) for i in range(n)]


def test_without_history_only_what_running_mutations_need_is_kept():
    log = WriteLog(horizon=0)
    for ts in (1, 2, 3):
        log.append(ts, keys(1))
    log.prune(latest_ts=3, needed_after=lambda: 1)  # a mutation that started at ts 1 still runs
    assert [ts for ts, _ in log.after(1)] == [2, 3]
    log.prune(latest_ts=3, needed_after=lambda: 3)
    assert len(log) == 0 and log.horizon == 3 and log.after(3) == []
    assert log.after(2) is None


def test_history_is_kept_for_its_time_then_dropped():
    log = WriteLog(horizon=0)
    log.keep_history()
    for ts in (1 * SECOND, 2 * SECOND, 3 * SECOND):
        log.append(ts, keys(1))
    log.prune(latest_ts=3 * SECOND, needed_after=lambda: 3 * SECOND)
    assert len(log) == 3 and log.horizon == 0
    log.prune(latest_ts=2 * SECOND + HISTORY_NS, needed_after=lambda: 2 * SECOND + HISTORY_NS)
    assert len(log) == 1 and log.horizon == 2 * SECOND
    assert log.after(1 * SECOND) is None  # no longer reaches back that far
    assert [ts for ts, _ in log.after(2 * SECOND)] == [3 * SECOND]


def test_the_key_cap_bounds_memory_but_never_drops_what_a_mutation_needs(monkeypatch):
    monkeypatch.setattr(write_log, "HISTORY_MAX_KEYS", 10)
    log = WriteLog(horizon=0)
    log.keep_history()
    for ts in range(1, 6):
        log.append(ts, keys(4))  # 20 keys in all
    log.prune(latest_ts=5, needed_after=lambda: 2)  # a mutation started at ts 2 is still running
    assert [ts for ts, _ in log.after(2)] == [3, 4, 5]  # all it must be validated against
    assert log.horizon == 2
    log.prune(latest_ts=5, needed_after=lambda: 5)  # it finished
    assert len(log) == 2 and log.horizon == 3  # 8 keys left, within the cap


def test_tables_overlapping_names_the_tables_written_into_the_reads():
    log = WriteLog(horizon=0)
    log.append(1, [("a.by_id", b"\x01")])
    log.append(2, [("b.by_id", b"\x02")])
    reads = ReadSet()
    reads.add_point("a.by_id", b"\x01")
    reads.add_point("b.by_id", b"\x09")
    read_set = reads.finalize()
    assert log.tables_overlapping(0, read_set) == {"a"}
    assert log.tables_overlapping(1, read_set) == set()
    log.prune(latest_ts=2 + HISTORY_NS, needed_after=lambda: 2)
    assert log.tables_overlapping(0, read_set) is None  # pruned: the caller must assume a conflict

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


def test_the_hard_bound_holds_even_while_an_old_mutation_runs():
    log = WriteLog(horizon=0, max_keys=10)
    for ts in range(1, 11):
        log.append(ts, keys(3))  # 30 keys in all
        log.prune(latest_ts=ts, needed_after=lambda: 0)  # a mutation started at 0 still runs
    assert sum(len(k) for _, k in log.after(log.horizon)) <= 10
    assert log.after(0) is None  # it cannot be validated any more: it will re-run
    assert [ts for ts, _ in log.after(7)] == [8, 9, 10]


def test_a_mutation_whose_commits_fell_off_the_log_reruns_and_commits(tmp_path):
    import threading

    from kernel_ext.engine.store import Store
    from kernel_ext.persistence.sqlite import SqlitePersistence

    store = Store(SqlitePersistence(tmp_path / "store.db"))
    store._writes = WriteLog(horizon=store.ts, max_keys=50)  # a small bound for the test
    doc = store.mutate(lambda txn: txn.insert("counters", {"n": 0}))[0]
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def slow(txn):
        runs.append(1)
        value = txn.get(doc)["n"]
        if len(runs) == 1:
            started.set()
            assert release.wait(10)
        txn.patch(doc, {"n": value + 1})

    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(store.mutate(slow)[1]))
    worker.start()
    assert started.wait(10)
    for i in range(200):  # unrelated commits, far more keys than the bound
        store.mutate(lambda txn, i=i: txn.insert("other", {"i": i}))
    assert len(store._writes) <= 50
    release.set()
    worker.join(10)
    assert result and len(runs) == 2  # it could not be validated: it ran again
    assert store.read(lambda txn: txn.get(doc))[0]["n"] == 1
    store.close()

"""The store's reads: snapshots that share one read transaction between writes, and mutations
that read the latest state without a snapshot (validated by OCC, also when they raise)."""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from cpu_load import repeat_in_threads_under_load

import kernel_ext
from kernel_ext import mutation
from kernel_ext.engine.store import Store
from kernel_ext.errors import PersistenceError
from kernel_ext.persistence.sqlite import SqlitePersistence


@pytest.fixture
def store(tmp_path: Path):
    s = Store(SqlitePersistence(tmp_path / "store.db"))
    yield s
    s.close()


def _insert(store: Store, n: int) -> str:
    return store.mutate(lambda txn: txn.insert("items", {"n": n}))[0]


def _read_all(store: Store) -> tuple[list[int], int]:
    docs, _, ts = store.read(lambda txn: [d["n"] for d in txn.query("items").collect()])
    return docs, ts


def test_snapshots_between_writes_share_one_read_transaction(store):
    _insert(store, 1)
    first = store.snapshot()
    store.close_snapshot(first)
    second = store.snapshot()
    try:
        assert second._txn is first._txn  # no new BEGIN / ts lookup / COMMIT
        assert second.ts == first.ts == store.ts
    finally:
        store.close_snapshot(second)


def test_a_write_ends_the_shared_read_transaction_and_later_reads_see_it(store):
    _insert(store, 1)
    assert _read_all(store) == ([1], store.ts)
    idle = store.persistence._idle
    assert idle is not None and idle.conn.in_transaction
    _insert(store, 2)
    assert store.persistence._idle is None
    assert not idle.conn.in_transaction  # ended before the write, so the WAL can be reset
    assert _read_all(store) == ([1, 2], store.ts)


def test_a_snapshot_open_across_a_write_keeps_its_commit_and_is_not_reused(store):
    _insert(store, 1)
    old = store.snapshot()
    try:
        _insert(store, 2)
        assert [doc["n"] for _, doc in old.scan(_items(store), None, b"", b"\xff", False)] == [1]
    finally:
        store.close_snapshot(old)
    assert store.persistence._idle is None  # it no longer shows the latest commit
    assert _read_all(store) == ([1, 2], store.ts)


def _items(store: Store) -> int:
    info = store.catalog.table("items")
    assert info is not None
    return info.number


def test_a_closed_snapshot_cannot_be_read(store):
    _insert(store, 1)
    snap = store.snapshot()
    store.close_snapshot(snap)
    store.close_snapshot(snap)  # idempotent
    with pytest.raises(PersistenceError, match="closed"):
        snap.get(_items(store), b"")


def test_reads_between_commits_do_not_grow_the_wal(store):
    """Every write ends the shared read transaction first, so SQLite's auto-checkpoint can
    reset the WAL (a reader open across commits would make it grow without bound)."""
    for n in range(3000):
        _insert(store, n)
        store.read(lambda txn: txn.query("items").first())
    wal = Path(f"{store.persistence.path}-wal")
    assert os.path.getsize(wal) < 8 * 2**20


def test_a_snapshot_sees_the_latest_commit_and_reports_its_ts(store):
    for n in range(5):
        _, ts = store.mutate(lambda txn, n=n: txn.insert("items", {"n": n}))
        assert _read_all(store) == (list(range(n + 1)), ts)


def test_a_snapshot_begun_during_a_write_waits_for_it(store):
    """A read transaction that may or may not include a write in progress cannot tell its ts;
    it begins again once the write is over."""
    _insert(store, 1)
    persistence = store.persistence
    opened: list[object] = []
    with persistence._writing():  # a write in progress
        thread = threading.Thread(target=lambda: opened.append(persistence.snapshot()))
        thread.start()
        thread.join(0.2)
        assert thread.is_alive() and not opened
    thread.join(10)
    (snap,) = opened
    try:
        assert snap.ts == store.ts
    finally:
        store.close_snapshot(snap)


def test_commits_raise_the_stored_ts_ceiling_only_when_they_pass_it(tmp_path):
    """The stored ts is a ceiling (no commit is later), raised by a lease when a commit passes
    it, so most commits write no meta row; a reopened store starts at the ceiling."""
    path = tmp_path / "store.db"
    persistence = SqlitePersistence(path)

    def stored() -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key='ts'").fetchone()[0])

    try:
        persistence.write_commit(1_000, [])
        ceiling = stored()
        assert ceiling > 1_000
        persistence.write_commit(ceiling - 1, [])
        assert stored() == ceiling  # within the lease: meta not written
        assert persistence.last_ts() == ceiling - 1  # the latest commit, exactly
        persistence.write_commit(ceiling + 1, [])
        assert stored() > ceiling + 1
        ceiling = stored()
    finally:
        persistence.close()
    reopened = Store(SqlitePersistence(path))
    try:
        assert reopened.ts == ceiling
        _, ts = reopened.mutate(lambda txn: txn.insert("items", {"n": 1}))
        assert ts > ceiling
    finally:
        reopened.close()


def test_a_mutation_that_raises_on_an_inconsistent_read_is_rerun(store_url):
    """Mutations read the latest state statement by statement. Here a commit lands between
    the first run's two reads, so that run sees a pair that never existed (x + y != 10) and
    raises; its reads do not validate, so the store re-runs it instead of surfacing the
    error, and the re-run sees a consistent pair."""
    first_read, committed = threading.Event(), threading.Event()
    runs: list[tuple[int, int]] = []

    @mutation
    def check_sum(ctx, x, y):
        a = ctx.db.get(x)["v"]
        if not runs:
            first_read.set()
            assert committed.wait(10)
        b = ctx.db.get(y)["v"]
        runs.append((a, b))
        if a + b != 10:
            raise AssertionError(f"inconsistent: {a} + {b}")
        return a

    @mutation
    def move(ctx, x, y):
        ctx.db.patch(x, {"v": ctx.db.get(x)["v"] - 1})
        ctx.db.patch(y, {"v": ctx.db.get(y)["v"] + 1})

    @mutation
    def make(ctx):
        return ctx.db.insert("xs", {"v": 4}), ctx.db.insert("xs", {"v": 6})

    client = kernel_ext.connect(store_url)
    try:
        for name, fn in {"check": check_sum, "move": move, "make": make}.items():
            client.backend.register(f"skew:{name}", fn)
        x, y = client.mutation("skew:make")
        outcome: dict[str, object] = {}

        def run_check() -> None:
            try:
                outcome["value"] = client.mutation("skew:check", x=x, y=y)
            except Exception as exc:
                outcome["value"] = exc

        thread = threading.Thread(target=run_check)
        thread.start()
        assert first_read.wait(10)
        client.mutation("skew:move", x=x, y=y)
        committed.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        client.close()
    assert outcome["value"] == 3, outcome
    assert runs[0] == (4, 7)  # the first run saw x before and y after the commit
    assert runs[-1] == (3, 7)


def test_an_error_with_consistent_reads_is_raised_at_once(store_url):
    runs: list[int] = []

    @mutation
    def fail(ctx, x):
        runs.append(ctx.db.get(x)["v"])
        raise ValueError("no")

    client = kernel_ext.connect(store_url)
    try:
        client.backend.register("e:fail", fail)
        client.backend.register("e:make", mutation(lambda ctx: ctx.db.insert("xs", {"v": 1})))
        x = client.mutation("e:make")
        with pytest.raises(ValueError, match="no"):
            client.mutation("e:fail", x=x)
    finally:
        client.close()
    assert runs == [1]


# -- contention ---------------------------------------------------------------------------


@mutation
def _increment(ctx, id):
    value = ctx.db.get(id)["n"]
    time.sleep(0.001)  # a handler that computes a little between its read and its write
    ctx.db.patch(id, {"n": value + 1})


def test_contended_mutations_never_fail_for_contention(tmp_path):
    """8 threads x 25 increments of one document, with a CPU-heavy process beside them: the
    optimistic attempts keep conflicting, then each mutation runs serially and commits."""
    client = kernel_ext.connect(tmp_path / "store.db")
    try:
        client.backend.register("c:inc", _increment)
        client.backend.register("c:make", mutation(lambda ctx: ctx.db.insert("c", {"n": 0})))
        doc = client.mutation("c:make")
        increment = functools.partial(client.mutation, "c:inc", id=doc)
        assert repeat_in_threads_under_load([increment] * 8, times=25) == []
        assert client.backend.store.read(lambda txn: txn.get(doc)["n"])[0] == 200
    finally:
        client.close()


# -- reads as of an earlier commit -------------------------------------------------------


def test_read_as_of_is_exact_or_refused(store):
    from kernel_ext.errors import HistoryUnavailable

    store.keep_history()

    a = _insert(store, 1)
    before = store.ts
    _insert(store, 2)  # a new document: a full-table read changed, a point read did not

    assert store.read_as_of(before, lambda txn: txn.get(a)["n"]) == 1
    with pytest.raises(HistoryUnavailable, match="changed after ts"):
        store.read_as_of(before, _read_all_in)


def test_read_as_of_reports_the_error_of_that_time_only_if_it_is_exact(store):
    from kernel_ext.errors import HistoryUnavailable

    store.keep_history()

    a = _insert(store, 1)
    before = store.ts

    def fails(txn):
        txn.get(a)
        raise LookupError("the query's own error")

    with pytest.raises(LookupError):
        store.read_as_of(before, fails)
    store.mutate(lambda txn: txn.patch(a, {"n": 5}))
    with pytest.raises(HistoryUnavailable):  # its error then is unknown: refused, not guessed
        store.read_as_of(before, fails)


def test_the_history_survives_a_reopen_only_from_then_on(tmp_path):
    from kernel_ext.errors import HistoryUnavailable

    path = tmp_path / "store.db"
    store = Store(SqlitePersistence(path))
    _insert(store, 1)
    before = store.ts
    store.close()
    store = Store(SqlitePersistence(path))
    store.keep_history()
    try:
        with pytest.raises(HistoryUnavailable, match="older than the write history"):
            store.read_as_of(before - 1, _read_all_in)
        assert store.read_as_of(store.ts, _read_all_in) == [1]
    finally:
        store.close()


def _read_all_in(txn):
    return [d["n"] for d in txn.query("items").collect()]


def test_read_as_of_refuses_across_a_schema_change_or_a_recorded_change(store):
    from kernel_ext.errors import HistoryUnavailable

    store.keep_history()

    a = _insert(store, 1)
    before = store.ts
    store.set_schema(None)  # a schema change: every read depends on it
    with pytest.raises(HistoryUnavailable, match="changed after ts"):
        store.read_as_of(before, lambda txn: txn.get(a)["n"])
    after_schema = store.ts
    assert store.read_as_of(after_schema, lambda txn: txn.get(a)["n"]) == 1
    assert store.record_change(lambda: "done") == "done"
    assert store.ts > after_schema  # the change has a ts of its own
    with pytest.raises(HistoryUnavailable, match="redefined after ts"):
        store.read_as_of(after_schema, lambda txn: txn.get(a)["n"])
    assert store.read_as_of(store.ts, lambda txn: txn.get(a)["n"]) == 1


def test_without_kept_history_only_the_latest_ts_is_answered(store):
    from kernel_ext.errors import HistoryUnavailable

    a = _insert(store, 1)
    before = store.ts
    assert store.read_as_of(before, lambda txn: txn.get(a)["n"]) == 1
    _insert(store, 2)
    _insert(store, 3)  # the log keeps only what the running mutation needed
    with pytest.raises(HistoryUnavailable, match="older than the write history"):
        store.read_as_of(before, lambda txn: txn.get(a)["n"])


def test_a_schema_stores_earlier_ints_in_number_fields_as_floats(tmp_path):
    """Documents written before the schema (or by an earlier version) with ints in a
    v.number() field are stored again as floats when the schema is applied, so that a float
    bound finds them (int64 sorts below every float64)."""
    import kernel_ext
    from kernel_ext import define_schema, define_table, v

    client = kernel_ext.connect(tmp_path / "store.db")
    try:
        store = client.backend.store
        store.mutate(lambda txn: [txn.insert("cars", {"weight": w}) for w in (3500, 4200, 4800)])
        client.set_schema(
            define_schema(
                {"cars": define_table({"weight": v.number()}).index("by_weight", ["weight"])}
            )
        )
        docs = store.read(lambda txn: txn.query("cars").collect())[0]
        assert [type(d["weight"]) for d in docs] == [float, float, float]
        heavy = store.read(
            lambda txn: (
                txn.query("cars")
                .with_index("by_weight", lambda q: q.gt("weight", 4000.0))
                .collect()
            )
        )[0]
        assert [d["weight"] for d in heavy] == [4200.0, 4800.0]
    finally:
        client.close()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_an_index_build_interrupted_by_any_exception_leaves_no_open_transaction(
    tmp_path, interrupt
):
    """An exception other than an SQLite error while an index is built (Ctrl-C during a
    schema change on a big table) rolls the build back: later commits are written."""
    from kernel_ext import define_schema, define_table, v

    path = tmp_path / "store.db"
    store = Store(SqlitePersistence(path))
    try:
        _insert(store, 1)
        _insert(store, 2)
        documents_of = store.persistence.documents_of

        def interrupted(table_number):
            for i, row in enumerate(documents_of(table_number)):
                if i == 1:
                    raise interrupt("interrupted")
                yield row

        store.persistence.documents_of = interrupted  # type: ignore[method-assign]
        # No check of the existing documents: the only read of them is the index build.
        schema = define_schema(
            {"items": define_table({"n": v.number()}).index("by_n", ["n"])},
            schema_validation=False,
        )
        with pytest.raises(interrupt):
            store.set_schema(schema)
        del store.persistence.documents_of
        _insert(store, 3)
    finally:
        store.close()
    store = Store(SqlitePersistence(path))
    try:
        assert sorted(_read_all(store)[0]) == [1, 2, 3]
        assert "by_n" not in store.catalog.table("items").indexes
    finally:
        store.close()


def test_a_commit_interrupted_between_statements_leaves_no_open_transaction(tmp_path, monkeypatch):
    """Ctrl-C while a commit's statements run (an embedded mutation on the notebook's own
    thread) rolls that commit back: nothing of it is stored, and later commits are."""
    import kernel_ext.persistence.sqlite as sqlite_module

    path = tmp_path / "store.db"
    store = Store(SqlitePersistence(path))
    try:
        _insert(store, 1)
        apply = sqlite_module._apply

        def interrupted(*args):
            monkeypatch.setattr(sqlite_module, "_apply", apply)  # once
            raise KeyboardInterrupt

        monkeypatch.setattr(sqlite_module, "_apply", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _insert(store, 2)
        _insert(store, 3)
    finally:
        store.close()
    store = Store(SqlitePersistence(path))
    try:
        assert sorted(_read_all(store)[0]) == [1, 3]
    finally:
        store.close()

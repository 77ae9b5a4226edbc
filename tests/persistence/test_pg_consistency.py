"""Consistency of a PostgreSQL store shared by several processes (two `Store`s on one
database stand for two processes): snapshots that see commits not replayed yet, gaps in the
commit log, catalog races, lost connections. Each test failed before its fix."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from pg_follower import stop_follower
from polling import wait_for

import kernel_ext
from kernel_ext import define_schema, define_table, v
from kernel_ext.engine.store import Store
from kernel_ext.engine.subscriptions import SubscriptionManager
from kernel_ext.errors import HistoryUnavailable, PersistenceError
from kernel_ext.persistence.postgres import PostgresPersistence

FUNCTIONS = Path(__file__).parent.parent / "fixtures" / "pg_app"


def test_a_one_shot_read_sees_a_table_created_by_another_process(pg_url):
    a, b = Store(PostgresPersistence(pg_url)), Store(PostgresPersistence(pg_url))
    try:
        with b._commit_lock:  # B's follower is slow to replay (ms in real life)
            _, ts = a.mutate(lambda txn: txn.insert("fresh", {"x": 1}))
            rows, _, snap_ts = b.read(lambda txn: txn.query("fresh").collect())
            # The snapshot is at/after A's commit, yet the table reads as empty.
            assert snap_ts >= ts
            assert len(rows) == 1, f"snapshot at {snap_ts} >= commit {ts} but rows={rows}"
    finally:
        a.close()
        b.close()


def test_get_of_a_document_in_a_table_created_elsewhere(pg_url):
    a, b = Store(PostgresPersistence(pg_url)), Store(PostgresPersistence(pg_url))
    try:
        b.mutate(lambda txn: txn.insert("log", {"found": "init"}))
        out = {}
        with b._commit_lock:  # B's follower lags a few ms behind A
            doc_id, ts_a = a.mutate(lambda txn: txn.insert("fresh", {"x": 1}))

            def fn(txn):
                found = txn.get(doc_id) is not None
                txn.insert("log", {"found": found})
                return found

            t = threading.Thread(target=lambda: out.update(r=b.mutate(fn)))
            t.start()
            t.join(0.5)  # runs fn, then waits for the commit lock
        t.join(10)
        found, ts_b = out["r"]
        assert ts_b > ts_a
        assert found, "committed after the document was stored, yet it read it as missing"
    finally:
        a.close()
        b.close()


def test_a_view_is_rebuilt_after_a_gap_in_the_log(pg_url):
    a = kernel_ext.connect(pg_url)
    b = kernel_ext.connect(pg_url)
    try:
        a.load_functions(FUNCTIONS)
        b.load_functions(FUNCTIONS)
        a.mutation("items:add_pair", n=1, group="g", score=1)
        sub = b.subscribe("items:per_group")
        wait_for(lambda: sub.value == [{"group": "g", "n": 2, "total": 3}] or sub.value, timeout=10)
        assert b.backend.subscriptions.modes()  # it is a view
        assert list(b.backend.subscriptions.modes().values()) == [True]
        store_b = b.backend.store
        stop_follower(store_b)  # B is "away" (laptop asleep) ...
        a.mutation("items:add_pair", n=2, group="g", score=10)
        a.mutation("items:add_pair", n=3, group="g", score=100)
        # ... long enough that the first of these entries was pruned from the log.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT ts FROM convex_commit_log WHERE ts > %s ORDER BY ts", (store_b.ts,)
            ).fetchall()
            conn.execute("DELETE FROM convex_commit_log WHERE ts = %s", (rows[0][0],))
        store_b._catch_up()  # what the follower does when B wakes up
        expected = a.query("items:per_group_fresh")
        assert expected == [{"group": "g", "n": 6, "total": 1 + 2 + 10 + 11 + 100 + 101}]
        try:
            wait_for(lambda: sub.value == expected, timeout=5)
        except AssertionError:
            raise AssertionError(f"view shows {sub.value}, expected {expected}") from None
    finally:
        a.close()
        b.close()


def test_a_round_that_failed_during_an_outage_runs_again(pg_url):
    a, b = Store(PostgresPersistence(pg_url)), Store(PostgresPersistence(pg_url))
    manager = SubscriptionManager(b)
    try:
        a.mutate(lambda txn: txn.insert("t", {"x": 0}))
        wait_for(lambda: b.ts == a.ts)
        results = []
        manager.subscribe("q", lambda txn: len(txn.query("t").collect()), results.append)
        wait_for(lambda: results and results[-1].value == 1)
        real_snapshot = b.snapshot
        failed = []

        def snapshot():
            if not failed:  # the server goes away just as the round starts
                failed.append(1)
                raise PersistenceError("PostgreSQL at 127.0.0.1: Reading failed: server closed")
            return real_snapshot()

        b.snapshot = snapshot
        _, ts = a.mutate(lambda txn: txn.insert("t", {"x": 1}))
        wait_for(lambda: failed)
        # The outage is seen by the follower too (its listening connection dies) ...
        dbname = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()",
                (dbname,),
            )
        wait_for(lambda: b.status == "reconnecting", timeout=10)
        wait_for(lambda: b.status == "connected", timeout=10)  # ... and it comes back
        assert manager.wait_processed(ts, timeout=10)  # "processed" ...
        wait_for(lambda: results[-1].value == 2, timeout=5)  # ... but the result is still 1
    finally:
        manager.close()
        a.close()
        b.close()


def test_a_commit_after_the_idle_connections_were_dropped(pg_url):
    store = Store(PostgresPersistence(pg_url))
    try:
        store.mutate(lambda txn: txn.insert("t", {"i": 0}))
        dbname = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name = 'convex-notebook' AND state = 'idle' "
                "AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
        assert killed
        failures = 0
        for i in range(3):
            try:
                store.mutate(lambda txn, i=i: txn.insert("t", {"i": i + 1}))
            except PersistenceError:
                failures += 1
        assert failures == 0
    finally:
        store.close()


def _schema(field):
    return define_schema(
        {
            "t": define_table({"x": v.int64(), "y": v.int64(), "z": v.int64()}).index(
                "by_x", [field]
            )
        },
        schema_validation=False,
    )


def test_concurrent_redefinition_of_an_index(pg_url):
    a, b = Store(PostgresPersistence(pg_url)), Store(PostgresPersistence(pg_url))
    try:
        a.set_schema(_schema("x"))
        b._catch_up()
        original = b._reconcile_indexes

        def reconcile(info, declared):
            # A redefines by_x between B's _create_table_now and B's _reconcile_indexes
            # (timing injected; in real life: two serve processes applying pushes).
            a.set_schema(_schema("y"))
            return original(info, declared)

        b._reconcile_indexes = reconcile
        with b._commit_lock:  # B's follower lags a few ms
            b.set_schema(_schema("z"))
        del b._reconcile_indexes
        b._catch_up()
        b.mutate(lambda txn: txn.insert("t", {"x": 1, "y": 1, "z": 1}))
        a._catch_up()
        assert a.catalog.table("t").indexes["by_x"].fields == ("z",)
        assert b.catalog.table("t").indexes["by_x"].fields == ("z",)
        rows, _, _ = a.read(
            lambda txn: txn.query("t").with_index("by_x", lambda q: q.eq("z", 1)).collect()
        )
        plain, _, _ = a.read(lambda txn: txn.query("t").collect())
        assert len(plain) == 1
        assert len(rows) == 1, "the index by_x(y) misses B's document"
    finally:
        a.close()
        b.close()


def test_lookup_does_not_answer_while_the_backend_lives(pg_url):
    persistence = PostgresPersistence(pg_url)
    other = psycopg.connect(pg_url)  # the "lost" commit's backend, still alive on the server
    try:
        commit_id = uuid.uuid4()
        other.execute(
            "INSERT INTO convex_commit_log VALUES (%s, 0, %s, %s)",
            (1 << 61, commit_id, b""),
        )
        started = time.monotonic()
        backend_start = other.execute(
            "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()[0]
        backend = (other.info.backend_pid, backend_start)
        answer = persistence.lookup_commit(commit_id, backend, OSError("lost"))
        assert time.monotonic() - started < 15
        with pytest.raises(psycopg.OperationalError):
            other.commit()  # ended by the lookup: it cannot land after the answer
        with psycopg.connect(pg_url) as check:
            stored = check.execute(
                "SELECT 1 FROM convex_commit_log WHERE commit_id = %s", (commit_id,)
            ).fetchone()
        assert not (answer is None and stored), "answered 'not written' for a commit that landed"
    finally:
        other.close()
        persistence.close()


def test_a_read_as_of_a_ts_another_process_returned(pg_url):
    a, b = Store(PostgresPersistence(pg_url)), Store(PostgresPersistence(pg_url))
    try:
        b.keep_history()
        with b._commit_lock:  # B has not replayed A's commit yet when the read arrives ...
            _, ts = a.mutate(lambda txn: txn.insert("t", {"x": 1}))
            count = b.read_as_of(ts, lambda txn: len(txn.query("t").collect()))
        assert count == 1  # ... it catches up instead of refusing or answering empty
        _, later = a.mutate(lambda txn: txn.insert("t", {"x": 2}))
        wait_for(lambda: b.ts >= later)
        with pytest.raises(HistoryUnavailable):  # what it read changed since `ts`
            b.read_as_of(ts, lambda txn: len(txn.query("t").collect()))
    finally:
        a.close()
        b.close()


def test_a_one_round_trip_commit_falls_back_when_another_process_committed(pg_url):
    a, b = Store(PostgresPersistence(pg_url)), Store(PostgresPersistence(pg_url))
    try:
        doc_id, _ = a.mutate(lambda txn: txn.insert("counter", {"n": 0}))
        wait_for(lambda: b.ts == a.ts)

        def increment(txn):
            txn.patch(doc_id, {"n": txn.get(doc_id)["n"] + 1})

        with b._commit_lock:  # B has not replayed A's next commit when it commits itself
            _, ts_a = a.mutate(increment)
            known = b.ts
            _, ts_b = b.mutate(increment)  # its read saw A's write or was re-run: never lost
        assert known < ts_a < ts_b
        rows, _, _ = a.read(lambda txn: txn.get(doc_id))
        assert rows["n"] == 2
    finally:
        a.close()
        b.close()

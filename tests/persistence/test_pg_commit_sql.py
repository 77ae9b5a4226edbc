"""PostgreSQL commits sent as one simple query with values inlined as literals, and the
one-round-trip commit (`commit_if_latest`): literals, batches, failures, catalog races.
The tests that force an interleaving wrap internals only to order threads."""

from __future__ import annotations

import psycopg
import pytest
from pg_follower import stop_follower
from polling import wait_for

import kernel_ext.engine.store as store_mod
import kernel_ext.persistence.postgres as pg
from kernel_ext import define_schema, define_table, v
from kernel_ext.engine.store import Store
from kernel_ext.errors import PersistenceError
from kernel_ext.persistence.postgres import PostgresPersistence


def test_interrupt_before_fast_commit_leaves_phantom_table(pg_url, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) while the fast path encodes the log entry: the new table
    stays installed in the catalog, although nothing was stored."""
    a = Store(PostgresPersistence(pg_url))
    b = Store(PostgresPersistence(pg_url))
    try:
        real = store_mod.encode_commit
        calls = {"n": 0}

        def interrupted(commit):
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt
            return real(commit)

        monkeypatch.setattr(store_mod, "encode_commit", interrupted)
        with pytest.raises(KeyboardInterrupt):
            a.mutate(lambda txn: txn.insert("fresh", {"x": 1}))
        monkeypatch.setattr(store_mod, "encode_commit", real)
        with psycopg.connect(pg_url) as conn:
            stored = conn.execute("SELECT name FROM convex_tables WHERE name='fresh'").fetchall()
        assert stored == []
        # The bug: the catalog of A still has the table.
        phantom = a.catalog.table("fresh")
        # Next insert: A thinks the table exists, writes documents but no convex_tables row.
        _, ts = a.mutate(lambda txn: txn.insert("fresh", {"x": 2}))
        wait_for(lambda: b.ts >= ts)
        rows, _, _ = b.read(lambda txn: txn.query("fresh").collect())
        with psycopg.connect(pg_url) as conn:
            stored = conn.execute("SELECT name FROM convex_tables WHERE name='fresh'").fetchall()
        with psycopg.connect(pg_url) as conn:
            docs = (
                conn.execute(
                    "SELECT count(*) FROM convex_documents WHERE table_number=%s", (phantom.number,)
                ).fetchone()[0]
                if phantom
                else None
            )
        problems = []
        if phantom is not None:
            problems.append("phantom table left in A's catalog")
        if stored != [("fresh",)]:
            problems.append(f"convex_tables has {stored}, yet {docs} documents stored in it")
        if len(rows) != 1:
            problems.append(f"process B sees {rows}")
        assert not problems, problems
    finally:
        a.close()
        b.close()


def test_index_created_elsewhere_is_maintained_by_a_stale_process(pg_url):
    a = Store(PostgresPersistence(pg_url))
    b = Store(PostgresPersistence(pg_url))
    try:
        _, ts = a.mutate(lambda txn: txn.insert("t", {"x": 1}))
        wait_for(lambda: b.ts >= ts)
        stop_follower(b)
        a.set_schema(define_schema({"t": define_table({"x": v.number()}).index("by_x", ["x"])}))
        assert b.catalog.table("t").indexes.get("by_x") is None  # B does not know yet
        b.mutate(lambda txn: txn.insert("t", {"x": 2}))
        b._catch_up()
        index_id = a.catalog.table("t").indexes["by_x"].index_id
        with psycopg.connect(pg_url) as conn:
            n = conn.execute(
                "SELECT count(*) FROM convex_index_entries WHERE index_id=%s", (index_id,)
            ).fetchone()[0]
        assert n == 2
    finally:
        a.close()
        b.close()


@pytest.fixture
def tiny_batches(monkeypatch):
    monkeypatch.setattr(pg, "_ROWS_PER_STATEMENT", 3)
    monkeypatch.setattr(pg, "_BATCH_CHARS", 600)


def test_multi_batch_commit(pg_url, tiny_batches):
    a = Store(PostgresPersistence(pg_url))
    b = Store(PostgresPersistence(pg_url))
    try:

        def many(txn):
            return [txn.insert("m", {"x": i, "s": "a'b\\c" * 5}) for i in range(40)]

        _ids, ts = a.mutate(many)
        with psycopg.connect(pg_url) as conn:
            log_ts = conn.execute("SELECT max(ts) FROM convex_commit_log").fetchone()[0]
        assert ts == log_ts
        wait_for(lambda: b.ts >= ts)
        rows, _, _ = b.read(lambda txn: txn.query("m").collect())
        assert len(rows) == 40 and rows[0]["s"] == "a'b\\c" * 5
        # Stale detected in the first of several batches: falls back and commits.
        stop_follower(b)
        _, ts2 = a.mutate(lambda txn: txn.insert("m", {"x": -1}))
        _ids_b, ts3 = b.mutate(many)
        assert ts3 > ts2
        rows, _, _ = a.read(lambda txn: txn.query("m").collect())
        assert len(rows) == 81
    finally:
        a.close()
        b.close()


def test_failure_in_last_batch_rolls_back_first_batch(pg_url, tiny_batches):
    a = Store(PostgresPersistence(pg_url))
    try:
        a.mutate(lambda txn: txn.insert("m", {"x": 0}))
        info = a.catalog.table("m")
        index_id = info.indexes["by_creation_time"].index_id
        before = a.ts
        with psycopg.connect(pg_url, autocommit=True) as conn:
            n_docs = conn.execute("SELECT count(*) FROM convex_documents").fetchone()[0]
        # Make the LAST statement (index entries) fail: a trigger raising on index entries.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.index_id = {index_id} THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$"
            )
            conn.execute(
                "CREATE TRIGGER boom BEFORE INSERT ON convex_index_entries FOR EACH ROW "
                "EXECUTE FUNCTION boom()"
            )
        with pytest.raises(PersistenceError):
            a.mutate(lambda txn: [txn.insert("m", {"x": i}) for i in range(40)])
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM convex_documents").fetchone()[0] == n_docs
            assert conn.execute("SELECT max(ts) FROM convex_clock").fetchone()[0] == before
            conn.execute("DROP TRIGGER boom ON convex_index_entries")
        for c in a.persistence.pool._idle:
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        a.mutate(lambda txn: txn.insert("m", {"x": 99}))
    finally:
        a.close()


@pytest.mark.parametrize(
    "value",
    [True, False, -5, 2**40, "a'b", "a\\b", "'; DROP TABLE x; --", "é漢", b"", b"\x00\xff'\\"],
)
def test_literal_round_trip(pg_url, value):
    p = PostgresPersistence(pg_url)
    try:
        conn = p.pool.get()
        got = conn.execute(f"SELECT {pg._literal(value)}").fetchone()[0]
        expected = int(value) if isinstance(value, bool) else value
        assert got == expected
        p.pool.put(conn)
    finally:
        p.close()


def test_a_string_holding_nul_is_never_inlined():
    with pytest.raises(ValueError, match="NUL"):
        pg._literal("a" + chr(0) + "b")


def test_transient_table_of_a_stale_fast_commit_seen_by_another_thread(pg_url):
    """Thread 1's fast commit installs table "fresh" in the shared catalog for the round trip;
    it comes back Stale (another process committed) and removes it. Thread 2's mutation ran
    meanwhile and used the transiently installed table; if it commits before thread 1 is
    back under the lock it hits `catalog.new_tables[...]` -> KeyError."""
    import threading

    a = Store(PostgresPersistence(pg_url))
    b = Store(PostgresPersistence(pg_url))
    try:
        a.mutate(lambda txn: txn.insert("other", {"x": 0}))
        wait_for(lambda: b.ts == a.ts)
        stop_follower(b)
        a.mutate(lambda txn: txn.insert("other", {"x": 1}))  # B is now behind: Stale

        installed, t2_done = threading.Event(), threading.Event()
        real_fast = b._shared.commit_if_latest
        real_exclusive = b._exclusive
        t1 = {"id": None}

        def fast(*args):
            if threading.get_ident() == t1["id"]:
                installed.set()  # the table is in b.catalog now
                assert t2_done.wait(0) or True
                # give thread 2 the time to run its fn (it sees the table) and queue up
                import time

                time.sleep(0.3)
            return real_fast(*args)

        def exclusive():
            if threading.get_ident() == t1["id"]:
                t2_done.wait(5)  # thread 2 takes the commit lock first (lock is not fair)
            return real_exclusive()

        b._shared.commit_if_latest = fast
        b._exclusive = exclusive
        out = {}

        def thread1():
            t1["id"] = threading.get_ident()
            out["t1"] = b.mutate(lambda txn: txn.insert("fresh", {"who": 1}))

        def thread2():
            installed.wait(5)
            try:
                out["t2"] = b.mutate(lambda txn: txn.insert("fresh", {"who": 2}))
            except BaseException as exc:
                out["t2"] = exc
            t2_done.set()

        th1, th2 = threading.Thread(target=thread1), threading.Thread(target=thread2)
        th1.start(), th2.start()
        th1.join(20), th2.join(20)
        assert not isinstance(out.get("t2"), BaseException), f"thread 2 failed: {out['t2']!r}"
    finally:
        a.close()
        b.close()


def test_fast_commit_on_pooled_connections_the_server_dropped(pg_url):
    import time

    a = Store(PostgresPersistence(pg_url))
    try:
        a.mutate(lambda txn: txn.insert("t", {"x": 0}))
        pids = [c.info.backend_pid for c in a.persistence.pool._idle]
        assert pids
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        start = time.monotonic()
        _, _ts = a.mutate(lambda txn: txn.insert("t", {"x": 1}))
        took = time.monotonic() - start
        assert took < 10
        rows, _, _ = a.read(lambda txn: txn.query("t").collect())
        assert len(rows) == 2
    finally:
        a.close()

"""The PostgreSQL backend on a real server (the session's throwaway cluster)."""

from __future__ import annotations

import time

import psycopg
import pytest
from polling import wait_for

import kernel_ext
from kernel_ext import mutation, query, v
from kernel_ext.engine.store import ALL_KEYS, Commit, Store
from kernel_ext.errors import PersistenceError
from kernel_ext.persistence.base import CommitRecord, IndexChange, LogEntry
from kernel_ext.persistence.commit_log import LoggedCommit, encode_commit
from kernel_ext.persistence.postgres import PostgresPersistence
from kernel_ext.store.catalog import id_key


def _with_password(url: str, password: str) -> str:
    """`url` with a password (the test cluster trusts loopback: any password is accepted)."""
    return url.replace("postgres@", f"postgres:{password}@", 1)


def test_an_incompatible_store_is_refused_without_the_password(pg_url):
    PostgresPersistence(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE convex_meta SET value = '999' WHERE key = 'format'")
    with pytest.raises(PersistenceError, match="incompatible version") as info:
        PostgresPersistence(_with_password(pg_url, "pw-secret"))
    assert "format 999" in str(info.value)
    assert "pw-secret" not in str(info.value) and "***" in str(info.value)


def test_a_missing_database_is_named(pg_url):
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(PersistenceError, match="no_such_database") as info:
        PostgresPersistence(missing)
    assert "does not exist" in str(info.value)


def test_a_commit_whose_connection_dies_writes_nothing(pg_url):
    persistence = PostgresPersistence(pg_url)
    try:
        with persistence.exclusive() as session:
            session.write([CommitRecord(1, id_key("k1"), {"a": 1}, (), False)])
            with psycopg.connect(pg_url, autocommit=True) as other:
                pid = other.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = "
                    "'convex-notebook' AND state LIKE 'idle in transaction%'"
                ).fetchall()
                assert len(pid) == 1
                other.execute("SELECT pg_terminate_backend(%s)", (pid[0][0],))
            with pytest.raises(PersistenceError, match=r"not written|nothing was written"):
                session.finish(encode_commit(LoggedCommit()))
        # The store still works, and the lost commit is nowhere.
        snap = persistence.snapshot()
        try:
            assert snap.get(1, id_key("k1")) is None
        finally:
            snap.close()
        with persistence.exclusive() as session:
            session.write([CommitRecord(1, id_key("k2"), {"a": 2}, (), False)])
            ts = session.finish(encode_commit(LoggedCommit()))
        snap = persistence.snapshot()
        try:
            assert snap.ts == ts and snap.get(1, id_key("k2")) == {"a": 2}
        finally:
            snap.close()
    finally:
        persistence.close()


def test_timestamps_increase_whichever_process_commits(pg_url):
    a, b = Store(PostgresPersistence(pg_url)), Store(PostgresPersistence(pg_url))
    try:
        seen = []
        for i in range(20):
            store = a if i % 2 else b
            _, ts = store.mutate(lambda txn, i=i: txn.insert("t", {"i": i}))
            seen.append(ts)
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        # A clock row that ran ahead (another machine's clock) still moves forward.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE convex_clock SET ts = ts + 3600000000000")
            ahead = conn.execute("SELECT ts FROM convex_clock").fetchone()[0]
        _, ts = a.mutate(lambda txn: txn.insert("t", {"i": -1}))
        assert ts == ahead + 1
    finally:
        a.close()
        b.close()


def test_a_gap_in_the_log_makes_every_live_query_run_again(pg_url):
    store = Store(PostgresPersistence(pg_url))
    try:
        commits: list[Commit] = []
        store.add_listener(commits.append)
        start = store.ts
        # Entries pruned while this process was away: the first one it gets does not follow
        # the last one it knows.
        body = encode_commit(LoggedCommit(keys=[("t.by_id", b"x")]))
        with store._commit_lock:
            store._replay([LogEntry(start + 10, start + 5, body)])
        assert [c.ts for c in commits] == [start + 10]
        assert ALL_KEYS in commits[0].keys
        # Contiguous entries replay as they are.
        with store._commit_lock:
            store._replay([LogEntry(start + 20, start + 10, body)])
        assert commits[-1].keys == [("t.by_id", b"x")]
    finally:
        store.close()


def test_index_changes_move_keys(pg_url):
    persistence = PostgresPersistence(pg_url)
    try:
        key = id_key("d1")
        with persistence.exclusive() as session:
            session.create_index(5, 1, "by_x", ("x",), [])
            session.write([CommitRecord(1, key, {"x": 1}, (IndexChange(5, None, b"k1"),), False)])
            session.finish(encode_commit(LoggedCommit(catalog_changed=True)))
        with persistence.exclusive() as session:
            session.write([CommitRecord(1, key, {"x": 2}, (IndexChange(5, b"k1", b"k2"),), True)])
            session.finish(encode_commit(LoggedCommit()))
        snap = persistence.snapshot()
        try:
            assert list(snap.scan(1, 5, b"", b"\xff", False)) == [(b"k2", {"x": 2})]
        finally:
            snap.close()
    finally:
        persistence.close()


def test_a_restarted_server_is_reported_then_caught_up(pg_cluster, pg_url):
    client = kernel_ext.connect(pg_url)
    other = kernel_ext.connect(pg_url)
    try:
        statuses: list[str] = []
        handle = client.on_status(statuses.append)
        assert client.status == "connected"
        pg_cluster.restart()
        wait_for(lambda: "reconnecting" in statuses, timeout=30)
        wait_for(lambda: statuses[-1:] == ["connected"], timeout=30)
        assert statuses == ["reconnecting", "connected"]
        assert client.backend.store.unreachable is None and client.status == "connected"
        # It follows other processes' commits again.
        other.backend.register("notes:add", _add_note)
        client.backend.register("notes:list", _list_notes)
        sub = client.subscribe("notes:list")
        assert sub.value == []
        other.mutation("notes:add", {"text": "after the restart"})
        wait_for(lambda: sub.value == ["after the restart"], timeout=30)
        handle.remove()
        handle.remove()  # idempotent
    finally:
        client.close()
        other.close()


@mutation(args={"text": v.string()})
def _add_note(ctx, text):
    ctx.db.insert("notes", {"text": text})


@query
def _list_notes(ctx):
    return [d["text"] for d in ctx.db.query("notes").collect()]


def test_a_frozen_lock_holder_loses_the_lock(pg_url):
    frozen = PostgresPersistence(pg_url, commit_lock_limit_s=1.0)
    store = Store(PostgresPersistence(pg_url))
    try:
        with frozen.exclusive() as session:
            started = time.monotonic()
            # Another process's mutation waits for the lock, which the server takes away
            # from the session that sits idle with it (its process frozen, say).
            store.mutate(lambda txn: txn.insert("t", {"x": 1}))
            waited = time.monotonic() - started
            assert 0.5 < waited < 10
            with pytest.raises(PersistenceError, match=r"not written|nothing was written"):
                session.finish(encode_commit(LoggedCommit()))
        rows, _, _ = store.read(lambda txn: txn.query("t").collect())
        assert [r["x"] for r in rows] == [1]
    finally:
        frozen.close()
        store.close()

"""Full-text search on a PostgreSQL store shared by several processes (two clients on one
database stand for two processes): each keeps its own in-process index from the commits it
replays, and rebuilds it after a gap in the commit log (commits it never saw)."""

from __future__ import annotations

from typing import Any

import psycopg
from pg_follower import stop_follower
from polling import wait_for

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, query, v

SCHEMA = define_schema(
    {"notes": define_table({"body": v.string()}).search_index("s", search_field="body")}
)


@mutation
def add(ctx: Any, body: str) -> Any:
    return ctx.db.insert("notes", {"body": body})


@query
def find(ctx: Any, text: str) -> Any:
    q = ctx.db.query("notes").with_search_index("s", lambda q: q.search("body", text))
    return sorted(d["body"] for d in q.collect())


def _client(url: str) -> kernel_ext.Client:
    client = kernel_ext.connect(url)
    client.register("n:add", add)
    client.register("n:find", find)
    return client


def test_a_search_index_is_rebuilt_after_a_gap_in_the_log(pg_url):
    a, b = _client(pg_url), _client(pg_url)
    try:
        a.set_schema(SCHEMA)
        a.mutation("n:add", body="red apple")
        wait_for(lambda: b.backend.store.ts >= a.backend.store.ts, timeout=10)
        assert b.query("n:find", text="apple") == ["red apple"]  # B's index is built
        store_b = b.backend.store
        stop_follower(store_b)  # B is away ...
        a.mutation("n:add", body="green apple")
        a.mutation("n:add", body="apple pie")
        # ... long enough that the first of these entries was pruned from the log.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT ts FROM convex_commit_log WHERE ts > %s ORDER BY ts", (store_b.ts,)
            ).fetchall()
            conn.execute("DELETE FROM convex_commit_log WHERE ts = %s", (rows[0][0],))
        store_b._catch_up()  # what the follower does when B wakes up
        expected = ["apple pie", "green apple", "red apple"]
        assert a.query("n:find", text="apple") == expected
        assert b.query("n:find", text="apple") == expected
    finally:
        a.close()
        b.close()


def test_an_index_built_while_commits_wait_to_be_replayed_keeps_to_its_snapshot(pg_url):
    a, b = _client(pg_url), _client(pg_url)
    try:
        a.set_schema(SCHEMA)
        a.mutation("n:add", body="red apple")
        a.mutation("n:add", body="a pear")
        store_b = b.backend.store
        wait_for(lambda: store_b.ts >= a.backend.store.ts, timeout=10)
        old = store_b.snapshot()  # before "green apple"

        def search(txn: Any) -> list[tuple[float, str]]:
            found = txn.search("notes", "s", lambda q: q.search("body", "apple"))
            return [(score, doc["body"]) for score, doc in found]

        try:
            expected, _, _ = store_b.read(search, old)  # answered from the snapshot itself
            store_b._search._indexes.clear()  # B's index is not built yet ...
            with store_b._commit_lock:  # ... and B's follower lags behind A's commit
                a.mutation("n:add", body="green apple")
                # B builds its index now: from the documents its snapshot sees, not the
                # newest stored ones (which hold a commit B has not replayed: its ts is
                # after the index's, so it would count twice or at the wrong time).
                found, _, _ = store_b.read(search, old)
            assert found == expected
            wait_for(lambda: store_b.ts >= a.backend.store.ts, timeout=10)
            assert store_b.read(search, old)[0] == expected
            assert b.query("n:find", text="apple") == ["green apple", "red apple"]
        finally:
            store_b.close_snapshot(old)
    finally:
        a.close()
        b.close()

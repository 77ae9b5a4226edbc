"""The test suite's throwaway PostgreSQL cluster (tests/pg_cluster.py and the `pg_cluster` and
`pg_url` fixtures): loopback only, a fresh database per test, restartable under a client."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from pg_cluster import PgCluster, PgClusterError

#: The databases the parametrized `test_each_test_has_a_fresh_database` saw, in order.
_seen: list[str] = []


def test_listens_on_loopback_only(pg_cluster: PgCluster, pg_url: str) -> None:
    with psycopg.connect(pg_url, connect_timeout=10) as conn:
        assert conn.execute("SELECT inet_server_addr()::text").fetchone() == ("127.0.0.1/32",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        # Our own socket directory, never a distribution cluster's /var/run/postgresql.
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (str(pg_cluster.data),)
    # Another loopback address of this machine: the server is not bound to it.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url.replace("127.0.0.1", "127.0.0.2"), connect_timeout=10)


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_has_a_fresh_database(pg_cluster: PgCluster, pg_url: str, run: int) -> None:
    with psycopg.connect(pg_url, autocommit=True, connect_timeout=10) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE mark (run int)")
        databases = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert name is not None
    assert name[0] not in _seen
    # The previous test's database was dropped after it.
    assert not databases & set(_seen)
    _seen.append(name[0])


def test_restart_keeps_port_and_data(pg_cluster: PgCluster, pg_url: str) -> None:
    port = pg_cluster.port
    client = psycopg.connect(pg_url, autocommit=True, connect_timeout=10)
    client.execute("CREATE TABLE kept (value text)")
    client.execute("INSERT INTO kept VALUES ('before restart')")

    pg_cluster.restart()

    assert pg_cluster.port == port
    with pytest.raises(psycopg.OperationalError):
        client.execute("SELECT 1")
    client.close()
    with psycopg.connect(pg_url, connect_timeout=10) as fresh:
        assert fresh.execute("SELECT value FROM kept").fetchall() == [("before restart",)]


def test_failed_statement_says_what_failed(pg_cluster: PgCluster, pg_url: str) -> None:
    existing = pg_url.rsplit("/", 1)[1]
    with pytest.raises(PgClusterError, match="already exists"):
        pg_cluster.create_database(existing)


def test_missing_program_is_reported(tmp_path: Path) -> None:
    cluster = PgCluster(tmp_path, bindir=tmp_path / "no-postgresql-here")
    with pytest.raises(PgClusterError, match="initdb"):
        cluster.start()

"""Shared fixtures: every engine-level test runs on a SQLite file store, a memory store (SQLite
in /dev/shm), a store on `MemoryPersistence` (dicts, no SQLite) and a PostgreSQL store (a fresh
database of the session's throwaway cluster, `pg_cluster`)."""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import kernel_ext
from kernel_ext.client.embedded import Client
from kernel_ext.engine.store import Store
from kernel_ext.functions.auth import AuthConfig
from kernel_ext.functions.backend import Backend
from kernel_ext.persistence.memory import MemoryPersistence

FIXTURES = Path(__file__).parent / "fixtures"


#: `store_url`'s name for a store on `MemoryPersistence` (dicts, no SQLite). `kernel_ext.connect`
#: does not open it (yet): the fixture patches `kernel_ext.connect` for the test to open it.
DICTS = "dicts"


@pytest.fixture(params=["file", "memory", DICTS, "postgres"])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A store URL: a fresh SQLite file, memory, `DICTS` (`kernel_ext.connect` opens it
    on a `MemoryPersistence` during the test), or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    if request.param == DICTS:
        monkeypatch.setattr(kernel_ext, "connect", _connect_dicts(kernel_ext.connect))
        return DICTS
    return f"sqlite:///{tmp_path / 'store.db'}" if request.param == "file" else "memory"


@pytest.fixture(params=["file", "postgres"])
def durable_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL of a backend that outlives its client (a test closes and reopens it): a
    fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'store.db'}"


def _connect_dicts(connect: Callable[..., Any]) -> Callable[..., Any]:
    """`connect`, but `connect(DICTS)` builds an embedded client on a `MemoryPersistence`
    (as `connect("memory")` does on SQLite)."""

    def connect_dicts(url: Any = None, **kwargs: Any) -> Any:
        if url != DICTS:
            return connect(url, **kwargs)
        auth = kwargs.pop("auth", None)
        assert not kwargs, f"connect({DICTS!r}) takes only auth=, got {sorted(kwargs)}"
        config = AuthConfig.from_mapping(auth) if isinstance(auth, Mapping) else auth
        backend = Backend(Store(MemoryPersistence()))
        return Client(backend, location="memory", release=backend.close, auth=config)

    return connect_dicts


@pytest.fixture
def client(store_url: str) -> Iterator[Client]:
    """A client of a fresh store with the `tasks` fixture functions loaded."""
    c = kernel_ext.connect(store_url)
    c.load_functions(FIXTURES / "tasks_app")
    yield c
    c.close()


@pytest.fixture
def bare_client(store_url: str) -> Iterator[Client]:
    """A client of a fresh store with no functions."""
    c = kernel_ext.connect(store_url)
    yield c
    c.close()


# PostgreSQL: one throwaway cluster per session (tests/pg_cluster.py), started by the first test
# that asks for it; a fresh database per test.

if TYPE_CHECKING:
    from pg_cluster import PgCluster

_pg_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A running throwaway PostgreSQL cluster on 127.0.0.1 (superuser `postgres`, no password),
    stopped at the end of the session. Fails (never skips) when PostgreSQL is not installed."""
    from pg_cluster import PgCluster, PgClusterError

    # Not under pytest's temp root: every pytest session that starts takes the other users'
    # access to that root away again (chmod 700), and the server (user `postgres`, when we
    # are root) would lose its data directory under a session running at the same time.
    base = Path(tempfile.mkdtemp(prefix="convex-pg-"))
    try:
        cluster = PgCluster(base)
    except PgClusterError as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database of `pg_cluster`, named after the test; dropped after
    the test (its remaining connections cut), so the session's disk use stays small."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())
    name = f"t{next(_pg_database_numbers)}_{slug}"[:63]
    yield pg_cluster.create_database(name)
    pg_cluster.drop_database(name)

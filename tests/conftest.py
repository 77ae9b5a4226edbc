"""Shared fixtures: every engine-level test runs on a SQLite file store and a memory store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import kernel_ext
from kernel_ext.client.embedded import Client

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["file", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL: a fresh SQLite file, or memory."""
    return f"sqlite:///{tmp_path / 'store.db'}" if request.param == "file" else "memory"


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

"""File storage edge cases found in review: an interrupt after the `_storage` row committed
keeps the bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

import kernel_ext
from kernel_ext.engine.store import Commit

APP = Path(__file__).parent.parent / "fixtures" / "storage_app"


@pytest.fixture
def files(store_url):
    c = kernel_ext.connect(store_url)
    c.load_functions(APP)
    yield c
    c.close()


def test_an_interrupt_after_the_row_committed_keeps_the_bytes(files):
    """A Ctrl-C (or any error) that arrives once the `_storage` row is stored must not free
    the bytes that row names: the file would be listed but unreadable."""
    store = files.backend.store
    interrupted: list[str] = []

    def interrupt(commit: Commit) -> None:  # runs once the commit is stored
        for doc_id, write in commit.writes.items():
            if write.table == "_storage" and write.new is not None and not interrupted:
                interrupted.append(doc_id)
                raise KeyboardInterrupt

    store.add_listener(interrupt)
    with pytest.raises(KeyboardInterrupt):
        files.backend.storage.commit_file(_written(files, b"precious"), "text/plain")
    [sid] = interrupted
    assert files.query("files:metadata", id=sid)["size"] == 8.0
    assert files.action("files:get", id=sid) == b"precious"


def _written(c, data: bytes):
    writer = c.backend.storage.writer()
    writer.write(data)
    return writer

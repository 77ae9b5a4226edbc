"""File storage edge cases found in review: an interrupt after the `_storage` row committed
keeps the bytes; upload tokens never reach the access log; HEAD on a download URL."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
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


def test_upload_tokens_are_not_logged(caplog):
    with kernel_ext.connect("memory") as c:
        c.load_functions(APP)
        url = c.mutation("files:upload_url")
        token = url.partition("token=")[2]
        with caplog.at_level(logging.INFO, logger="tornado.access"):
            request = urllib.request.Request(url, data=b"x" * 100_000, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                assert json.loads(response.read())["storageId"]
            refused = urllib.request.Request(url, data=b"again", method="POST")
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(refused, timeout=30)
            info.value.close()
        assert info.value.code == 403
    logged = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert len(logged) == 2 and all("/api/storage/upload" in m for m in logged), logged
    assert not [m for m in logged if token in m]


def test_head_of_a_download_sends_its_headers(files):
    sid = files.action("files:store", data=b"0123456789", contentType="image/png")
    url = files.query("files:url", id=sid)
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["Content-Length"] == "10"
        assert r.read() == b""
    missing = urllib.request.Request(url[:-1] + ("a" if url[-1] != "a" else "b"), method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(missing, timeout=30)
    info.value.close()
    assert info.value.code == 404


def test_urls_work_after_a_background_server_stopped():
    """`%convex serve` points file URLs at its server; once it stops, new URLs must come
    from a server that still answers (they pointed at the stopped port)."""
    from kernel_ext.sync.background import BackgroundServer

    with kernel_ext.connect("memory") as c:
        c.load_functions(APP)
        sid = c.action("files:store", data=b"still here")
        server = BackgroundServer(c.backend)
        try:
            assert c.query("files:url", id=sid).startswith(server.url + "/api/storage/")
        finally:
            server.stop()
        url = c.query("files:url", id=sid)
        assert not url.startswith(server.url)
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == b"still here"


def test_a_store_opens_although_its_files_folder_cannot_be_swept(tmp_path):
    """The sweep of orphan files is housekeeping: something it cannot remove (here a folder
    someone made inside the files folder) is logged, never a reason to refuse the store."""
    db = tmp_path / "store.db"
    with kernel_ext.connect(f"sqlite:///{db}") as c:
        c.load_functions(APP)
        sid = c.action("files:store", data=b"kept")
    (tmp_path / "store.db.files" / "stray").mkdir()
    (tmp_path / "store.db.files" / ".tmp-left").write_bytes(b"partial upload")
    with kernel_ext.connect(f"sqlite:///{db}") as c:
        c.load_functions(APP)
        assert c.action("files:get", id=sid) == b"kept"
    assert not (tmp_path / "store.db.files" / ".tmp-left").exists()  # the rest was swept

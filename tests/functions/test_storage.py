"""File storage (`ctx.storage`) on every backend: store/get/metadata/delete, upload URLs over
real HTTP (single-use, expiring), downloads, the `_storage` system table, freeing bytes; and
the edge cases: an interrupt after the `_storage` row committed keeps the bytes, upload tokens
never reach the access log, HEAD on a download URL."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for

import kernel_ext
from kernel_ext.engine.store import Commit
from kernel_ext.errors import ConvexError

APP = Path(__file__).parent.parent / "fixtures" / "storage_app"


@pytest.fixture
def files(store_url):
    c = kernel_ext.connect(store_url)
    c.load_functions(APP)
    yield c
    c.close()


def _post(url: str, data: bytes, content_type: str | None = "text/plain") -> tuple[int, Any]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str) -> tuple[int, bytes, str | None]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read(), response.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), None


def _tokens(c: Any) -> list[Any]:
    store = c.backend.store
    return store.read(lambda txn: txn.query("_upload_tokens", system=True).collect())[0]


def test_store_get_metadata_and_delete_in_actions(files):
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one chunk
    sid = files.action("files:store", data=data, contentType="application/x-test")
    assert files.action("files:get", id=sid) == data
    meta = files.action("files:action_metadata", id=sid)
    assert meta == {
        "_id": sid,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "contentType": "application/x-test",
    }
    assert files.query("files:metadata", id=sid) == meta
    row = files.query("files:row", id=sid)
    assert row["sha256"] == meta["sha256"] and row["size"] == len(data)
    assert row["_creationTime"] > 0
    assert [f["_id"] for f in files.query("files:files")] == [sid]
    url = files.action("files:action_url", id=sid)
    assert url == files.query("files:url", id=sid)
    assert _get(url) == (200, data, "application/x-test")

    files.action("files:action_delete", id=sid)
    assert files.action("files:get", id=sid) is None
    assert files.query("files:metadata", id=sid) is None
    assert files.query("files:url", id=sid) is None
    assert files.query("files:files") == []
    wait_for(lambda: files.backend.store.files.read(sid) is None)
    assert _get(url)[0] == 404


def test_empty_file_without_content_type(files):
    sid = files.action("files:store", data=b"")
    assert files.action("files:get", id=sid) == b""
    meta = files.query("files:metadata", id=sid)
    assert meta["size"] == 0 and meta["contentType"] is None
    assert "contentType" not in files.query("files:row", id=sid)
    assert _get(files.query("files:url", id=sid)) == (200, b"", "application/octet-stream")


def test_upload_url_from_a_mutation_is_single_use(files):
    url = files.mutation("files:upload_url")
    status, body = _post(url, b"hello file", "text/markdown")
    assert status == 200
    sid = body["storageId"]
    assert files.action("files:get", id=sid) == b"hello file"
    assert files.query("files:metadata", id=sid)["contentType"] == "text/markdown"
    assert _get(files.query("files:url", id=sid)) == (200, b"hello file", "text/markdown")
    # The same URL again: refused, nothing stored.
    status, body = _post(url, b"again")
    assert status == 403 and "single-use" in body["message"]
    assert [f["_id"] for f in files.query("files:files")] == [sid]
    assert _tokens(files) == []


def test_upload_url_from_an_action(files):
    url = files.action("files:action_upload_url")
    status, body = _post(url, b"from an action")
    assert status == 200
    assert files.action("files:get", id=body["storageId"]) == b"from an action"


def test_expired_upload_url_is_refused(files):
    url = files.mutation("files:upload_url")
    storage = files.backend.storage
    storage.clock = lambda: time.time() + 3601
    status, body = _post(url, b"too late")
    assert status == 403 and "expired" in body["message"]
    assert files.query("files:files") == []
    storage.clock = time.time
    # A fresh URL still works.
    assert _post(files.mutation("files:upload_url"), b"in time")[0] == 200


def test_a_mutation_that_raises_leaves_no_upload_url(files):
    with pytest.raises(ConvexError) as caught:
        files.mutation("files:upload_url_then_fail")
    url = caught.value.data
    assert isinstance(url, str) and "/api/storage/upload?token=" in url
    assert _tokens(files) == []
    status, _ = _post(url, b"ghost")
    assert status == 403
    assert files.query("files:files") == []


def test_deleting_in_a_mutation_frees_the_bytes(files):
    sid = files.action("files:store", data=b"x" * 1000)
    files.mutation("files:delete", id=sid)
    wait_for(lambda: files.backend.store.files.read(sid) is None)
    with pytest.raises(Exception, match="no such file"):
        files.mutation("files:delete", id=sid)


def test_metadata_queries_are_reactive(files):
    sid = files.action("files:store", data=b"live")
    sub = files.subscribe("files:files", {})
    wait_for(lambda: sub.value is not None and len(sub.value) == 1)
    files.mutation("files:delete", id=sid)
    wait_for(lambda: sub.value == [])
    sub.close()


def test_methods_of_other_function_kinds_are_refused(files):
    with pytest.raises(Exception, match=r"generate_upload_url\(\) is not available in a query"):
        files.query("files:query_upload_url")
    with pytest.raises(Exception, match=r"store\(\) is not available in a mutation"):
        files.mutation("files:mutation_store")
    with pytest.raises(Exception, match="not a storage id"):
        files.query("files:metadata", id="nope")


_KILLED_CHILD = """
import os, signal, sys
import kernel_ext
c = kernel_ext.connect(sys.argv[1])
c.load_functions(sys.argv[2])
store = c.backend.store
def killed(fn):  # the file is durable; the process dies before the row commits
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
store.mutate = killed
c.action("files:store", data=b"orphan bytes")
"""


def _file_keys(c: Any) -> list[str]:
    files = c.backend.store.files
    folder = getattr(files, "folder", None)
    if folder is not None:
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    with c.backend.store.persistence.pool.get() as conn:  # PostgreSQL
        return sorted(k for (k,) in conn.execute("SELECT DISTINCT key FROM convex_files"))


def test_killed_between_file_and_commit_leaves_nothing_after_reopen(
    durable_store_url, tmp_path, monkeypatch
):
    store_url = durable_store_url
    import subprocess
    import sys

    from kernel_ext.persistence import files as files_module

    child = tmp_path / "child.py"
    child.write_text(_KILLED_CHILD)
    done = subprocess.run(
        [sys.executable, str(child), store_url, str(APP)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -9 and "written" in done.stdout, done.stderr
    # PostgreSQL spares young files (another process's upload may be about to commit).
    monkeypatch.setattr(files_module, "ORPHAN_AGE_S", -60)
    c = kernel_ext.connect(store_url)
    try:
        c.load_functions(APP)
        assert c.query("files:files") == []
        assert _file_keys(c) == []
    finally:
        c.close()


def test_orphan_is_there_until_the_sweep(tmp_path):
    """The crash test above is not vacuous: the killed child's file is on disk."""
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    import subprocess
    import sys

    child = tmp_path / "child.py"
    child.write_text(_KILLED_CHILD)
    subprocess.run(
        [sys.executable, str(child), store_url, str(APP)], capture_output=True, timeout=60
    )
    folder = tmp_path / "store.db.files"
    assert [p for p in folder.iterdir() if not p.name.startswith(".")]


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

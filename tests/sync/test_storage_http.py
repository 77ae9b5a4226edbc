"""File storage served by `python -m kernel_ext serve`: the official Python client gets an
upload URL from a mutation, uploads with urllib, and downloads through `get_url`."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

from sync_peers import run_python_client

STORAGE_APP = Path(__file__).parent.parent / "fixtures" / "storage_app"


def test_official_client_uploads_and_downloads(server_factory, tmp_path):
    server = server_factory()
    server.stop()
    server.app = STORAGE_APP
    server.start()
    out = run_python_client(
        tmp_path,
        server.url,
        """
        import urllib.request
        c = ConvexClient(URL)
        upload = c.mutation("files:upload_url")
        emit("upload", upload)
        request = urllib.request.Request(
            upload, data=b"%PDF-1.7 bytes" * 1000, method="POST",
            headers={"Content-Type": "application/pdf"})
        with urllib.request.urlopen(request, timeout=30) as response:
            sid = json.loads(response.read())["storageId"]
        emit("sid", sid)
        emit("meta", c.query("files:metadata", {"id": sid}))
        emit("url", c.query("files:url", {"id": sid}))
        """,
    )
    data = b"%PDF-1.7 bytes" * 1000
    assert out["upload"].startswith(server.url + "/api/storage/upload?token=")
    assert out["meta"] == {
        "_id": out["sid"],
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": float(len(data)),
        "contentType": "application/pdf",
    }
    assert out["url"] == f"{server.url}/api/storage/{out['sid']}"
    with urllib.request.urlopen(out["url"], timeout=30) as response:
        assert response.read() == data
        assert response.headers["Content-Type"] == "application/pdf"
    # Single-use: the same URL again is refused.
    request = urllib.request.Request(out["upload"], data=b"again", method="POST")
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a second upload with the same URL was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403
        assert json.loads(exc.read())["code"] == "InvalidUploadUrl"
    # A file that does not exist: 404.
    missing = out["url"][:-3] + ("aaa" if not out["url"].endswith("aaa") else "bbb")
    try:
        urllib.request.urlopen(missing, timeout=30)
        raise AssertionError("a missing file was served")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404

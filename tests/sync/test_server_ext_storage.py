"""File storage inside Jupyter: the server extension's upload and download routes under
`<base_url>convex/api/storage/`, behind Jupyter's authentication, and the URLs that
`ctx.storage` gives out there (also to a kernel connected to the shared store)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_server_ext import run, start_jupyter, start_kernel

STORAGE_APP = Path(__file__).parent.parent / "fixtures" / "storage_app"


@pytest.fixture
def jupyter(tmp_path: Path):
    process, server = start_jupyter(tmp_path, functions=STORAGE_APP)
    yield server
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(15)


def call(base: str, token: str, kind: str, path: str, **args):
    """A function's value, called through the extension's HTTP API with Jupyter's token."""
    body = json.dumps({"path": path, "args": args}).encode()
    request = urllib.request.Request(
        f"{base}/convex/api/{kind}", data=body, method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["value"]


def send(url: str, data: bytes | None = None, **headers: str):
    """(status, body, headers) of a GET (or a POST of `data`)."""
    request = urllib.request.Request(
        url, data=data, method="GET" if data is None else "POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), error.headers


def test_upload_and_download_through_the_extension(jupyter):
    base, token, _ = jupyter
    auth = {"Authorization": f"token {token}"}
    upload = call(base, token, "mutation", "files:upload_url")
    assert upload.startswith(f"{base}/convex/api/storage/upload?token=")

    # Without Jupyter's login: refused, and the URL stays usable.
    status, _, _ = send(upload, b"nope", **{"Content-Type": "text/plain"})
    assert status == 403
    # With Jupyter's token in the header (the URL's `token` is the upload's, not Jupyter's).
    data = b"%PDF-1.7 " * 5000
    status, body, _ = send(upload, data, **auth, **{"Content-Type": "application/pdf"})
    assert status == 200, body
    sid = json.loads(body)["storageId"]
    # Single-use.
    status, body, _ = send(upload, b"again", **auth)
    assert status == 403 and json.loads(body)["code"] == "InvalidUploadUrl"

    assert call(base, token, "query", "files:metadata", id=sid) == {
        "_id": sid,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": float(len(data)),
        "contentType": "application/pdf",
    }
    url = call(base, token, "query", "files:url", id=sid)
    assert url == f"{base}/convex/api/storage/{sid}"
    status, body, headers = send(url, **auth)
    assert status == 200 and body == data
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Length"] == str(len(data))
    # Downloads need Jupyter's login too.
    assert send(url)[0] == 403
    # A file that does not exist, and a deleted one: 404.
    call(base, token, "mutation", "files:delete", id=sid)
    assert send(url, **auth)[0] == 404
    assert send(f"{base}/convex/api/storage/nosuchfile", **auth)[0] == 404


def test_a_kernel_gets_urls_that_work_through_the_extension(jupyter, tmp_path):
    base, token, _ = jupyter
    sid = call(base, token, "action", "files:store", data={"$bytes": "aGVsbG8="})
    kernel = start_kernel(base, token, tmp_path / "runtime")
    try:
        run(kernel, "%load_ext kernel_ext")
        code = (
            "import os, urllib.request\n"
            f"url = convex.query('files:url', id={sid!r})\n"
            "request = urllib.request.Request(url, headers={'Authorization': "
            "'token ' + os.environ['CONVEX_JUPYTER_TOKEN']})\n"
            "with urllib.request.urlopen(request, timeout=10) as response:\n"
            "    got = response.read()\n"
        )
        run(kernel, code)
        assert run(kernel, "", "url") == repr(f"{base}/convex/api/storage/{sid}")
        assert run(kernel, "", "got") == repr(b"hello")
    finally:
        kernel.shutdown()
        kernel.stop_channels()

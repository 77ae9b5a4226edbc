"""The standalone server keeps credentials out of URLs and out of its logs."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest
from polling import wait_for

from kernel_ext.functions.uris import scrub_uri

KEY = "thread-admin-key"  # ThreadServer's admin key


def post(url: str, body: dict[str, object], **headers: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **headers},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            raw = error.read()
            return error.code, json.loads(raw) if raw.startswith(b"{") else {}


def test_the_admin_key_is_taken_from_headers_only_and_never_logged(thread_server_factory, caplog):
    caplog.set_level(logging.INFO)
    server = thread_server_factory()
    secret_call = {"path": "counter:secret", "args": {}}
    status, answer = post(f"{server.url}/api/query", secret_call, Authorization=f"Convex {KEY}")
    assert (status, answer["value"]) == (200, "internal data")
    status, answer = post(f"{server.url}/api/query?adminKey={KEY}", secret_call)
    assert status == 401 and "Authorization: Convex <admin key>" in str(answer["message"])
    for path in ("/api/nope", "/elsewhere"):
        assert post(f"{server.url}{path}?x=1&adminKey={KEY}", secret_call)[0] == 404
    wait_for(lambda: "/elsewhere" in caplog.text and "/api/nope" in caplog.text)
    assert "adminKey=[secret]" in caplog.text
    assert KEY not in caplog.text


@pytest.mark.parametrize(
    ("uri", "logged"),
    [
        ("/api/query", "/api/query"),
        ("/api/x?adminKey=k&path=a:b", "/api/x?adminKey=[secret]&path=a:b"),
        ("/x?token=t&_xsrf=2|a&auth=z&flag", "/x?token=[secret]&_xsrf=[secret]&auth=[secret]&flag"),
        ("/x?client_secret=s&PASSWORD=p", "/x?client_secret=[secret]&PASSWORD=[secret]"),
    ],
)
def test_scrub_uri(uri, logged):
    assert scrub_uri(uri) == logged


def test_a_request_refused_before_its_handler_prepares_is_logged_without_the_key(
    thread_server_factory, caplog
):
    """Tornado answers a method it does not know with 405 before `prepare()`: the logged
    URI is scrubbed all the same."""
    caplog.set_level(logging.INFO)
    server = thread_server_factory()
    for path in ("/api/query", "/api/sync", "/elsewhere"):
        request = urllib.request.Request(f"{server.url}{path}?adminKey={KEY}", method="PROPFIND")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 405
        info.value.close()
    wait_for(lambda: caplog.text.count("PROPFIND") >= 3)
    assert "adminKey=[secret]" in caplog.text
    assert KEY not in caplog.text

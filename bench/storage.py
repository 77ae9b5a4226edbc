"""File storage: upload and download throughput of a 50 MiB file vs a plain file copy.

Store side, on a fresh SQLite store file under `bench/.data/tmp/` (its files folder beside
it), `ROUNDS` rounds each, median counted:
- action upload: `client.action("bench:store", data=...)` running `ctx.storage.store(data)`
  (the bytes hashed, written, fsynced, then the `_storage` row committed);
- action download: `client.action("bench:get", id=...)` running `ctx.storage.get(id)`;
- HTTP upload: a mutation's `ctx.storage.generate_upload_url()`, then one POST of the bytes to
  that URL (the embedded store's files server on 127.0.0.1, `http.client`);
- HTTP download: GET of `ctx.storage.get_url(id)`, the whole body read.

Anchor, same run, same bytes: `shutil.copyfile(src, dst)` + `os.fsync(dst)` of a 50 MiB file
already in the OS page cache (what storing a file must at least cost: read it and make a
durable copy). A plain read of the source file is printed for information (downloads write
nothing durable). Ratios are store throughput / copy throughput: 1 means as fast as the copy.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import kernel_ext
from bench._common import DATA_DIR, header
from kernel_ext import action, mutation, query, v

SIZE: Final = 50 * 1024 * 1024
ROUNDS: Final = 5
MIB: Final = 1024 * 1024


@action(args={"data": v.bytes()})
def store(ctx: Any, data: bytes) -> str:
    """Store the bytes; their storage id."""
    return str(ctx.storage.store(data, "application/octet-stream"))


@action(args={"id": v.string()})
def get(ctx: Any, id: str) -> Any:
    """The stored bytes."""
    return ctx.storage.get(id)


@action(args={"id": v.string()})
def delete(ctx: Any, id: str) -> None:
    """Free the file."""
    ctx.storage.delete(id)


@mutation
def upload_url(ctx: Any) -> str:
    """A single-use upload URL."""
    return str(ctx.storage.generate_upload_url())


@query(args={"id": v.string()})
def url(ctx: Any, id: str) -> Any:
    """The file's download URL."""
    return ctx.storage.get_url(id)


def _median_mb_s(run: Callable[[], None]) -> float:
    """Run `ROUNDS` times; the median throughput in MiB/s."""
    seconds = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t0)
    return SIZE / MIB / statistics.median(seconds)


def _connection(target: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(target)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=120), path


def _post(target: str, data: bytes) -> str:
    connection, path = _connection(target)
    try:
        connection.request(
            "POST", path, body=data, headers={"Content-Type": "application/octet-stream"}
        )
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:200])
        return str(json.loads(body)["storageId"])
    finally:
        connection.close()


def _get(target: str) -> int:
    connection, path = _connection(target)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.status
        size = 0
        while chunk := response.read(1 << 20):
            size += len(chunk)
        return size
    finally:
        connection.close()


def _copy_anchor(folder: Path, data: bytes) -> tuple[float, float]:
    """(copy + fsync MiB/s, plain read MiB/s) of a 50 MiB file in the page cache."""
    source, copy = folder / "source.bin", folder / "copy.bin"
    source.write_bytes(data)

    def copy_file() -> None:
        shutil.copyfile(source, copy)
        fd = os.open(copy, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        copy.unlink()

    def read_file() -> None:
        assert len(source.read_bytes()) == SIZE

    copy_mb_s = _median_mb_s(copy_file)
    read_mb_s = _median_mb_s(read_file)
    source.unlink()
    return copy_mb_s, read_mb_s


def main() -> None:
    header(f"storage: a {SIZE // MIB} MiB file through ctx.storage and its URLs vs a file copy")
    folder = DATA_DIR / "tmp" / "storage"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    data = os.urandom(SIZE)
    copy_mb_s, read_mb_s = _copy_anchor(folder, data)
    client = kernel_ext.connect(folder / "store.db")
    for name, function in [("store", store), ("get", get), ("delete", delete),
                           ("upload_url", upload_url), ("url", url)]:  # fmt: skip
        client.backend.register(f"bench:{name}", function)
    try:
        ids: list[str] = []
        up_action = _median_mb_s(lambda: ids.append(client.action("bench:store", data=data)))
        sid = ids[-1]

        def download_action() -> None:
            assert len(client.action("bench:get", id=sid)) == SIZE

        down_action = _median_mb_s(download_action)
        up_http = _median_mb_s(lambda: ids.append(_post(client.mutation("bench:upload_url"), data)))
        target_url = client.query("bench:url", id=ids[-1])
        down_http = _median_mb_s(lambda: _check(_get(target_url)))
        assert client.action("bench:get", id=ids[-1]) == data
        for storage_id in ids:
            client.action("bench:delete", id=storage_id)
    finally:
        client.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"  anchor: copyfile + fsync {copy_mb_s:8.1f} MiB/s   (plain read {read_mb_s:8.1f} MiB/s)"
    )
    rows = [("action upload   (ctx.storage.store)", up_action),
            ("action download (ctx.storage.get)  ", down_action),
            ("HTTP upload     (upload URL, POST) ", up_http),
            ("HTTP download   (file URL, GET)    ", down_http)]  # fmt: skip
    for label, mb_s in rows:
        print(f"  {label} {mb_s:8.1f} MiB/s   / copy {mb_s / copy_mb_s:5.2f}", flush=True)


def _check(size: int) -> None:
    assert size == SIZE, size


if __name__ == "__main__":
    main()

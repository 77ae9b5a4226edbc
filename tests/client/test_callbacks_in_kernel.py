"""`on_change` callbacks in a real Jupyter kernel: what they print lands under the cell that
registered them (issue 8), though they run on the client's callback thread."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

REGISTER = """
import kernel_ext, threading
from kernel_ext import query, mutation, v
convex = kernel_ext.connect("memory")

@query(args={})
def count(ctx):
    return len(ctx.db.query("items").collect())

@mutation(args={})
def add(ctx):
    ctx.db.insert("items", {})

convex.register("t:count", count)
convex.register("t:add", add)
sub = convex.subscribe("t:count")
sub.value
called = threading.Event()

def report(n):
    print(f"count is now {n}")
    called.set()

sub.on_change(report)
"""
MUTATE = """convex.mutation("t:add"); assert called.wait(10)"""


@pytest.fixture
def kernel() -> Iterator[Any]:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=60)
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def run(client: Any, code: str) -> str:
    """Execute `code` as a cell; returns its message id once the kernel replied ok."""
    msg_id = client.execute(code)
    reply = client.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = client.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return str(msg_id)


def test_on_change_output_lands_in_the_registering_cell(kernel):
    register = run(kernel, REGISTER)
    mutate = run(kernel, MUTATE)
    streams: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while "count is now 1" not in "".join(streams.values()):
        assert time.monotonic() < deadline, f"no output from the callback: {streams}"
        try:
            message = kernel.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["msg_type"] == "stream":
            parent = message["parent_header"].get("msg_id", "")
            streams[parent] = streams.get(parent, "") + message["content"]["text"]
    assert "count is now 1" in streams.get(register, ""), streams
    assert "count is now" not in streams.get(mutate, "")

"""kernel_ext.connect("http://...") against a real server process."""

from __future__ import annotations

import signal
import threading
import time

import pytest

import kernel_ext
from kernel_ext import ConvexError
from kernel_ext.client.remote import RemoteClient, RemoteFunctionError


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_query_mutation_action_and_errors(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url) as client:
        assert isinstance(client, RemoteClient)
        assert client.query("counter:get", name="r1") == 0.0
        assert client.mutation("counter:inc", name="r1", by=2) == 2.0
        assert client.query("counter:get", {"name": "r1"}) == 2.0
        assert client.action("counter:inc_many", name="r1", times=3) == [3.0, 4.0, 5.0]
        with pytest.raises(ConvexError) as info:
            client.mutation("counter:fail_after_write", name="r2")
        assert info.value.data == {"code": "ROLLED_BACK", "name": "r2"}
        assert client.query("counter:get", name="r2") == 0.0
        with pytest.raises(RemoteFunctionError, match="Could not find public function"):
            client.query("counter:secret")


def test_admin_key_reaches_internal_functions(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as admin:
        assert admin.query("counter:secret") == "internal data"


def test_subscription_sees_other_clients_and_reads_own_writes(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url) as a, kernel_ext.connect(server.url) as b:
        sub = a.subscribe("counter:get", name="shared")
        assert sub.value == 0.0
        changed = threading.Event()
        sub.on_change(lambda value: changed.set())
        b.mutation("counter:inc", name="shared", by=5)
        assert changed.wait(10)
        assert sub.value == 5.0
        a.mutation("counter:inc", name="shared", by=1)
        assert sub.value == 6.0  # read your writes: reflected when the mutation returned


def test_reconnects_after_server_restart(server_factory):
    server = server_factory()
    client = kernel_ext.connect(server.url)
    try:
        statuses = []
        client.on_status(statuses.append)
        sub = client.subscribe("counter:get", name="again")
        assert sub.value == 0.0
        server.stop(signal.SIGTERM)
        wait_for(lambda: "reconnecting" in statuses)
        server.start()
        with kernel_ext.connect(server.url) as other:
            other.mutation("counter:inc", name="again", by=3)
        wait_for(lambda: sub.value == 3.0, timeout=20)
        wait_for(lambda: statuses[-1] == "connected")
        assert client.mutation("counter:inc", name="again", by=1) == 4.0
    finally:
        client.close()


def test_live_table_shows_reconnecting_then_catches_up(server_factory):
    from widgets import LiveTable

    server = server_factory()
    client = kernel_ext.connect(server.url)
    try:
        table = LiveTable(client, "counter:get", {"name": "w"})
        table.send = lambda *a, **k: None
        wait_for(lambda: table.status == "ready")
        server.stop(signal.SIGTERM)
        wait_for(lambda: table.status == "reconnecting")
        server.start()
        with kernel_ext.connect(server.url) as other:
            other.mutation("counter:inc", name="w", by=2)
        wait_for(lambda: table.status == "ready" and table.model.rows == [2.0], timeout=20)
        table.close()
    finally:
        client.close()

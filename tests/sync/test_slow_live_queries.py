"""A slow live query delays only its own subscribers (issue 8, "Nobody can stall the
server"), over a real server: another client's updates, and the Transition that completes a
third client's mutation, arrive while it is still running."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from polling import wait_for
from sync_peers import RawClient, ServerProcess

HOSTILE = Path(__file__).parent / "hostile_app"


@pytest.fixture
def server(tmp_path):
    started = ServerProcess(tmp_path / "store.db", app=HOSTILE).start()
    yield started
    started.stop(signal.SIGKILL)


def test_a_slow_live_query_delays_only_its_own_subscribers(server, tmp_path):
    gate = tmp_path / "gate"
    waiting = tmp_path / "gate.waiting"
    slow = RawClient(server.url).connect()
    # Its first run computes for 0.3 s: from then on it runs in the slow lane.
    added = slow.add(0, "hostile:gated", {"gate": str(gate), "warmup": 0.3})
    assert added["modifications"][0]["value"] == 0
    fast = RawClient(server.url).connect()
    assert fast.add(0, "hostile:count")["modifications"][0]["value"] == 0
    writer = RawClient(server.url).connect()
    try:
        writer.send({"type": "Mutation", "requestId": 0, "udfPath": "hostile:write", "args": [{}]})
        # The gated query re-runs and waits for the gate (up to 9 s), which stays closed
        # until the end: everything below happens while it is blocked. Without the lanes
        # each of these waited for it (or for the 10 s fallback).
        assert writer.expect("MutationResponse", timeout=8)["success"] is True
        writer.expect("Transition", timeout=8)  # the mutation is complete for its client
        updated = fast.expect("Transition", timeout=8)["modifications"]
        assert [m["value"] for m in updated] == [1]
        wait_for(waiting.exists, timeout=8)  # the slow query did start its re-run
        assert not gate.exists()  # ... and it cannot have finished it
    finally:
        gate.touch()
    # Released, its subscriber gets the new result.
    updated = slow.expect("Transition", timeout=15)["modifications"]
    assert [m["value"] for m in updated] == [1]

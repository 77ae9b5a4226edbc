"""A re-sent mutation is answered from its durable receipt, never run twice: across server
restarts (SIGTERM and SIGKILL) and over a dropped socket, with the project's own remote client
and with raw sessions that re-send a request id."""

from __future__ import annotations

import signal
import threading
import uuid
from typing import Any

from polling import wait_for
from sync_peers import RawClient

import kernel_ext
from kernel_ext.sync.messages import decode_ts


class _Writer(threading.Thread):
    """Increments one counter through a remote client until stopped; counts the
    acknowledged increments (each `mutation()` that returned)."""

    def __init__(self, client: Any, name: str) -> None:
        super().__init__(daemon=True)
        self.client, self.name = client, name
        self.acknowledged = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.client.mutation("counter:inc", {"name": self.name})
            except Exception as exc:  # an unknown outcome: the test fails below
                self.errors.append(exc)
                return
            self.acknowledged += 1


def test_remote_client_mutations_apply_once_across_restarts(server_factory):
    server = server_factory()
    client = kernel_ext.connect(server.url)
    writer = _Writer(client, "restarts")
    writer.start()
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL) * 3:
            before = writer.acknowledged
            wait_for(lambda b=before: writer.acknowledged >= b + 15 or writer.errors, 60)
            server.stop(sig)
            server.start()
        before = writer.acknowledged
        wait_for(lambda: writer.acknowledged >= before + 15 or writer.errors, 60)
    finally:
        writer.stopping.set()
        writer.join(60)
        client.close()
    assert not writer.is_alive() and writer.errors == []
    stored = server.call("query", "counter:get", {"name": "restarts"})
    assert stored == float(writer.acknowledged)


def _mutation(session: str, request_id: int, path: str, args: dict[str, Any]) -> list[Any]:
    return [
        {
            "type": "Connect",
            "sessionId": session,
            "connectionCount": 0,
            "lastCloseReason": "InitialConnect",
            "clientTs": 0,
        },
        {"type": "Mutation", "requestId": request_id, "udfPath": path, "args": [args]},
    ]


def _send_all(client: RawClient, messages: list[Any]) -> None:
    for message in messages:
        client.send(message)


def test_a_mutation_resent_after_a_restart_is_answered_from_its_receipt(server_factory):
    server = server_factory()
    session = str(uuid.uuid4())
    first = RawClient(server.url)
    _send_all(first, _mutation(session, 0, "counter:inc", {"name": "once"}))
    answered = first.expect("MutationResponse")
    assert answered["success"] is True
    first.close()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        server.stop(sig)
        server.start()
        again = RawClient(server.url)
        _send_all(again, _mutation(session, 0, "counter:inc", {"name": "once"}))
        replay = again.expect("MutationResponse")
        assert replay["success"] is True and replay["result"] == answered["result"]
        assert decode_ts(replay["ts"]) >= decode_ts(answered["ts"])
        again.close()
    assert server.call("query", "counter:get", {"name": "once"}) == 1.0
    # Another request id of the same session, or the same id of another session, runs.
    other = RawClient(server.url)
    _send_all(other, _mutation(session, 1, "counter:inc", {"name": "once"}))
    assert other.expect("MutationResponse")["success"] is True
    other.close()
    stranger = RawClient(server.url)
    _send_all(stranger, _mutation(str(uuid.uuid4()), 0, "counter:inc", {"name": "once"}))
    assert stranger.expect("MutationResponse")["success"] is True
    assert server.call("query", "counter:get", {"name": "once"}) == 3.0


def test_a_mutation_resent_over_a_new_socket_while_it_runs_runs_once(server_factory):
    server = server_factory()
    session = str(uuid.uuid4())
    args = {"name": "dropped", "seconds": 0.5}
    dropped = RawClient(server.url)
    _send_all(dropped, _mutation(session, 0, "slow:inc_slowly", args))
    dropped.close()  # while the mutation runs: the client never hears of it
    again = RawClient(server.url)
    _send_all(again, _mutation(session, 0, "slow:inc_slowly", args))
    replay = again.expect("MutationResponse")
    assert replay["success"] is True and replay["result"] == 1.0
    assert server.call("query", "counter:get", {"name": "dropped"}) == 1.0

"""Bad input over real sockets: each bad message gets an error for its own connection, while
the server keeps serving everyone else and loses nothing it committed."""

from __future__ import annotations

import contextlib
import json
import random
import signal

import pytest
from sync_peers import RawClient, ServerProcess
from websockets.exceptions import ConnectionClosed

from kernel_ext.sync.server import MAX_MESSAGE_SIZE

CONNECT = {
    "type": "Connect",
    "sessionId": "fuzz",
    "connectionCount": 0,
    "lastCloseReason": None,
    "clientTs": 0,
}
ADD = {
    "type": "ModifyQuerySet",
    "baseVersion": 0,
    "newVersion": 1,
    "modifications": [
        {"type": "Add", "queryId": 0, "udfPath": "counter:get", "args": [{"name": "fuzz"}]}
    ],
}
MUTATION = {
    "type": "Mutation",
    "requestId": 0,
    "udfPath": "counter:inc",
    "args": [{"name": "fuzz"}],
}

# Each case: the frames sent after Connect (None: not even Connect) and what must appear in
# the FatalError.
FATAL_CASES = {
    "invalid json": ["{not json", "JSON"],
    "not an object": ["[1, 2, 3]", "object"],
    "unknown type": [{"type": "Launch"}, "Unknown message type"],
    "binary garbage": [bytes(range(256)), "JSON"],
    "wrong field type": [{**MUTATION, "requestId": "zero"}, "requestId"],
    "negative id": [{**MUTATION, "requestId": -1}, "requestId"],
    "args not an array": [{**MUTATION, "args": {"name": "x"}}, "args"],
    "bad path": [{**MUTATION, "udfPath": "a:b:c"}, "function path"],
    "null modifications": [{**ADD, "modifications": None}, "modifications"],
    "query set version mismatch": [
        {**ADD, "baseVersion": 5, "newVersion": 6},
        "BaseVersionMismatch",
    ],
    "query set version not increasing": [{**ADD, "newVersion": 0}, "newVersion"],
    "identity version mismatch": [
        {"type": "Authenticate", "baseVersion": 3, "tokenType": "None"},
        "IdentityVersionMismatch",
    ],
    "bad token type": [
        {"type": "Authenticate", "baseVersion": 0, "tokenType": "Root", "value": "x"},
        "tokenType",
    ],
    "duplicate query id": [{**ADD, "modifications": ADD["modifications"] * 2}, "already"],
    "remove unknown query": [
        {**ADD, "modifications": [{"type": "Remove", "queryId": 4}]},
        "not in the query set",
    ],
    "second connect": [CONNECT, "twice"],
    "deep nesting": [{**MUTATION, "args": [{"x": json.loads("[" * 200 + "]" * 200)}]}, "nested"],
    "deeper than the parser": ["[" * 100_000 + "]" * 100_000, "JSON"],
    "bad timestamp": [{**CONNECT, "maxObservedTimestamp": "@@@"}, "maxObservedTimestamp"],
}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("fuzz") / "store.db").start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def witnessed(fuzz_server, request):
    """The server, with a committed write and a subscribed bystander; after the test, the
    bystander must still work and the write must still be there."""
    server, name = fuzz_server, f"witness-{request.node.name}"
    assert server.call("mutation", "counter:inc", {"name": name}) == 1.0
    witness = RawClient(server.url).connect()
    assert witness.add(0, "counter:get", {"name": name})["modifications"][0]["value"] == 1.0
    yield server
    response, transition = witness.mutation("counter:inc", {"name": name})
    assert response["success"] is True
    assert transition["modifications"][0]["value"] == 2.0
    assert server.call("query", "counter:get", {"name": name}) == 2.0


def closed_with(client: RawClient) -> int | None:
    """Wait for the server to close the socket; returns the close code it sent."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            client.recv(10)
    return None if info.value.rcvd is None else info.value.rcvd.code


@pytest.mark.parametrize("case", sorted(FATAL_CASES))
def test_each_bad_message_gets_a_fatal_error_for_its_connection(witnessed, case):
    frame, fragment = FATAL_CASES[case]
    client = RawClient(witnessed.url)
    client.send(CONNECT)
    client.send(frame)
    error = client.expect("FatalError")
    assert fragment in error["error"]
    assert "Traceback" not in error["error"]
    assert closed_with(client) == 1002


def test_a_message_before_connect(witnessed):
    client = RawClient(witnessed.url)
    client.send(MUTATION)
    assert "Connect" in client.expect("FatalError")["error"]
    assert closed_with(client) == 1002


def test_a_huge_message_closes_that_connection(witnessed):
    client = RawClient(witnessed.url).connect()
    # The server may reset the connection before the client has finished sending.
    with contextlib.suppress(OSError, ConnectionClosed):
        client.send(json.dumps({**MUTATION, "args": [{"name": "x" * (MAX_MESSAGE_SIZE + 10)}]}))
    # Tornado sends 1009 (message too big) and drops the connection at once, so the close
    # frame may be lost while the client is still sending.
    assert closed_with(client) in (1009, None)


def test_large_but_allowed_values_only_fail_their_call(witnessed):
    client = RawClient(witnessed.url).connect()
    client.send({**MUTATION, "udfPath": "counter:inc", "args": [{"name": "y" * 2_000_000}]})
    response = client.expect("MutationResponse", skip=("Ping", "Transition"))
    assert response["success"] is False  # a 2 MB document is too large to store
    client.send({**MUTATION, "requestId": 1, "args": [{"name": {"$integer": "AA=="}}]})
    response = client.expect("MutationResponse", skip=("Ping", "Transition"))
    assert response["success"] is False and "ArgumentValidationError" in response["result"]
    client.send({**MUTATION, "requestId": 2, "args": [{"name": "ok"}, {"extra": 1}]})
    assert client.expect("MutationResponse", skip=("Ping", "Transition"))["success"] is False
    client.send({**MUTATION, "requestId": 3, "args": [{"name": "ok"}]})
    assert client.expect("MutationResponse", skip=("Ping", "Transition"))["success"] is True


def test_abrupt_disconnects_mid_request(witnessed):
    for _ in range(5):
        client = RawClient(witnessed.url).connect()
        client.send(ADD)
        client.send({**MUTATION, "args": [{"name": "abrupt"}]})
        client.ws.socket.close()  # no close frame, no goodbye
    check = RawClient(witnessed.url).connect()
    assert check.add(0, "counter:get", {"name": "abrupt"})["type"] == "Transition"


def _mutate(message: object, rng: random.Random) -> object:
    """A random structural mutation of a JSON value."""
    choices = [None, True, -1, 2**40, 1.5, "", "x", [], {}, [1], {"$integer": "??"}]
    if isinstance(message, dict) and message and rng.random() < 0.7:
        key = rng.choice(sorted(message))
        copy = dict(message)
        if rng.random() < 0.3:
            del copy[key]
        else:
            copy[key] = _mutate(copy[key], rng)
        return copy
    if isinstance(message, list) and message and rng.random() < 0.7:
        copy = list(message)
        i = rng.randrange(len(copy))
        copy[i] = _mutate(copy[i], rng)
        return copy
    return rng.choice(choices)


def test_random_mutations_of_valid_messages(witnessed):
    """Every mutated message is answered (a response, a Transition or a FatalError) and the
    server never crashes; connections that broke the protocol are closed."""
    rng = random.Random(1234)
    templates = [
        ADD,
        MUTATION,
        {"type": "Action", "requestId": 0, "udfPath": "values:echo_action", "args": [{"x": 1}]},
        {"type": "Authenticate", "baseVersion": 0, "tokenType": "None"},
    ]
    fatal = answered = 0
    for _ in range(60):
        client = RawClient(witnessed.url).connect()
        client.send(_mutate(rng.choice(templates), rng))
        try:
            message = client.recv(10)
        except ConnectionClosed:
            continue
        if message["type"] == "FatalError":
            fatal += 1
            assert closed_with(client) == 1002
        else:
            answered += 1
            assert message["type"] in {
                "Transition",
                "MutationResponse",
                "ActionResponse",
                "AuthError",
            }
        client.close()
    assert fatal > 10 and answered > 0

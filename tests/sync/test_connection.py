"""The pump of one WebSocket (`SyncConnection`) over a real backend, without a socket: its
frames are collected from `send_text`. Covers when Transitions go out relative to the engine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading

import orjson
import pytest

from kernel_ext import mutation, query, v
from kernel_ext.engine.store import Store
from kernel_ext.functions.backend import Backend
from kernel_ext.persistence.sqlite import SqlitePersistence
from kernel_ext.sync import connection as connection_module
from kernel_ext.sync.auth import ServerAuthenticator
from kernel_ext.sync.connection import SyncConnection
from kernel_ext.sync.runner import BackendRunner


@pytest.fixture
def backend():
    backend = Backend(Store(SqlitePersistence(None)))
    gate = threading.Event()
    gate.set()

    @query(args={})
    def slow(ctx):
        """Reads the counter; blocks while the gate is closed (a live query that lags)."""
        doc = ctx.db.query("counter").first()
        gate.wait(10)
        return 0.0 if doc is None else doc["n"]

    @mutation(args={"n": v.number()})
    def put(ctx, n):
        doc = ctx.db.query("counter").first()
        if doc is None:
            ctx.db.insert("counter", {"n": n})
        else:
            ctx.db.patch(doc["_id"], {"n": n})

    backend.register("c:slow", slow)
    backend.register("c:put", put)
    backend.gate = gate
    yield backend
    gate.set()
    backend.close()


def _run(coroutine):
    """asyncio.run on a thread of its own: the main thread may already run a loop (the
    browser tests' Playwright does, for the whole session)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=60)


async def _session(backend):
    """A connected SyncConnection and the list its frames (decoded) land in."""
    frames: list[dict] = []
    executor = concurrent.futures.ThreadPoolExecutor(2)
    conn = SyncConnection(
        BackendRunner(backend),
        ServerAuthenticator("admin-key"),
        send_text=lambda text: frames.append(orjson.loads(text)),
        close=lambda code, reason: frames.append({"type": "closed", "code": code}),
        executor=executor,
        action_executor=executor,
    )
    conn.receive_text(
        orjson.dumps(
            {
                "type": "Connect",
                "sessionId": "s1",
                "connectionCount": 0,
                "lastCloseReason": "InitialConnect",
                "clientTs": 0,
            }
        )
    )
    return conn, frames, executor


async def _until(frames, predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(predicate(f) for f in frames):
        assert asyncio.get_running_loop().time() < deadline, frames
        await asyncio.sleep(0.005)
    return next(f for f in frames if predicate(f))


def _subscribe(conn):
    conn.receive_text(
        orjson.dumps(
            {
                "type": "ModifyQuerySet",
                "baseVersion": 0,
                "newVersion": 1,
                "modifications": [{"type": "Add", "queryId": 0, "udfPath": "c:slow", "args": [{}]}],
            }
        )
    )


def _mutate(conn, request_id, n):
    conn.receive_text(
        orjson.dumps(
            {"type": "Mutation", "requestId": request_id, "udfPath": "c:put", "args": [{"n": n}]}
        )
    )


def _is_transition_with(value):
    return lambda f: (
        f["type"] == "Transition" and any(m.get("value") == value for m in f["modifications"])
    )


def test_a_transition_waits_for_the_live_queries_of_its_ts(backend):
    """After a mutation the client's Transition carries the query re-run at the mutation's ts
    (in the same Transition, not a later one)."""

    async def scenario():
        conn, frames, executor = await _session(backend)
        _subscribe(conn)
        await _until(frames, _is_transition_with(0.0))
        _mutate(conn, 1, 7.0)
        response = await _until(frames, lambda f: f["type"] == "MutationResponse")
        # The first Transition that reaches the mutation's ts already has the new result.
        transition = await _until(
            frames, lambda f: f["type"] == "Transition" and f["endVersion"]["ts"] == response["ts"]
        )
        assert frames.index(response) < frames.index(transition)
        assert _is_transition_with(7.0)(transition), transition
        conn.connection_lost()
        executor.shutdown()

    _run(scenario())


def test_a_lagging_live_query_delays_the_transition_only_up_to_the_limit(
    backend, monkeypatch, caplog
):
    monkeypatch.setattr(connection_module, "_MAX_WAIT", 0.3)

    async def scenario():
        conn, frames, executor = await _session(backend)
        _subscribe(conn)
        await _until(frames, _is_transition_with(0.0))
        backend.gate.clear()  # the next round blocks in c:slow
        _mutate(conn, 1, 1.0)
        response = await _until(frames, lambda f: f["type"] == "MutationResponse")
        started = asyncio.get_running_loop().time()
        # Sent anyway after the limit: the mutation's client must not wait forever.
        transition = await _until(
            frames, lambda f: f["type"] == "Transition" and f["endVersion"]["ts"] == response["ts"]
        )
        waited = asyncio.get_running_loop().time() - started
        assert 0.2 < waited < 8, waited  # _MAX_WAIT is 0.3 s; the rest is slack for CI
        assert transition["modifications"] == []  # the lagging query's result is not in it
        assert not any(_is_transition_with(1.0)(f) for f in frames)
        backend.gate.set()  # the round finishes: its result follows in a later Transition
        await _until(frames, _is_transition_with(1.0))
        conn.connection_lost()
        executor.shutdown()

    with caplog.at_level(logging.WARNING):
        _run(scenario())
    assert "live queries lag behind ts" in caplog.text

"""Contended mutations through a served store never fail for contention."""

from __future__ import annotations

import functools

from cpu_load import repeat_in_threads_under_load

import kernel_ext


def test_contended_increments_through_a_server_all_commit(server_factory):
    """4 remote clients x 2 threads x 25 increments of one counter, with a CPU-heavy process
    beside them: every increment commits (the server's mutations run serially after a few
    conflicting attempts) and the counter ends at 200 (plus the first increment)."""
    server = server_factory()
    clients = [kernel_ext.connect(server.url) for _ in range(4)]
    try:
        clients[0].mutation("contended:inc", name="hot")
        increments = [
            functools.partial(client.mutation, "contended:inc", name="hot") for client in clients
        ]
        assert repeat_in_threads_under_load(increments * 2, times=25) == []
        assert clients[0].query("contended:get", name="hot") == 201
    finally:
        for client in clients:
            client.close()

"""Contended mutations through a served store never fail for contention."""

from __future__ import annotations

import threading

from cpu_load import cpu_load

import kernel_ext


def test_contended_increments_through_a_server_all_commit(server_factory):
    """4 remote clients x 2 threads x 25 increments of one counter, with a CPU-heavy process
    beside them: every increment commits (the server's mutations run serially after a few
    conflicting attempts) and the counter ends at 200 (plus the first increment)."""
    server = server_factory()
    clients = [kernel_ext.connect(server.url) for _ in range(4)]
    errors: list[BaseException] = []
    try:
        clients[0].mutation("contended:inc", name="hot")

        def worker(client) -> None:
            try:
                for _ in range(25):
                    client.mutation("contended:inc", name="hot")
            except BaseException as exc:
                errors.append(exc)

        with cpu_load():
            threads = [threading.Thread(target=worker, args=(c,)) for c in clients * 2]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert clients[0].query("contended:get", name="hot") == 201
    finally:
        for client in clients:
            client.close()

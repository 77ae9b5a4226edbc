"""Tests of shared (PostgreSQL) stores take over a store's follower thread to decide
themselves when the other processes' commits are replayed."""

from __future__ import annotations

from typing import Any

__all__ = ["stop_follower"]


def stop_follower(store: Any) -> None:
    """Stop `store`'s follower thread (it replays nothing until the test says so); the store
    stays open."""
    store._closing.set()
    follower, store._follower = store._follower, None
    store._shared.interrupt_wait()
    follower.join(10)
    assert not follower.is_alive()
    store._closing.clear()

"""Mutation receipts on a real store: one run per key, results kept, bounds by count and age,
hidden from the table lists (the served behaviour is in tests/sync/test_mutation_receipts.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import kernel_ext
from kernel_ext import mutation, query
from kernel_ext.engine.store import MUTATION_RECEIPTS
from kernel_ext.errors import FunctionError
from kernel_ext.functions.receipts import MAX_RESULT_BYTES, MutationReceipts, receipt_key


@mutation
def bump(ctx, size: float = 0.0):
    doc = ctx.db.query("counts").first()
    if doc is None:
        ctx.db.insert("counts", {"n": 1.0})
        n = 1.0
    else:
        n = doc["n"] + 1.0
        ctx.db.patch(doc["_id"], {"n": n})
    return {"n": n, "pad": "x" * int(size)}


@query
def total(ctx):
    doc = ctx.db.query("counts").first()
    return 0.0 if doc is None else doc["n"]


@pytest.fixture
def client(tmp_path: Path):
    c = kernel_ext.connect(tmp_path / "store.db")
    c.backend.register("r:bump", bump)
    c.backend.register("r:total", total)
    yield c
    c.close()


def _call(client, key: str | None, size: float = 0.0):
    return client.backend.call_with_ts(
        "r:bump", {"size": size}, kind="mutation", identity=None, public_only=False, receipt=key
    )


def _stored_keys(client) -> list[str]:
    def read(txn):
        return [d["key"] for d in txn.query(MUTATION_RECEIPTS, system=True)]

    return client.backend.store.read(read)[0]


def test_a_key_runs_once_and_its_result_comes_back(client):
    key = receipt_key("session", 0, "r:bump", [False, None])
    first, ts = _call(client, key)
    again, ts_again = _call(client, key)
    assert again == first == {"n": 1.0, "pad": ""}
    assert ts_again >= ts
    assert client.query("r:total") == 1.0
    _call(client, receipt_key("session", 1, "r:bump", [False, None]))
    _call(client, None)  # no key: no receipt
    assert client.query("r:total") == 3.0
    assert len(_stored_keys(client)) == 2


def test_receipts_survive_reopening_the_store(tmp_path: Path):
    key = receipt_key("s", 7, "r:bump", [True, None])
    for _ in range(2):
        with kernel_ext.connect(tmp_path / "again.db") as c:
            c.backend.register("r:bump", bump)
            c.backend.register("r:total", total)
            _call(c, key)
            assert c.query("r:total") == 1.0


def test_a_result_too_large_to_keep_is_refused_on_replay(client):
    key = receipt_key("s", 0, "r:bump", None)
    value, _ = _call(client, key, size=MAX_RESULT_BYTES + 1)
    assert len(value["pad"]) == MAX_RESULT_BYTES + 1
    with pytest.raises(FunctionError, match="already ran"):
        _call(client, key, size=MAX_RESULT_BYTES + 1)
    assert client.query("r:total") == 1.0


def test_receipts_are_bounded_by_count(client):
    receipts = MutationReceipts(client.backend.store, max_receipts=5, prune_every=3)
    client.backend.receipts = receipts
    keys = [receipt_key("s", i, "r:bump", None) for i in range(20)]
    for key in keys:
        _call(client, key)
        assert len(_stored_keys(client)) <= 5 + 3 + 3
    receipts.prune()
    assert _stored_keys(client) == keys[-5:] and receipts.count == 5
    _call(client, keys[-1])  # kept: answered
    assert client.query("r:total") == 20.0 and receipts.count == 5  # a replay adds none
    _call(client, keys[0])  # forgotten: runs again
    assert client.query("r:total") == 21.0


def test_receipts_are_bounded_by_age(client):
    now = [1_000_000.0]
    receipts = MutationReceipts(
        client.backend.store, max_age_ms=60_000.0, prune_every=1000, clock=lambda: now[0]
    )
    client.backend.receipts = receipts
    _call(client, receipt_key("s", 0, "r:bump", None))
    now[0] = client.backend.store.next_creation_time() + 1.0
    assert receipts.prune() == 0  # young
    now[0] += 60_000.0
    assert receipts.prune() == 1
    assert _stored_keys(client) == []


def test_receipts_are_not_a_user_table(client):
    _call(client, receipt_key("s", 0, "r:bump", None))
    assert MUTATION_RECEIPTS not in client.tables()
    assert all(t["table"] != MUTATION_RECEIPTS for t in client.describe_tables())
    assert client.tables() == ["counts"]


@query
def peek(ctx, table: str):
    return ctx.db.system.query(table).collect()


@query
def peek_id(ctx, id: str):
    return ctx.db.system.get(id)


def test_functions_cannot_read_the_stores_own_bookkeeping(client):
    """db.system reads _scheduled_functions (as Convex allows), never the receipts."""
    from kernel_ext.errors import ValidationError

    client.backend.register("r:peek", peek)
    client.mutation("r:bump")
    assert client.query("r:peek", table="_scheduled_functions") == []
    for private in (MUTATION_RECEIPTS, "_column_kinds"):
        with pytest.raises(ValidationError, match=r"db\.system cannot read"):
            client.query("r:peek", table=private)

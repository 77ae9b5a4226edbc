"""Model-based test of serializability: mutations run concurrently from several threads give
the results of some serial order.

Hypothesis generates, per thread, a list of operations on a few accounts holding integer
balances. The threads start together and run their operations through the backend, each
mutation returning what it read. Every committed mutation then gets its place in a serial order
from its commit timestamp (a mutation that wrote nothing "commits" at its snapshot's timestamp,
right after the commit it saw). Replaying that order on a plain-dict model must reproduce
every mutation's reads and the final contents of the store. No mutation may give up with
`ConflictError`: after a few optimistic retries it runs serially (contention never fails it).
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import kernel_ext
from kernel_ext import mutation
from kernel_ext.errors import ConflictError

ACCOUNTS = ("a0", "a1", "a2", "a3")
TOTALS = ("t0", "t1")
MAX_THREADS = 4


#: Counts every run of a handler, retries included (a retry is a conflict OCC resolved).
_runs = itertools.count()


def _pause(pause: bool) -> None:
    """Called once per handler run: counts the run, then maybe sleeps a little."""
    next(_runs)
    if pause:
        time.sleep(0.001)  # widen the window between reading and writing


# -- the functions under test (each returns what it read and whether it wrote) ------------


@mutation
def transfer(ctx, src, dst, amount, pause):
    a, b = ctx.db.get(src), ctx.db.get(dst)
    _pause(pause)
    ok = a["balance"] >= amount
    if ok:
        ctx.db.patch(src, {"balance": a["balance"] - amount})
        ctx.db.patch(dst, {"balance": b["balance"] + amount})
    return {"read": [a["balance"], b["balance"]], "wrote": ok}


@mutation
def increment(ctx, account, pause):
    doc = ctx.db.get(account)
    _pause(pause)
    ctx.db.patch(account, {"balance": doc["balance"] + 1})
    return {"read": doc["balance"], "wrote": True}


@mutation
def total(ctx, target, pause):
    """Read every account (a full table scan) and store the sum of balances in the `totals`
    document named `target`, creating it (and, the first time, the table) if needed."""
    seen = sorted([doc["name"], doc["balance"]] for doc in ctx.db.query("accounts").collect())
    doc = ctx.db.query("totals").filter(lambda q: q.eq(q.field("name"), target)).first()
    _pause(pause)
    value = sum(balance for _, balance in seen)
    if doc is None:
        ctx.db.insert("totals", {"name": target, "value": value})
    else:
        ctx.db.patch(doc["_id"], {"value": value})
    old = None if doc is None else doc["value"]
    return {"read": {"accounts": seen, "old": old}, "wrote": value != old}


@mutation
def open_account(ctx, name, balance, pause):
    _pause(pause)
    ctx.db.insert("accounts", {"name": name, "balance": balance})
    return {"read": None, "wrote": True}


@mutation
def setup(ctx, balances):
    accounts = {
        name: ctx.db.insert("accounts", {"name": name, "balance": balance})
        for name, balance in zip(ACCOUNTS, balances, strict=True)
    }
    return accounts


FUNCTIONS = {
    "model:transfer": transfer,
    "model:increment": increment,
    "model:total": total,
    "model:open_account": open_account,
    "model:setup": setup,
}


# -- the reference model ---------------------------------------------------------------------


@dataclass
class Model:
    accounts: dict[str, int]
    totals: dict[str, int]

    def apply(self, op: tuple[Any, ...]) -> dict[str, Any]:
        """Run one operation serially; returns what the mutation should have returned."""
        kind = op[0]
        if kind == "transfer":
            _, src, dst, amount = op
            a, b = self.accounts[src], self.accounts[dst]
            ok = a >= amount
            if ok:
                self.accounts[src] -= amount
                self.accounts[dst] += amount
            return {"read": [a, b], "wrote": ok}
        if kind == "increment":
            _, account = op
            self.accounts[account] += 1
            return {"read": self.accounts[account] - 1, "wrote": True}
        if kind == "total":
            _, target = op
            seen = sorted([name, balance] for name, balance in self.accounts.items())
            old = self.totals.get(target)
            self.totals[target] = sum(self.accounts.values())
            return {
                "read": {"accounts": seen, "old": old},
                "wrote": self.totals[target] != old,
            }
        assert kind == "open_account"
        _, name, balance = op
        assert name not in self.accounts
        self.accounts[name] = balance
        return {"read": None, "wrote": True}


# -- operations ----------------------------------------------------------------------------

account = st.sampled_from(ACCOUNTS)
operation = st.one_of(
    st.tuples(st.just("transfer"), account, account, st.integers(1, 6)).filter(
        lambda op: op[1] != op[2]
    ),
    st.tuples(st.just("increment"), account),
    st.tuples(st.just("total"), st.sampled_from(TOTALS)),
    st.tuples(st.just("open_account"), st.integers(0, 5)),
)
plans = st.fixed_dictionaries(
    {
        "balances": st.lists(st.integers(0, 10), min_size=len(ACCOUNTS), max_size=len(ACCOUNTS)),
        "threads": st.lists(
            st.lists(st.tuples(operation, st.booleans()), min_size=1, max_size=8),
            min_size=2,
            max_size=MAX_THREADS,
        ),
    }
)


@dataclass
class Outcome:
    thread: int
    index: int
    op: tuple[Any, ...]  # in model terms (account names, not ids)
    result: dict[str, Any] | None = None
    ts: int | None = None
    conflict: bool = False


def _call(client, op, pause, ids) -> tuple[Any, int]:
    kind = op[0]
    if kind == "transfer":
        args = {"src": ids[op[1]], "dst": ids[op[2]], "amount": op[3]}
    elif kind == "increment":
        args = {"account": ids[op[1]]}
    elif kind == "total":
        args = {"target": op[1]}
    else:
        args = {"name": op[1], "balance": op[2]}
    value, ts = client.backend.call_with_ts(
        f"model:{kind}", {**args, "pause": pause}, kind="mutation", identity=None, public_only=True
    )
    assert ts is not None
    return value, ts


def _run_plan(url: str, plan: dict[str, Any], stats: Counter[str]) -> None:
    client = kernel_ext.connect(url)
    try:
        for path, function in FUNCTIONS.items():
            client.backend.register(path, function)
        ids, setup_ts = client.backend.call_with_ts(
            "model:setup",
            {"balances": plan["balances"]},
            kind="mutation",
            identity=None,
            public_only=True,
        )
        runs_before = next(_runs)

        outcomes: list[list[Outcome]] = []
        for t, ops in enumerate(plan["threads"]):
            row = []
            for i, (op, _) in enumerate(ops):
                if op[0] == "open_account":
                    op = ("open_account", f"n{t}.{i}", op[1])  # unique names
                row.append(Outcome(t, i, op))
            outcomes.append(row)

        barrier = threading.Barrier(len(outcomes))
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                barrier.wait(timeout=30)
                for outcome, (_, pause) in zip(outcomes[t], plan["threads"][t], strict=True):
                    try:
                        outcome.result, outcome.ts = _call(client, outcome.op, pause, ids)
                    except ConflictError:
                        outcome.conflict = True
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(len(outcomes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a worker hung"
        if errors:
            raise errors[0]

        def contents(txn):
            return txn.query("accounts").collect(), txn.query("totals").collect()

        account_docs, total_docs = client.backend.store.read(contents)[0]
    finally:
        client.close()

    done = [o for row in outcomes for o in row if not o.conflict]
    conflicts = [o for row in outcomes for o in row if o.conflict]
    stats["mutations"] += len(done)
    stats["conflicts"] += len(conflicts)
    stats["retries"] += next(_runs) - runs_before - 1 - len(done) - len(conflicts)
    # After a few optimistic retries a mutation runs serially: contention never fails it.
    assert not conflicts, f"{len(conflicts)} mutations failed with ConflictError"

    # Each commit that wrote has its own timestamp, later than the setup's; one that wrote
    # nothing reports its snapshot's timestamp, which is the setup's or some writer's.
    writer_ts = [o.ts for o in done if o.result["wrote"]]
    assert len(set(writer_ts)) == len(writer_ts), "two commits share a timestamp"
    assert all(ts > setup_ts for ts in writer_ts)
    known = {setup_ts, *writer_ts}
    for o in done:
        assert o.result["wrote"] or o.ts in known, f"read-only {o} at an unknown ts"
    # A thread's mutations run one after another: their serial positions must follow suit.
    for row in outcomes:
        committed = [o.ts for o in row if not o.conflict]
        assert committed == sorted(committed), f"thread {row[0].thread} went back in time"

    # Replay in commit order: at equal ts the writer comes first, then those that saw it.
    model = Model(dict(zip(ACCOUNTS, plan["balances"], strict=True)), {})
    order = sorted(done, key=lambda o: (o.ts, not o.result["wrote"], o.thread, o.index))
    for position, o in enumerate(order):
        expected = model.apply(o.op)
        assert o.result == expected, (
            f"mutation {position} of the serial order, {o.op} (thread {o.thread}, op "
            f"{o.index}, ts {o.ts}) returned {o.result}; in that order it should return "
            f"{expected}"
        )
    final_accounts = {d["name"]: d["balance"] for d in account_docs}
    final_totals = {d["name"]: d["value"] for d in total_docs}
    assert final_accounts == model.accounts
    assert final_totals == model.totals
    assert len(account_docs) == len(final_accounts), f"duplicate accounts: {account_docs}"
    assert len(total_docs) == len(final_totals), f"duplicate totals: {total_docs}"
    # Conflicted mutations left no trace (the replay without them already matched; this
    # names the symptom if an abandoned account opening was committed anyway).
    for o in conflicts:
        if o.op[0] == "open_account":
            assert o.op[1] not in final_accounts


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "memory"])
def test_concurrent_mutations_are_serializable(kind: str) -> None:
    stats: Counter[str] = Counter()
    violations: list[tuple[dict[str, Any], AssertionError]] = []

    # Interleavings are not reproducible, so Hypothesis could neither replay nor shrink a
    # failure: record the first one and report it with its plan once the examples are done.
    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(plan=plans)
    def check(plan: dict[str, Any]) -> None:
        if violations:
            return
        with tempfile.TemporaryDirectory(prefix="convex-model-") as tmp:
            url = "memory" if kind == "memory" else f"sqlite:///{tmp}/store.db"
            try:
                _run_plan(url, plan, stats)
            except AssertionError as exc:
                violations.append((plan, exc))

    check()
    if violations:
        plan, exc = violations[0]
        raise AssertionError(f"Not serializable. Plan: {plan!r}\n{exc}") from exc
    # The checks had something to check: many commits, some of them retried after conflicts.
    assert stats["mutations"] >= 150, stats
    assert stats["retries"] > 0, stats


def test_scan_of_a_table_created_concurrently_is_validated(store_url: str) -> None:
    """The anomaly the random test above finds with its lazily created `totals` table, as a
    deterministic interleaving. Mutation A scans a table that does not exist yet, then writes
    document X; meanwhile B reads X, creates the table with its first insert and commits. If A
    then commits unchanged, no serial order explains the results (after B, A would have seen
    B's document; before B, B would have read A's write), so A's empty scan must be validated
    like any other read: A re-runs (it never fails with `ConflictError`: after a few optimistic
    attempts it runs serially)."""
    a_scanned, b_committed = threading.Event(), threading.Event()

    @mutation
    def scan_then_write(ctx, x):
        seen = len(ctx.db.query("late").collect())
        a_scanned.set()
        assert b_committed.wait(10)
        ctx.db.patch(x, {"v": ctx.db.get(x)["v"] + 1})
        return seen

    @mutation
    def read_then_create(ctx, x):
        seen = ctx.db.get(x)["v"]
        ctx.db.insert("late", {"seen": seen})
        return seen

    @mutation
    def make_x(ctx):
        return ctx.db.insert("xs", {"v": 0})

    def call(client, path, args):
        return client.backend.call_with_ts(
            path, args, kind="mutation", identity=None, public_only=True
        )

    client = kernel_ext.connect(store_url)
    try:
        for path, function in [("skew:a", scan_then_write), ("skew:b", read_then_create)]:
            client.backend.register(path, function)
        client.backend.register("skew:x", make_x)
        x, _ = call(client, "skew:x", {})
        outcome: dict[str, Any] = {}

        def run_a() -> None:
            try:
                outcome["a"] = call(client, "skew:a", {"x": x})
            except Exception as exc:
                outcome["a"] = exc

        thread = threading.Thread(target=run_a)
        thread.start()
        assert a_scanned.wait(10)
        (b_saw, b_ts) = call(client, "skew:b", {"x": x})
        b_committed.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
        late, x_now = client.backend.store.read(
            lambda txn: (txn.query("late").collect(), txn.get(x)["v"])
        )[0]
    finally:
        client.close()

    assert b_saw == 0 and [d["seen"] for d in late] == [0]
    if isinstance(outcome["a"], Exception):
        raise outcome["a"]
    a_saw, a_ts = outcome["a"]
    assert x_now == 1
    # B read X = 0, so A (which wrote X) comes after B; then A must have seen B's document.
    assert a_ts > b_ts
    assert a_saw == 1, (
        "mutation A scanned the table 'late' before B created it, committed after B and still "
        "reports 0 documents: its scan of a missing table was not validated (write skew)"
    )


def test_snapshot_sees_the_tables_of_the_commits_it_contains(store_url: str) -> None:
    """The other anomaly the random test finds with its lazily created `totals` table. A commit
    that creates a table writes its documents to SQLite first and only then adds the table to
    the shared catalog; a snapshot opened in between contains the documents (its ts is the
    commit's) but a query cannot find their table and returns nothing, and a mutation on that
    snapshot is never invalidated by that commit. The commit is paused in that window here
    (for at most a second, in case the store makes snapshots wait for it)."""
    client = kernel_ext.connect(store_url)
    try:
        store = client.backend.store
        persistence = store.persistence
        written, read_done = threading.Event(), threading.Event()
        write_commit = persistence.write_commit

        def paused_write_commit(ts, records, new_tables=()):
            write_commit(ts, records, new_tables)
            if new_tables:
                written.set()
                read_done.wait(1.0)

        persistence.write_commit = paused_write_commit
        outcome: dict[str, Any] = {}

        def create() -> None:
            try:
                outcome["commit"] = store.mutate(lambda txn: txn.insert("late", {"n": 1}))
            finally:
                written.set()  # also if the commit failed: don't make the reader wait

        thread = threading.Thread(target=create)
        thread.start()
        assert written.wait(10)
        docs, _, snapshot_ts = store.read(lambda txn: txn.query("late").collect())
        read_done.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        client.close()

    assert "commit" in outcome, "the commit that creates the table failed"
    doc_id, commit_ts = outcome["commit"]
    assert snapshot_ts >= commit_ts
    assert [d["_id"] for d in docs] == [doc_id], (
        f"a snapshot at ts {snapshot_ts} includes the commit at ts {commit_ts} that inserted "
        f"{doc_id} into the new table 'late', yet the query saw {docs}"
    )

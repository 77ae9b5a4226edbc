"""Live queries: only affected subscriptions re-run, identical ones share a run, unchanged
results are not delivered, errors are results too."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from polling import wait_for

import kernel_ext
from kernel_ext import ConvexError, mutation, query, v
from kernel_ext.engine.subscriptions import SubscriptionManager


@pytest.fixture
def counted(store_url):
    """A client with `c:indexed` (counting runs per key), `c:failing`, `c:put`, `c:set_n`."""
    client = kernel_ext.connect(store_url)
    runs: Counter[str] = Counter()

    @query(args={"key": v.string()})
    def indexed(ctx, key):
        runs["indexed:" + key] += 1
        return [
            d["n"] for d in ctx.db.query("items").with_index("by_key", lambda q: q.eq("key", key))
        ]

    @query(args={"key": v.string()})
    def failing(ctx, key):
        doc = ctx.db.query("items").with_index("by_key", lambda q: q.eq("key", key)).first()
        if doc is None:
            raise ConvexError({"missing": key})
        return doc["n"]

    @mutation(args={"key": v.string(), "n": v.int64()})
    def put(ctx, key, n):
        return ctx.db.insert("items", {"key": key, "n": n})

    @mutation(args={"id": v.id("items"), "n": v.int64()})
    def set_n(ctx, id, n):
        ctx.db.patch(id, {"n": n})

    client.backend.store.set_schema(
        kernel_ext.define_schema(
            {
                "items": kernel_ext.define_table({"key": v.string(), "n": v.int64()}).index(
                    "by_key", ["key"]
                )
            }
        )
    )
    for name, fn in dict(indexed=indexed, failing=failing, put=put, set_n=set_n).items():
        client.backend.register(f"c:{name}", fn)
    yield client, runs
    client.close()


def test_only_subscriptions_whose_range_was_written_rerun(counted):
    client, runs = counted
    subs = {k: client.subscribe("c:indexed", key=k) for k in ("a", "b", "c")}
    for sub in subs.values():
        assert sub.value == []
    before = runs.copy()
    client.mutation("c:put", key="b", n=1)
    assert subs["b"].value == [1]
    assert runs["indexed:b"] == before["indexed:b"] + 1
    assert runs["indexed:a"] == before["indexed:a"]
    assert runs["indexed:c"] == before["indexed:c"]


def test_identical_subscriptions_share_one_execution(counted):
    client, runs = counted
    first = client.subscribe("c:indexed", key="k")
    second = client.subscribe("c:indexed", {"key": "k"})
    assert first.value == second.value == []
    assert runs["indexed:k"] == 1
    client.mutation("c:put", key="k", n=5)
    assert first.value == second.value == [5]
    assert runs["indexed:k"] == 2


def test_unchanged_result_is_not_delivered(counted):
    client, _ = counted
    doc_id = client.mutation("c:put", key="x", n=1)
    sub = client.subscribe("c:indexed", key="x")
    assert sub.value == [1]
    calls = []
    sub.on_change(calls.append)
    client.mutation("c:set_n", id=doc_id, n=1)  # a no-op patch: nothing written
    client.mutation("c:put", key="y", n=1)  # another key: not in the range
    changed = threading.Event()
    sub.on_change(lambda value: changed.set())
    client.mutation("c:set_n", id=doc_id, n=2)
    assert changed.wait(5)
    assert calls == [[2]]


def test_error_is_a_result_and_recovers(counted):
    client, _ = counted
    sub = client.subscribe("c:failing", key="z")
    with pytest.raises(ConvexError) as info:
        sub.value
    assert info.value.data == {"missing": "z"}
    assert isinstance(sub.error, ConvexError)
    client.mutation("c:put", key="z", n=7)
    assert sub.value == 7
    assert sub.error is None


def test_iteration_yields_current_then_each_new_value(counted):
    client, _ = counted
    sub = client.subscribe("c:indexed", key="it")
    got = []
    ready = threading.Event()

    def consume():
        for value in sub:
            got.append(value)
            ready.set()
            if len(got) == 3:
                return

    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(5)
    client.mutation("c:put", key="it", n=1)
    client.mutation("c:put", key="it", n=2)
    thread.join(5)
    assert got == [[], [1], [1, 2]]


def test_closed_subscription_stops_updating(counted):
    client, runs = counted
    sub = client.subscribe("c:indexed", key="q")
    assert sub.value == []
    sub.close()
    sub.close()  # idempotent
    client.mutation("c:put", key="q", n=1)
    assert runs["indexed:q"] == 1
    assert len(client.backend.subscriptions) == 0


def test_schema_change_reruns_everything(counted):
    client, runs = counted
    sub = client.subscribe("c:indexed", key="s")
    assert sub.value == []
    before = runs["indexed:s"]
    client.backend.store.set_schema(client.backend.store.schema)
    client.mutation("c:put", key="unrelated", n=1)
    assert runs["indexed:s"] == before + 1


def test_redefining_a_function_reruns_its_subscriptions(counted):
    client, _ = counted
    sub = client.subscribe("c:indexed", key="r")
    assert sub.value == []
    changed = threading.Event()
    sub.on_change(lambda value: changed.set())

    @query(args={"key": v.string()})
    def indexed(ctx, key):
        return ["redefined", key]

    client.backend.register("c:indexed", indexed)
    assert changed.wait(5)
    assert sub.value == ["redefined", "r"]


# -- who runs a round --------------------------------------------------------------------


def _manager_with_a_live_query(client):
    """The client's subscription manager, a live `c:indexed` query on key "w", the thread
    names its on_update ran on, and the id of a document in its range."""
    manager = client.backend.subscriptions
    doc_id = client.mutation("c:put", key="w", n=1)
    threads: list[str] = []
    delivered = threading.Event()

    def on_update(result):
        threads.append(threading.current_thread().name)
        delivered.set()

    client.backend.subscribe("c:indexed", {"key": "w"}, None, on_update)
    assert delivered.wait(5)
    return manager, threads, doc_id


def _queue_commit_quietly(client, doc_id, n):
    """Commit a change to the live query's document while keeping the commit from waking
    the worker: queued, as if the worker had not been scheduled yet."""
    manager = client.backend.subscriptions
    lane = manager._lanes[0]  # the fast lane (every query here is fast)
    work = lane.work
    deadline = time.monotonic() + 5
    while not work._waiters:  # until the worker is parked, waiting for work
        assert time.monotonic() < deadline, "the worker never went idle"
        time.sleep(0.001)
    lane.work = threading.Condition(manager._lock)  # notifications go nowhere
    try:
        _, ts = client.backend.call_with_ts(
            "c:set_n", {"id": doc_id, "n": n}, kind="mutation", identity=None, public_only=True
        )
    finally:
        lane.work = work
    assert lane.dirty, "the query should be queued for the next round"
    return ts


def _wake(manager):
    """Wake the fast lane's worker."""
    with manager._lock:
        manager._lanes[0].work.notify_all()


def _wait_in_thread(manager, ts):
    """`manager.wait_processed(ts)` on a thread named "caller"; returns what it returned or
    raised (None if it did not return within 5 s: then the worker is woken to end it)."""
    outcome: list[object] = []

    def wait():
        try:
            outcome.append(manager.wait_processed(ts))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait, name="caller")
    thread.start()
    thread.join(5)
    if thread.is_alive():
        _wake(manager)
        thread.join(5)
        return None
    return outcome[0]


def test_a_waiting_caller_runs_the_pending_round_itself(counted):
    """The caller would wait for the round anyway; running it saves waking the worker."""
    client, _ = counted
    manager, threads, doc_id = _manager_with_a_live_query(client)
    ts = _queue_commit_quietly(client, doc_id, 2)
    assert _wait_in_thread(manager, ts) is True
    assert threads[-1] == "caller"


def test_a_round_interrupted_in_a_waiting_caller_is_redone(counted):
    client, _ = counted
    manager, _, doc_id = _manager_with_a_live_query(client)
    calls = []

    def interrupt_once(result):
        calls.append(result)
        if len(calls) == 2:  # the first call is the current result, during subscribe()
            raise KeyboardInterrupt

    client.backend.subscribe("c:indexed", {"key": "w"}, None, interrupt_once)
    assert len(calls) == 1
    ts = _queue_commit_quietly(client, doc_id, 3)
    assert isinstance(_wait_in_thread(manager, ts), KeyboardInterrupt)
    assert manager.wait_processed(ts, timeout=5)  # redone (by the worker or by this call)
    assert client.query("c:indexed", key="w") == [3]


def test_rounds_never_overlap_when_callers_and_the_worker_run_them(counted):
    client, _ = counted
    manager = client.backend.subscriptions
    running, overlaps = [0], []
    round_ = manager._round

    def counted_round(lane, to_run):
        running[0] += 1
        if running[0] > 1:
            overlaps.append(to_run)
        try:
            round_(lane, to_run)
        finally:
            running[0] -= 1

    manager._round = counted_round
    ids = {k: client.mutation("c:put", key=k, n=0) for k in "abcd"}
    subs = {k: client.subscribe("c:indexed", key=k) for k in ids}
    errors: list[BaseException] = []

    def writer(k):
        try:
            for n in range(1, 31):
                client.mutation("c:set_n", id=ids[k], n=n)
                assert subs[k].value == [n]  # read your writes: processed before returning
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors[0]
    assert not overlaps
    assert all(sub.value == [30] for sub in subs.values())


def test_call_when_processed_runs_after_the_round_delivered_its_results(counted):
    """The sync server sends a Transition on this callback: the round's results must have
    reached the subscribers before it runs, and it must run on the thread that did the work."""
    client, _ = counted
    manager, _, doc_id = _manager_with_a_live_query(client)
    events: list[tuple[str, object]] = []
    client.backend.subscribe(
        "c:indexed", {"key": "w"}, None, lambda r: events.append(("result", r.value))
    )
    ts = _queue_commit_quietly(client, doc_id, 4)
    called = threading.Event()

    def processed():
        events.append(("processed", threading.current_thread().name))
        called.set()

    manager.call_when_processed(ts, processed)
    assert not called.is_set(), "the commit's round has not run yet"
    _wake(manager)
    assert called.wait(5)
    assert events[-2:] == [("result", [4]), ("processed", "convex-subscriptions")]


def test_call_when_processed_calls_at_once_when_already_processed(counted):
    client, _ = counted
    client.mutation("c:put", key="z", n=1)
    calls = []
    client.backend.subscriptions.call_when_processed(
        client.backend.store.ts, lambda: calls.append(threading.current_thread())
    )
    assert calls == [threading.current_thread()]


def test_call_when_processed_fires_for_commits_no_query_depends_on(counted):
    """Such a commit is processed without a round; waiting callbacks still run, in ts order."""
    client, _ = counted
    manager = client.backend.subscriptions
    calls: list[int] = []
    ts = client.backend.store.ts
    manager.call_when_processed(ts + 2, lambda: calls.append(2))
    manager.call_when_processed(ts + 1, lambda: calls.append(1))
    client.mutation("c:put", key="nobody-watches", n=1)
    assert calls == [1, 2]


def test_a_failing_call_when_processed_callback_does_not_stop_the_others(counted, caplog):
    client, _ = counted
    manager = client.backend.subscriptions
    calls = []
    ts = client.backend.store.ts + 1
    manager.call_when_processed(ts, lambda: 1 / 0)
    manager.call_when_processed(ts, lambda: calls.append("second"))
    client.mutation("c:put", key="q", n=1)
    assert calls == ["second"]
    assert "call_when_processed callback failed" in caplog.text


def test_a_rerun_gets_a_fresh_copy_of_its_arguments(counted):
    """Re-runs skip validating arguments again, not copying them: a handler that changes
    what it was given does not change the next run's arguments."""
    client, _ = counted
    seen = []

    @query(args={"keys": v.array(v.string())})
    def greedy(ctx, keys):
        seen.append(list(keys))
        keys.append("extra")  # changes its own argument
        return len(ctx.db.query("items").collect())

    client.backend.register("c:greedy", greedy)
    sub = client.subscribe("c:greedy", keys=["a"])
    assert sub.value == 0
    client.mutation("c:put", key="k", n=1)
    assert sub.value == 1
    assert seen == [["a"], ["a"]]


def test_import_dataframe_coalesces_live_reruns_and_reads_its_writes(tmp_path):
    """import_dataframe does not wait for live queries between its batches: the batches
    committed while a re-run is under way share the next one (fewer re-runs than batches),
    and when it returns the subscription reflects every row."""
    import pandas as pd

    runs: list[int] = []

    @query
    def everything(ctx):
        runs.append(1)
        time.sleep(0.02)  # a live query that takes a while, as a big table's does
        return [d["n"] for d in ctx.db.query("rows").collect()]

    client = kernel_ext.connect(tmp_path / "store.db")
    try:
        client.register("live:everything", everything)
        sub = client.subscribe("live:everything")
        assert sub.value == []
        runs_before = len(runs)
        client.import_dataframe(
            "rows", pd.DataFrame({"n": range(500)}), batch_size=10, progress=False
        )
        assert sorted(sub.value) == list(range(500))
        reruns = len(runs) - runs_before
        assert 1 <= reruns < 50, f"{reruns} re-runs for 50 batches"
        sub.close()
    finally:
        client.close()


# -- slow live queries run in their own lane -----------------------------------------------


def _reader(key, before=None):
    """A runner: the sorted `n` of the items with that key (calling `before()` first)."""

    def run(txn):
        if before is not None:
            before()
        found = txn.query("items").with_index("by_key", lambda q: q.eq("key", key)).collect()
        return sorted(d["n"] for d in found)

    return run


def _insert(store, key, n):
    return store.mutate(lambda txn: txn.insert("items", {"key": key, "n": n}))[1]


class _Latest:
    """What a subscription delivered: every (value, ts), and a wait for a value."""

    def __init__(self):
        self.results = []
        self._changed = threading.Condition()

    def __call__(self, result):
        with self._changed:
            self.results.append((result.value, result.ts))
            self._changed.notify_all()

    def wait_for(self, value, timeout=10):
        with self._changed:
            assert self._changed.wait_for(
                lambda: self.results and self.results[-1][0] == value, timeout
            ), f"never delivered {value!r}; delivered {self.results!r}"


def test_a_slow_live_query_does_not_hold_back_the_others(counted):
    client, _ = counted
    store = client.backend.store
    manager = SubscriptionManager(store, slow_after=0.5)
    gate, entered = threading.Event(), threading.Event()
    blocking = [False]

    def slow_first():
        if not blocking[0]:
            time.sleep(0.6)  # longer than slow_after: from now on it runs in the slow lane
            return
        entered.set()
        assert gate.wait(30)

    slow, fast = _Latest(), _Latest()
    try:
        manager.subscribe("slow", _reader("s", slow_first), slow)
        manager.subscribe("fast", _reader("f"), fast)
        slow.wait_for([])
        fast.wait_for([])
        blocking[0] = True
        slow_ts = _insert(store, "s", 1)
        assert entered.wait(10), "the slow query should re-run"
        # It is blocked now (until the gate opens): the fast query keeps going.
        ts = _insert(store, "f", 2)
        fast.wait_for([2])
        processed = threading.Event()
        manager.call_when_processed(ts, processed.set, keys={"fast"})
        assert processed.wait(10)
        assert manager.wait_processed(ts, timeout=10, keys={"fast"})
        # ... but not everything reflects ts: the slow query is stale until it is let go.
        assert not manager.wait_processed(ts, timeout=0)
        assert not manager.wait_processed(ts, timeout=0, keys={"fast", "slow"})
        assert slow.results[-1][0] == []
        gate.set()
        assert manager.wait_processed(ts, timeout=10, keys={"slow"})
        assert manager.wait_processed(store.ts, timeout=10)
        value, result_ts = slow.results[-1]
        assert value == [1] == store.read(_reader("s"))[0]
        # Read on a snapshot after its commit: valid at ts too (the later commit wrote "f").
        assert slow_ts <= result_ts
    finally:
        gate.set()
        manager.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_what_is_reported_processed_is_valid_at_that_ts(counted, seed):
    """Property: with commits touching both queries' ranges at random moments while the
    queries move between lanes, every result delivered at ts equals the state at ts, and
    when `call_when_processed(ts, keys=K)` fires, the latest result of each query of K is
    the state at ts (or, if it came from a later snapshot, the state there)."""
    import random

    client, _ = counted
    store = client.backend.store
    rng = random.Random(seed)
    manager = SubscriptionManager(store, slow_after=0.004)
    runs = Counter()
    lanes: dict[str, set[str]] = {"a": set(), "b": set()}

    def pace(key, period):
        def before():
            runs[key] += 1
            lanes[key].add(threading.current_thread().name)
            if (runs[key] // period) % 2 == 0:  # slow for `period` runs, fast for as many
                time.sleep(0.008)

        return before

    lock = threading.Lock()
    latest: dict[str, tuple[object, int]] = {}
    delivered: list[tuple[str, object, int]] = []
    checks: list[tuple[int, str, object, int]] = []
    fired: list[int] = []

    def on_update(key):
        def deliver(result):
            with lock:
                latest[key] = (result.value, result.ts)
                delivered.append((key, result.value, result.ts))

        return deliver

    def check(ts, keys):
        def processed():
            with lock:
                fired.append(ts)
                checks.extend((ts, k, *latest[k]) for k in keys)

        return processed

    state: dict[str, dict[str, int]] = {"a": {}, "b": {}, "c": {}}
    history = [(store.ts, {"a": [], "b": []})]  # (commit ts, query values after it)
    try:
        manager.subscribe("a", _reader("a", pace("a", 4)), on_update("a"))
        manager.subscribe("b", _reader("b", pace("b", 6)), on_update("b"))
        assert manager.wait_processed(store.ts, timeout=10)
        registered = 0
        for _ in range(120):
            key = rng.choice("aabbc")
            docs = state[key]
            n = rng.randrange(100)
            if docs and rng.random() < 0.5:
                doc_id = rng.choice(sorted(docs))
                ts = store.mutate(lambda txn, d=doc_id, n=n: txn.patch(d, {"n": n}))[1]
            else:
                doc_id, ts = store.mutate(
                    lambda txn, k=key, n=n: txn.insert("items", {"key": k, "n": n})
                )
            docs[doc_id] = n
            history.append((ts, {k: sorted(state[k].values()) for k in "ab"}))
            keys = rng.choice([{"a"}, {"b"}, {"a", "b"}, None])
            manager.call_when_processed(ts, check(ts, keys or {"a", "b"}), keys=keys)
            registered += 1
            time.sleep(rng.random() * 0.004)
        assert manager.wait_processed(store.ts, timeout=30)
        wait_for(lambda: len(fired) == registered)
    finally:
        manager.close()

    def state_at(ts, key):
        return [values for commit_ts, values in history if commit_ts <= ts][-1][key]

    for key, value, ts in delivered:
        assert value == state_at(ts, key), (key, ts)
    for ts, key, value, result_ts in checks:
        assert value == state_at(max(ts, result_ts), key), (key, ts, result_ts)
    # Both queries did run in both lanes.
    assert all(len(names) == 2 for names in lanes.values()), lanes


def test_new_arguments_to_a_slow_function_start_in_the_slow_lane(counted):
    """A query whose family (the backend's: its function) was slow lately does not stall the
    fast lane for its first run."""
    client, _ = counted
    store = client.backend.store
    manager = SubscriptionManager(store, slow_after=0.5, family=lambda key: key[0])
    gate, entered = threading.Event(), threading.Event()

    def warm():
        time.sleep(0.6)  # longer than slow_after

    def blocked():
        entered.set()
        assert gate.wait(30)

    first, second, fast = _Latest(), _Latest(), _Latest()
    try:
        manager.subscribe(("slow", 1), _reader("s", warm), first)
        first.wait_for([])
        manager.subscribe(("slow", 2), _reader("s", blocked), second)
        assert entered.wait(10)
        manager.subscribe(("fast", 1), _reader("f"), fast)
        fast.wait_for([])  # while the new slow one is still blocked in its first run
        assert not second.results
        gate.set()
        second.wait_for([])
    finally:
        gate.set()
        manager.close()

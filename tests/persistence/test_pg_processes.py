"""Several processes on one PostgreSQL store, each with an embedded client
(`kernel_ext.connect(pg_url)`): live subscriptions across processes, contended mutations,
writers killed mid-stream, the server restarted under connected clients, scheduled jobs and
incremental views. The processes are tests/pg_workers.py; functions: tests/fixtures/pg_app.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from pg_workers import Worker, WorkerError
from polling import wait_for

import kernel_ext

if TYPE_CHECKING:
    from pg_cluster import PgCluster

FUNCTIONS = Path(__file__).parent.parent / "fixtures" / "pg_app"
#: Seconds a worker may take to start (import, connect, load the functions), under load too.
START_S = 30.0


@pytest.fixture
def spawn() -> Iterator[Any]:
    """`spawn(mode, url, *args) -> Worker`; every worker is killed at the end."""
    workers: list[Worker] = []

    def start(mode: str, url: str, *args: str) -> Worker:
        worker = Worker(mode, url, FUNCTIONS, *args)
        workers.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.kill()


def _ready(*workers: Worker) -> None:
    for worker in workers:
        worker.wait_event(lambda e: e["event"] == "ready", START_S)


def _mutation(worker: Worker, ref: str, /, **args: Any) -> Any:
    return worker.send("mutation", ref=ref, args=args)["value"]


def _query(worker: Worker, ref: str, /, **args: Any) -> Any:
    return worker.send("query", ref=ref, args=args)["value"]


def _in_order(delivered: list[Any], states: list[Any]) -> bool:
    """Whether every delivered value is one of `states`, in their order (a value may repeat
    a state, never go back to an earlier one)."""
    position = 0
    for value in delivered:
        while position < len(states) and states[position] != value:
            position += 1
        if position == len(states):
            return False
    return True


def test_processes_open_a_new_store_at_once(pg_url: str, spawn: Any) -> None:
    # Each creates the system tables and their indexes unless another already did.
    workers = [spawn("repl", pg_url) for _ in range(4)]
    _ready(*workers)
    counter = _mutation(workers[0], "counter:create", name="c")
    assert [_query(w, "counter:get", id=counter) for w in workers] == [0] * 4


def test_a_subscription_sees_the_commits_of_another_process(pg_url: str, spawn: Any) -> None:
    writer, reader = spawn("repl", pg_url), spawn("repl", pg_url)
    _ready(writer, reader)
    counter = _mutation(writer, "counter:create", name="c")
    reader.send("subscribe", sub="c", ref="counter:get", args={"id": counter})
    wait_for(lambda: reader.values("c"), timeout=10)
    for expected in range(1, 11):
        assert _mutation(writer, "counter:increment", id=counter) == expected

    wait_for(lambda: reader.values("c")[-1] == 10, timeout=10)
    delivered = reader.values("c")
    assert _in_order(delivered, list(range(11))), delivered
    assert _query(reader, "counter:get", id=counter) == 10


def test_contended_increments_in_four_processes_all_count(pg_url: str, spawn: Any) -> None:
    with kernel_ext.connect(pg_url) as client:
        client.load_functions(FUNCTIONS)
        counter = client.mutation("counter:create", {"name": "shared"})
        workers = [spawn("increment", pg_url, counter, "50") for _ in range(4)]
        done = [w.wait_event(lambda e: e["event"] in ("done", "error"), 60) for w in workers]
        assert [d["event"] for d in done] == ["done"] * 4, done
        assert client.query("counter:get", {"id": counter}) == 200
    # Serializable: each increment read the value the previous one (in any process) wrote.
    seen = sorted(v for d in done for v in d["values"])
    assert seen == list(range(1, 201))
    for d in done:
        assert d["values"] == sorted(d["values"])


def test_every_acknowledged_commit_survives_sigkill(pg_url: str, spawn: Any) -> None:
    rng = random.Random(10)
    acknowledged: set[int] = set()
    kills = 0
    for round_ in range(7):  # 3 writers at a time: 21 kills
        writers = [spawn("writer", pg_url, str((3 * round_ + i) * 100_000)) for i in range(3)]
        for writer in writers:
            wanted = rng.randint(1, 4)
            writer.wait_event(
                lambda e, k=wanted: e["event"] == "ack" and e["n"] % 100_000 >= k - 1, START_S
            )
        time.sleep(rng.uniform(0, 0.02))  # a random moment of the stream, not a wait for it
        for writer in writers:
            writer.kill()
            kills += 1
            acknowledged |= {e["n"] for e in writer.matching(lambda e: e["event"] == "ack")}
    assert kills >= 20

    with kernel_ext.connect(pg_url) as client:  # the store opens and takes commits
        client.load_functions(FUNCTIONS)
        client.mutation("items:add_pair", {"n": -1, "group": "g", "score": 0})
        halves = {int(n): sorted(h) for n, h in client.query("items:halves").items()}
    missing = acknowledged - set(halves)
    assert not missing, f"acknowledged commits lost: {sorted(missing)}"
    torn = {n: h for n, h in halves.items() if h != [0, 1]}
    assert not torn, f"commits stored in part: {torn}"


def test_commits_cut_off_by_the_server_are_reported_as_they_ended(
    pg_cluster: PgCluster, pg_url: str, spawn: Any
) -> None:
    # The server ends every connection of the writers, again and again, at random moments
    # (also between their COMMIT and its answer): a mutation that returned is stored, one that
    # failed saying it was not written is not, and none is stored in part. The live queries
    # of a third process (its connections cut too) end with the stored results.
    writers = [spawn("tolerant_writer", pg_url, str(i * 100_000)) for i in range(2)]
    reader = spawn("repl", pg_url)
    _ready(reader)
    live = {"top": ("items:top", "items:top_fresh", {"lo": 5}), "groups": (
        "items:per_group", "items:per_group_fresh", {}), "halves": (
        "items:halves", "items:halves", {})}  # fmt: skip
    for name, (ref, _, args) in live.items():
        reader.send("subscribe", sub=name, ref=ref, args=args)
    for writer in writers:
        writer.wait_event(lambda e: e["event"] == "ack", START_S)
    database = pg_url.rsplit("/", 1)[1]
    rng = random.Random(8)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        for _ in range(40):
            time.sleep(rng.uniform(0.01, 0.05))  # random moments of the streams
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
    for writer in writers:  # each still writes
        count = len(writer.matching(lambda e: e["event"] == "ack"))
        wait_for(lambda w=writer, c=count: len(w.matching(lambda e: e["event"] == "ack")) > c, 20)
        writer.kill()
    events = [e for w in writers for e in w.events]
    acknowledged = {e["n"] for e in events if e["event"] == "ack"}
    failed = [e for e in events if e["event"] == "failed"]
    assert {e["type"] for e in failed} <= {"PersistenceError", "CommitOutcomeUnknown"}, failed

    with kernel_ext.connect(pg_url) as client:
        client.load_functions(FUNCTIONS)
        halves = {int(n): sorted(h) for n, h in client.query("items:halves").items()}
    assert not acknowledged - set(halves), "acknowledged commits lost"
    assert {n: h for n, h in halves.items() if h != [0, 1]} == {}, "commits stored in part"
    written = [e for e in failed if e["type"] == "PersistenceError" and e["n"] in halves]
    assert not written, f"reported as not written, but stored: {written}"
    for name, (_, fresh, args) in live.items():
        stored = _query(reader, fresh, **args)
        wait_for(lambda n=name, v=stored: reader.values(n)[-1:] == [v], timeout=15)


def test_a_restarted_server_is_reported_and_followed_again(
    pg_cluster: PgCluster, pg_url: str, spawn: Any
) -> None:
    a, b = spawn("repl", pg_url), spawn("repl", pg_url)
    _ready(a, b)
    counter = _mutation(a, "counter:create", name="c")
    a.send("subscribe", sub="c", ref="counter:get", args={"id": counter})
    assert _mutation(b, "counter:increment", id=counter) == 1
    wait_for(lambda: a.values("c")[-1:] == [1], timeout=10)
    where = f"127.0.0.1:{pg_cluster.port}"

    with pg_cluster.down():
        # Reported while the server is down, naming it.
        report = wait_for(lambda: a.send("unreachable"), timeout=15)
        assert report.startswith("PersistenceError") and where in report, report
        # A mutation fails within seconds, saying where and why.
        started = time.monotonic()
        with pytest.raises(WorkerError) as failed:
            _mutation(b, "counter:increment", id=counter)
        assert time.monotonic() - started < 10
        assert failed.value.kind == "PersistenceError" and where in failed.value.message

    # Reconnected by itself: commits from either process reach the subscription again.
    wait_for(lambda: a.send("unreachable") is None, timeout=15)
    assert _mutation(b, "counter:increment", id=counter) == 2  # the failed one left no trace
    wait_for(lambda: a.values("c")[-1:] == [2], timeout=10)
    assert _mutation(a, "counter:increment", id=counter) == 3
    wait_for(lambda: a.values("c")[-1:] == [3], timeout=10)

    # A plain restart (clients cut off, server back at once): the next mutations work.
    pg_cluster.restart()
    assert _mutation(b, "counter:increment", id=counter) == 4
    wait_for(lambda: a.values("c")[-1:] == [4], timeout=10)
    assert _mutation(a, "counter:increment", id=counter) == 5
    assert _in_order(a.values("c"), list(range(6)))


def test_a_scheduled_job_runs_once_in_a_process_that_has_its_function(
    pg_url: str, spawn: Any
) -> None:
    a, b = spawn("repl", pg_url), spawn("repl", pg_url)
    _ready(a, b)
    pid_a = a.wait_event(lambda e: e["event"] == "ready", 1)["pid"]
    a.send("register_local", path="local:only_a")
    jobs = [_mutation(a, "jobs:schedule", ref="jobs:record", tag=f"both{i}") for i in range(8)]
    jobs += [_mutation(b, "jobs:schedule", ref="jobs:record", tag=f"both{i}") for i in range(8, 16)]
    jobs += [_mutation(a, "jobs:schedule", ref="local:only_a", tag=f"a{i}") for i in range(4)]

    def states() -> list[Any]:
        return [_query(b, "jobs:job", id=job)["kind"] for job in jobs]

    # Once a job is marked done, no other run of it can commit (marking it is the same commit
    # as the run's writes, serialized with every other process's).
    final = wait_for(lambda: (s := states()) and all(k != "pending" for k in s) and s, 20)
    assert final == ["success"] * len(jobs)
    runs = _query(b, "jobs:runs")
    tags = sorted(tag for tag, _ in runs)
    assert tags == sorted([f"both{i}" for i in range(16)] + [f"a{i}" for i in range(4)])
    assert {pid for tag, pid in runs if tag.startswith("a")} == {pid_a}


def test_views_in_one_process_follow_the_commits_of_another(pg_url: str, spawn: Any) -> None:
    writer, reader = spawn("repl", pg_url), spawn("repl", pg_url)
    _ready(writer, reader)
    views = {"top": ("items:top", "items:top_fresh", {"lo": 5}), "groups": (
        "items:per_group", "items:per_group_fresh", {})}  # fmt: skip

    def fresh() -> dict[str, Any]:
        return {name: _query(writer, plain, **args) for name, (_, plain, args) in views.items()}

    states = [fresh()]
    for name, (view, _, args) in views.items():
        reader.send("subscribe", sub=name, ref=view, args=args)
    rng = random.Random(4)
    stored: list[int] = []
    for n in range(40):
        roll = rng.random()
        if roll < 0.55 or len(stored) < 3:
            _mutation(writer, "items:add_pair", n=n, group=f"g{n % 3}", score=rng.randint(0, 30))
            stored.append(n)
        elif roll < 0.8:
            _mutation(writer, "items:set_score", n=rng.choice(stored), score=rng.randint(0, 30))
        else:
            gone = stored.pop(rng.randrange(len(stored)))
            _mutation(writer, "items:remove", n=gone)
        states.append(fresh())

    for name in views:
        wait_for(lambda name=name: reader.values(name)[-1:] == [states[-1][name]], timeout=15)
        delivered = reader.values(name)
        assert _in_order(delivered, [s[name] for s in states]), name


def test_the_job_of_a_killed_process_runs_in_another(pg_url: str, spawn: Any) -> None:
    a, b = spawn("repl", pg_url), spawn("repl", pg_url)
    _ready(a, b)
    pid_b = b.wait_event(lambda e: e["event"] == "ready", 1)["pid"]
    job = _mutation(a, "jobs:schedule_later", ref="jobs:record", tag="orphan", ms=300)
    a.kill()  # before the job is due
    wait_for(lambda: _query(b, "jobs:job", id=job)["kind"] != "pending", timeout=15)
    assert _query(b, "jobs:job", id=job) == {"kind": "success"}
    assert _query(b, "jobs:runs") == [["orphan", pid_b]]

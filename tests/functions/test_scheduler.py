"""Scheduled functions: transactional scheduling, exactly-once mutations, durability."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from polling import wait_for

import kernel_ext

APP = Path(__file__).parent.parent / "fixtures" / "scheduler_app"


@pytest.fixture
def sched(store_url):
    c = kernel_ext.connect(store_url)
    c.load_functions(APP)
    yield c
    c.close()


def test_scheduled_mutation_runs_after_commit_and_marks_success(sched):
    job_id = sched.mutation("jobs:schedule", text="hello", delay=0)
    wait_for(lambda: sched.query("jobs:log") == ["hello"])
    job = wait_for(
        lambda: (j := sched.query("jobs:job", id=job_id))["state"]["kind"] == "success" and j
    )
    assert job["name"] == "jobs:write_log"
    assert job["args"] == [{"text": "hello"}]
    assert job["completedTime"] >= job["scheduledTime"]


def test_scheduling_is_rolled_back_with_the_mutation(sched):
    with pytest.raises(RuntimeError):
        sched.mutation("jobs:schedule_then_fail", text="ghost")
    # The barrier: every commit so far is processed (a job it scheduled would be due now).
    assert sched.backend.subscriptions.wait_processed(sched.backend.store.ts, timeout=10)
    assert sched.query("jobs:jobs") == []
    assert sched.query("jobs:log") == []


def test_cancel_before_it_runs(sched):
    job_id = sched.mutation("jobs:schedule", text="later", delay=60_000)
    sched.mutation("jobs:cancel", id=job_id)
    assert sched.query("jobs:job", id=job_id)["state"]["kind"] == "canceled"


def test_failed_job_is_marked_failed_and_its_writes_vanish(sched):
    job_id = sched.mutation("jobs:schedule_failure")
    job = wait_for(
        lambda: (j := sched.query("jobs:job", id=job_id))["state"]["kind"] == "failed" and j
    )
    assert "scheduled failure" in job["state"]["error"]
    assert sched.query("jobs:log") == []


def test_action_schedules_immediately(sched):
    sched.action("jobs:schedule_from_action", text="from action")
    wait_for(lambda: sched.query("jobs:log") == ["from action"])


def test_pending_job_survives_restart(tmp_path):
    path = tmp_path / "store.db"
    first = kernel_ext.connect(path)
    first.load_functions(APP)
    first.mutation("jobs:schedule", text="after restart", delay=300)
    first.close()
    second = kernel_ext.connect(path)
    second.load_functions(APP)
    try:
        wait_for(lambda: second.query("jobs:log") == ["after restart"])
    finally:
        second.close()


def test_due_job_waits_for_its_function_after_restart(tmp_path):
    path = tmp_path / "store.db"
    first = kernel_ext.connect(path)
    first.load_functions(APP)
    first.backend.scheduler.close()  # the job will not run in this process
    job_id = first.mutation("jobs:schedule", text="late load", delay=0)
    first.close()
    second = kernel_ext.connect(path)
    try:
        time.sleep(0.3)  # the job is due, but its function is not loaded yet
        state = second.backend.store.read(lambda txn: txn.get(job_id, system=True))[0]["state"]
        assert state == {"kind": "pending"}
        second.load_functions(APP)
        wait_for(lambda: second.query("jobs:log") == ["late load"])
        assert second.query("jobs:job", id=job_id)["state"]["kind"] == "success"
    finally:
        second.close()


# -- hostile and contended jobs (issue 8, "Scheduler") ----------------------------------------


def _job_state(client, job_id):
    return client.backend.store.read(lambda txn: txn.get(job_id, system=True))[0]["state"]


def _register(client, module, **functions):
    for name, function in functions.items():
        client.register(f"{module}:{name}", function)


def test_scheduled_mutation_raising_system_exit_runs_once_and_fails(bare_client):
    runs = []

    @kernel_ext.mutation
    def exits(ctx):
        runs.append(1)
        ctx.db.insert("log", {"text": "never committed"})
        raise SystemExit(4)

    @kernel_ext.mutation
    def write(ctx, text):
        ctx.db.insert("log", {"text": text})

    @kernel_ext.mutation
    def schedule(ctx, target):
        args = {"text": "later"} if target == "t:write" else {}
        return ctx.scheduler.run_after(0, target, args)

    _register(bare_client, "t", exits=exits, write=write, schedule=schedule)
    job_id = bare_client.mutation("t:schedule", target="t:exits")
    state = wait_for(lambda: (s := _job_state(bare_client, job_id))["kind"] == "failed" and s)
    assert "SystemExit" in state["error"] and "t:exits" in state["error"]
    # A later job runs (the scheduler lives on), and the failed one never ran again.
    later = bare_client.mutation("t:schedule", target="t:write")
    wait_for(lambda: _job_state(bare_client, later)["kind"] == "success")
    assert runs == [1]
    texts = bare_client.backend.store.read(lambda txn: txn.query("log").collect())[0]
    assert [d["text"] for d in texts] == ["later"]


def test_scheduled_mutation_raising_unknown_function_runs_once_and_fails(bare_client):
    runs = []

    @kernel_ext.mutation
    def typo(ctx):
        runs.append(1)
        ctx.scheduler.run_after(0, "t:no_such_function")  # raises UnknownFunction

    @kernel_ext.mutation
    def schedule(ctx):
        return ctx.scheduler.run_after(0, "t:typo")

    _register(bare_client, "t", typo=typo, schedule=schedule)
    job_id = bare_client.mutation("t:schedule")
    state = wait_for(lambda: (s := _job_state(bare_client, job_id))["kind"] == "failed" and s)
    assert "UnknownFunction" in state["error"] and "t:no_such_function" in state["error"]
    time.sleep(0.2)  # a job left pending would be run again meanwhile
    assert runs == [1]


def test_jobs_of_a_missing_function_do_not_starve_later_jobs(bare_client):
    @kernel_ext.mutation
    def gone(ctx):
        ctx.db.insert("log", {"text": "gone ran"})

    @kernel_ext.mutation
    def write(ctx, text):
        ctx.db.insert("log", {"text": text})

    @kernel_ext.mutation
    def schedule_many(ctx):
        for _ in range(100):  # more than a dispatch batch (64)
            ctx.scheduler.run_after(0, "t:gone")
        # Due after them all; then the function of the first 100 goes away before they run
        # (they commit with this mutation).
        job = ctx.scheduler.run_after(1, "t:write", {"text": "after the missing ones"})
        bare_client.backend.registry.unregister("t:gone")
        return job

    _register(bare_client, "t", gone=gone, write=write, schedule_many=schedule_many)
    job_id = bare_client.mutation("t:schedule_many")
    wait_for(lambda: _job_state(bare_client, job_id)["kind"] == "success")
    texts = bare_client.backend.store.read(lambda txn: txn.query("log").collect())[0]
    assert [d["text"] for d in texts] == ["after the missing ones"]
    pending = bare_client.backend.store.read(
        lambda txn: (
            txn.query("_scheduled_functions", system=True)
            .with_index("by_state", lambda r: r.eq("state.kind", "pending"))
            .collect()
        )
    )[0]
    assert len(pending) == 100  # they wait for their function, as documented


def test_conflicting_scheduled_mutation_is_retried_until_it_commits(bare_client):
    attempts = []

    @kernel_ext.mutation
    def bump(ctx, id):
        ctx.db.patch(id, {"n": ctx.db.get(id)["n"] + 1})

    @kernel_ext.mutation
    def contended(ctx, id):
        doc = ctx.db.get(id)
        attempts.append(doc["n"])
        if len(attempts) <= 8:  # more conflicts than a mutation's own retries
            # Another writer commits to what this attempt read, before it can commit.
            writer = threading.Thread(target=bare_client.mutation, args=("t:bump", {"id": id}))
            writer.start()
            writer.join(2.0)  # (it may wait for this attempt if it runs under the lock)
        ctx.db.insert("log", {"text": f"saw {doc['n']}"})

    @kernel_ext.mutation
    def setup(ctx):
        doc = ctx.db.insert("counters", {"n": 0})
        return doc, ctx.scheduler.run_after(0, "t:contended", {"id": doc})

    _register(bare_client, "t", bump=bump, contended=contended, setup=setup)
    _, job_id = bare_client.mutation("t:setup")
    state = wait_for(lambda: (s := _job_state(bare_client, job_id))["kind"] != "pending" and s)
    assert state == {"kind": "success"}, state
    assert len(attempts) > 1
    texts = bare_client.backend.store.read(lambda txn: txn.query("log").collect())[0]
    assert len(texts) == 1  # committed once


def test_an_unexpected_error_in_the_scheduler_thread_is_logged_and_jobs_go_on(monkeypatch, caplog):
    from kernel_ext.functions.scheduling import SchedulerService

    failures = iter([RuntimeError("a bug")])
    due_jobs = SchedulerService._due_jobs

    def failing_once(self, now):
        for failure in failures:  # the first pass only
            raise failure
        return due_jobs(self, now)

    monkeypatch.setattr(SchedulerService, "_due_jobs", failing_once)
    with kernel_ext.connect("memory") as client:
        client.load_functions(APP)
        client.mutation("jobs:schedule", text="still", delay=0)
        wait_for(lambda: client.query("jobs:log") == ["still"], timeout=20)
    assert "scheduler could not" in caplog.text

"""Scheduled functions: transactional scheduling, exactly-once mutations, durability."""

from __future__ import annotations

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
    time.sleep(0.2)
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

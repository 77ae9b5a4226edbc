"""Containment of what handlers raise, and time limits (`functions.limits`), embedded."""

from __future__ import annotations

import threading

import pytest

import kernel_ext
from kernel_ext.errors import FunctionAborted, FunctionTimeout


@pytest.fixture
def c(store_url):
    client = kernel_ext.connect(store_url)

    @kernel_ext.mutation
    def interrupted(ctx):
        ctx.db.insert("log", {"text": "half-run"})
        raise KeyboardInterrupt

    @kernel_ext.mutation
    def exits(ctx):
        ctx.db.insert("log", {"text": "half-run"})
        raise SystemExit(2)

    @kernel_ext.query
    def exits_live(ctx):
        ctx.db.query("log").collect()
        raise SystemExit(1)

    @kernel_ext.query
    def log(ctx):
        return [d["text"] for d in ctx.db.query("log").collect()]

    @kernel_ext.mutation
    def write(ctx, text):
        ctx.db.insert("log", {"text": text})

    @kernel_ext.mutation
    def spin(ctx):
        while True:
            ctx.db.insert("log", {"text": "spun"})

    @kernel_ext.query
    def loop(ctx):
        while True:
            try:
                pass
            except BaseException:
                continue

    for name, function in locals().items():
        if name not in ("client", "store_url"):
            client.register(f"t:{name}", function)
    yield client
    client.close()


def test_ctrl_c_on_the_callers_thread_interrupts_and_leaves_no_trace(c):
    with pytest.raises(KeyboardInterrupt):
        c.mutation("t:interrupted")
    assert c.query("t:log") == []


def test_keyboard_interrupt_on_another_thread_fails_that_call(c):
    errors: list[BaseException] = []

    def call() -> None:
        try:
            c.mutation("t:interrupted")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(10)
    assert isinstance(errors[0], FunctionAborted) and "t:interrupted" in str(errors[0])
    assert c.query("t:log") == []


def test_system_exit_fails_the_mutation_and_live_queries_go_on(c):
    broken = c.subscribe("t:exits_live")
    live = c.subscribe("t:log")
    assert live.value == []
    with pytest.raises(FunctionAborted, match=r"t:exits raised SystemExit\(2\)"):
        c.mutation("t:exits")
    c.mutation("t:write", text="after")  # does not raise SystemExit (the worker lives)
    assert live.value == ["after"]
    assert isinstance(broken.error, FunctionAborted)
    c.mutation("t:write", text="again")
    assert live.value == ["after", "again"]


def test_time_limit_stops_a_mutation_and_commits_nothing(c):
    with pytest.raises(FunctionTimeout, match=r"mutation t:spin .* 0.2 s"):
        c.backend.call_with_ts(
            "t:spin", {}, kind="mutation", identity=None, public_only=True, time_limit=0.2
        )
    with pytest.raises(FunctionTimeout, match="query t:loop"):
        c.backend.call_with_ts(
            "t:loop", {}, kind="query", identity=None, public_only=True, time_limit=0.2
        )
    assert c.query("t:log") == []


def test_no_interrupt_outlives_its_call(c):
    # Limits that expire just as the handler ends must never interrupt the engine's own code.
    for i in range(300):
        try:
            c.backend.call_with_ts(
                "t:write",
                {"text": str(i)},
                kind="mutation",
                identity=None,
                public_only=True,
                time_limit=0.0005,
            )
        except FunctionTimeout:
            pass
    c.mutation("t:write", text="last")
    assert c.query("t:log")[-1] == "last"


class _Thing:
    """Something a weak reference can point at."""


def test_an_interrupt_lost_in_a_callback_is_dropped_and_sent_again(c):
    """The time-limit interrupt may land in a weakref callback run on the handler's thread:
    Python reports it there as unraisable (pytest turns that into an error) and drops it.
    The watchdog sends it again, and the lost one is not reported."""
    import time
    import weakref

    busy = [True]

    def slow_callback(ref):
        end = time.monotonic() + 0.4  # past the 0.2 s deadline, inside the callback
        while busy[0] and time.monotonic() < end:
            pass
        busy[0] = False  # once: the next injection then lands in the handler itself

    @kernel_ext.query
    def collects(ctx):
        refs = []
        while True:
            thing = _Thing()
            refs.append(weakref.ref(thing, slow_callback))
            del thing

    c.register("t:collects", collects)
    with pytest.raises(FunctionTimeout, match="query t:collects"):
        c.backend.call_with_ts(
            "t:collects", {}, kind="query", identity=None, public_only=True, time_limit=0.2
        )
    assert busy == [False]

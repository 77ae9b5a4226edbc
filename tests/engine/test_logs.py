"""Capturing a function execution's output as Convex log lines (`kernel_ext.engine.logs`)."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading

from kernel_ext.engine.logs import MAX_LINE_BYTES, MAX_LINES, capture_logs, format_line


def test_print_becomes_log_lines_and_stays_out_of_stdout(capsys):
    with capture_logs() as logs:
        print("one", 2)
        print("partial", end="")
        print(" line\nthree")
        sys.stdout.writelines(["four\n"])
    print("outside")
    assert logs.finish() == (
        "[LOG] 'one 2'",
        "[LOG] 'partial line'",
        "[LOG] 'three'",
        "[LOG] 'four'",
    )
    assert capsys.readouterr().out == "outside\n"


def test_unterminated_output_is_a_line_too():
    with capture_logs() as logs:
        print("no newline", end="")
    assert logs.finish() == ("[LOG] 'no newline'",)


def test_logging_records_take_their_level(caplog):
    log = logging.getLogger("user.functions")
    with caplog.at_level(logging.DEBUG, logger="user.functions"), capture_logs() as logs:
        log.debug("d %d", 1)
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        logging.getLogger("kernel_ext.engine").error("the server's own business")
    assert logs.finish() == (
        "[DEBUG] 'd 1'",
        "[INFO] 'i'",
        "[WARN] 'w'",
        "[ERROR] 'e'",
        "[ERROR] 'c'",
    )
    # The records still reach the process's handlers as usual.
    assert [r.getMessage() for r in caplog.records][:2] == ["d 1", "i"]


def test_records_below_the_configured_level_are_not_lines():
    log = logging.getLogger("user.quiet")
    log.setLevel(logging.WARNING)
    with capture_logs() as logs:
        log.info("dropped by the logging configuration")
    assert logs.finish() == ()


def test_quoting_and_the_line_size_limit():
    assert format_line("LOG", "it's") == '[LOG] "it\'s"'
    long = format_line("LOG", "é" * MAX_LINE_BYTES)
    assert len(long.encode()) <= MAX_LINE_BYTES and long.endswith(" (truncated)")


def test_the_line_count_limit():
    with capture_logs() as logs:
        for i in range(MAX_LINES + 5):
            print(i)
    lines = logs.finish()
    assert len(lines) == MAX_LINES + 1
    assert lines[-2] == f"[LOG] '{MAX_LINES - 1}'"
    assert lines[-1] == f"[WARN] 'Log overflow (maximum {MAX_LINES}): 5 lines omitted'"


def test_each_thread_captures_its_own_output():
    results: dict[int, tuple[str, ...]] = {}
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        with capture_logs() as logs:
            barrier.wait()
            for _ in range(50):
                print(f"thread {n}")
        results[n] = logs.finish()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, lines in results.items():
        assert lines == (f"[LOG] 'thread {n}'",) * 50


def test_nested_captures_are_separate():
    with capture_logs() as outer:
        print("outer")
        with capture_logs() as inner:
            print("inner")
        print("outer again")
    assert inner.finish() == ("[LOG] 'inner'",)
    assert outer.finish() == ("[LOG] 'outer'", "[LOG] 'outer again'")


def test_a_replaced_stdout_is_routed_again(capsys):
    """Something (pytest, contextlib.redirect_stdout, a kernel) may replace sys.stdout after the
    router was installed: the next capture routes the new stream too."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        with capture_logs() as logs:
            print("captured")
        print("to the buffer")
    assert logs.finish() == ("[LOG] 'captured'",)
    assert buffer.getvalue() == "to the buffer\n"


def test_a_progress_bar_without_newlines_costs_linear_time_and_bounded_memory():
    with capture_logs() as logs:
        for _ in range(100_000):
            print("x" * 50, end="")  # would be quadratic if the line were re-copied each time
    (line,) = logs.finish()
    assert line.startswith("[LOG] 'xxx") and line.endswith(" (truncated)")
    assert len(line.encode()) <= MAX_LINE_BYTES


def test_a_stream_handler_on_stdout_does_not_report_records_twice():
    log = logging.getLogger("user.stdout_handler")
    handler = logging.StreamHandler(sys.stdout)  # sys.stdout is the router by now
    log.addHandler(handler)
    log.propagate = False
    try:
        with capture_logs() as logs:
            log.warning("once")
    finally:
        log.removeHandler(handler)
    assert logs.finish() == ("[WARN] 'once'",)


def test_only_the_librarys_own_loggers_are_left_out():
    with capture_logs() as logs:
        logging.getLogger("kernel_extras").warning("a user package with a similar name")
        logging.getLogger("kernel_ext.sync").warning("the server's business")
    assert logs.finish() == ("[WARN] 'a user package with a similar name'",)


def test_output_after_finish_goes_to_the_real_stdout(capsys):
    leaked = {}

    def later() -> None:
        print("after the execution")  # e.g. a thread the handler started

    with capture_logs() as logs:
        leaked["context"] = contextvars.copy_context()
    logs.finish()
    leaked["context"].run(later)
    assert capsys.readouterr().out == "after the execution\n"


def test_checkpoint_forgets_a_discarded_attempts_lines():
    from kernel_ext.engine.logs import checkpoint

    with capture_logs() as logs:
        print("before")
        forget = checkpoint()
        print("attempt 1")
        forget()
        print("attempt 2")
    assert logs.finish() == ("[LOG] 'before'", "[LOG] 'attempt 2'")
    checkpoint()()  # outside a capture: nothing to forget


def test_a_retried_mutation_reports_only_its_last_attempt(tmp_path):
    from kernel_ext.engine.store import Store
    from kernel_ext.persistence.sqlite import SqlitePersistence

    store = Store(SqlitePersistence(tmp_path / "store.db"))
    try:
        doc = store.mutate(lambda txn: txn.insert("items", {"n": 0}))[0]
        attempts = []

        def bump(txn):
            attempts.append(len(attempts) + 1)
            print(f"attempt {attempts[-1]}")
            n = txn.get(doc)["n"]
            if len(attempts) == 1:  # another writer commits meanwhile: this attempt conflicts
                other = threading.Thread(
                    target=lambda: store.mutate(lambda t: t.patch(doc, {"n": 100}))
                )
                other.start()
                other.join()
            txn.patch(doc, {"n": n + 1})

        with capture_logs() as logs:
            store.mutate(bump)
        assert attempts == [1, 2]
        assert logs.finish() == ("[LOG] 'attempt 2'",)
    finally:
        store.close()

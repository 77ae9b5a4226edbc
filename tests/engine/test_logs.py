"""Capturing a function execution's output as Convex log lines (`kernel_ext.engine.logs`)."""

from __future__ import annotations

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

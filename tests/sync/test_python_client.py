"""The official Python client (`pip install convex`, a Rust extension speaking the sync
protocol) against `python -m kernel_ext serve`, each in its own process."""

from __future__ import annotations

import subprocess
import sys
import threading

from sync_peers import ISSUER, SECRET, python_client_script, run_python_client

from kernel_ext.functions.auth import make_dev_token


def test_query_mutation_action(shared_server, tmp_path):
    out = run_python_client(
        tmp_path,
        shared_server.url,
        """
        c = ConvexClient(URL)
        emit("before", c.query("counter:get", {"name": "py1"}))
        emit("inc", c.mutation("counter:inc", {"name": "py1", "by": 2}))
        emit("after", c.query("counter:get", {"name": "py1"}))
        emit("action", c.action("counter:inc_many", {"name": "py1", "times": 3}))
        emit("final", c.query("counter.js:get", {"name": "py1"}))
        emit("default", c.query("values"))
        emit("nested", c.query("nested/deep:where"))
        try:
            c.query("nothing:here")
        except Exception as e:
            emit("unknown", [type(e).__name__, str(e)])
        """,
    )
    assert out["before"] == 0.0 and out["inc"] == 2.0 and out["after"] == 2.0
    assert out["action"] == [3.0, 4.0, 5.0] and out["final"] == 5.0
    assert out["default"] == "the default export" and out["nested"] == "nested/deep:where"
    assert (
        out["unknown"][0] == "Exception" and "Could not find public function" in out["unknown"][1]
    )


def test_subscription_receives_another_clients_update(shared_server, tmp_path):
    out = run_python_client(
        tmp_path,
        shared_server.url,
        """
        watcher, writer = ConvexClient(URL), ConvexClient(URL)
        sub = watcher.subscribe("counter:get", {"name": "py-sub"})
        emit("first", next(sub))
        writer.mutation("counter:inc", {"name": "py-sub", "by": 5})
        value = next(sub)
        while value != 5.0:  # the iterator may re-yield the same value on empty Transitions
            value = next(sub)
        emit("updated", value)
        writer.mutation("counter:inc", {"name": "py-sub", "by": 1})
        value = next(sub)
        while value != 6.0:
            value = next(sub)
        emit("again", value)
        sub.unsubscribe()
        """,
    )
    assert out == {"first": 0.0, "updated": 5.0, "again": 6.0}


def test_an_http_write_reaches_a_python_subscription(shared_server, tmp_path):
    # The watcher prints its first value, then the test writes through the HTTP API.

    script = python_client_script(
        tmp_path,
        """
        sub = ConvexClient(URL).subscribe("messages:list")
        emit("first", next(sub))
        for value in sub:
            if value:
                emit("got", value)
                break
        """,
    )
    with subprocess.Popen(
        [sys.executable, str(script), shared_server.url], stdout=subprocess.PIPE, text=True
    ) as proc:
        watchdog = threading.Timer(60, proc.kill)  # a stuck client ends the test
        watchdog.start()
        try:
            assert '"first"' in proc.stdout.readline()
            shared_server.call("mutation", "messages:send", {"author": "http", "body": "hello"})
            line = proc.stdout.readline()
            assert '"got"' in line and "hello" in line
            assert proc.wait(20) == 0
        finally:
            watchdog.cancel()
            proc.kill()


def test_convex_error_data(shared_server, tmp_path):
    out = run_python_client(
        tmp_path,
        shared_server.url,
        """
        c = ConvexClient(URL)
        for label, call in [
            ("query", lambda: c.query("values:fail_convex", {"code": "Q"})),
            ("mutation", lambda: c.mutation("counter:fail_after_write", {"name": "py-rb"})),
            ("action", lambda: c.action("values:fail_action", {"code": "A"})),
        ]:
            try:
                call()
            except ConvexError as e:
                emit(label, [str(e), e.data])
        emit("rolled back", c.query("counter:get", {"name": "py-rb"}))
        try:
            c.query("values:fail_plain")
        except ConvexError:
            emit("plain", "ConvexError?!")
        except Exception as e:
            emit("plain", str(e))
        """,
    )
    message, data = out["query"]
    assert message.startswith("Uncaught ConvexError") and data == {"code": "Q", "n": {"int64": "7"}}
    assert out["mutation"][1] == {"code": "ROLLED_BACK", "name": "py-rb"}
    assert out["action"][1] == "A"
    assert out["rolled back"] == 0.0
    # As from Convex, the message ends with where the handler raised (file name and line).
    assert out["plain"] == (
        "Uncaught ValueError: plain failure with a secret path /etc/hidden"
        "\n    at fail_plain (values.py:28)"
    )


def test_int64_and_bytes_round_trip(shared_server, tmp_path):
    out = run_python_client(
        tmp_path,
        shared_server.url,
        """
        c = ConvexClient(URL)
        every_byte = bytes(range(256))
        emit("typed", c.query("values:typed", {"n": ConvexInt64(2**62), "b": every_byte}))
        emit("echo", c.query("values:echo", {
            "max": ConvexInt64(2**63 - 1), "min": ConvexInt64(-2**63), "f": 1.5, "i": 3,
            "nan": float("nan"), "inf": float("-inf"), "neg0": -0.0, "nested": [{"b": b""}, None, True],
        }))
        emit("action", c.action("values:echo_action", {"x": [ConvexInt64(-1), b"\\x00"]}))
        """,
    )
    assert out["typed"]["n"] == {"int64": str(2**62 + 1)}
    assert out["typed"]["b"] == {"bytes": bytes(range(256)).hex() + "21"}
    assert out["typed"]["types"] == ["int", "bytes"]
    echo = out["echo"]
    assert echo["max"] == {"int64": str(2**63 - 1)} and echo["min"] == {"int64": str(-(2**63))}
    assert echo["f"] == 1.5 and echo["i"] == 3.0 and echo["inf"] == float("-inf")
    assert echo["nested"] == [{"b": {"bytes": ""}}, None, True]
    assert out["action"] == [{"int64": "-1"}, {"bytes": "00"}]


def test_set_auth_clear_auth_and_admin_auth(shared_server, tmp_path):
    token = make_dev_token("ada", secret=SECRET, issuer=ISSUER, name="Ada Lovelace")
    out = run_python_client(
        tmp_path,
        shared_server.url,
        """
        c = ConvexClient(URL)
        emit("anonymous", c.query("who:ami"))
        c.set_auth(TOKEN)
        emit("user", c.query("who:ami"))
        sub = c.subscribe("who:ami")
        emit("subscribed", next(sub))
        c.clear_auth()
        value = next(sub)
        while value is not None:  # re-run under the new identity
            value = next(sub)
        emit("cleared", value)
        try:
            c.query("counter:secret")
        except Exception as e:
            emit("internal hidden", str(e))
        admin = ConvexClient(URL)
        admin.set_admin_auth(ADMIN_KEY)
        emit("internal", admin.query("counter:secret"))
        """,
        env={"TEST_TOKEN": token, "TEST_ADMIN_KEY": shared_server.admin_key},
    )
    assert out["anonymous"] is None
    assert out["user"]["subject"] == "ada" and out["user"]["name"] == "Ada Lovelace"
    assert out["user"]["tokenIdentifier"] == f"{ISSUER}|ada"
    assert out["subscribed"]["subject"] == "ada"
    assert out["cleared"] is None
    assert "Could not find public function" in out["internal hidden"]
    assert out["internal"] == "internal data"

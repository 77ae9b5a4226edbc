"""kernel_ext.connect("http://...") against a real server process."""

from __future__ import annotations

import signal
import threading
import time

import orjson
import pytest
from polling import wait_for

import kernel_ext
from kernel_ext import ConvexError
from kernel_ext.client.remote import RemoteClient, RemoteFunctionError, _error_of
from kernel_ext.errors import QueryError, SchemaViolation, ValidationError


def test_query_mutation_action_and_errors(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url) as client:
        assert isinstance(client, RemoteClient)
        assert client.query("counter:get", name="r1") == 0.0
        assert client.mutation("counter:inc", name="r1", by=2) == 2.0
        assert client.query("counter:get", {"name": "r1"}) == 2.0
        assert client.action("counter:inc_many", name="r1", times=3) == [3.0, 4.0, 5.0]
        with pytest.raises(ConvexError) as info:
            client.mutation("counter:fail_after_write", name="r2")
        assert info.value.data == {"code": "ROLLED_BACK", "name": "r2"}
        assert client.query("counter:get", name="r2") == 0.0
        with pytest.raises(RemoteFunctionError, match="Could not find public function"):
            client.query("counter:secret")
        with pytest.raises(ValidationError, match="'name' given twice"):
            client.mutation("counter:inc", {"name": "r1"}, name="r3")


def test_admin_key_reaches_internal_functions(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as admin:
        assert admin.query("counter:secret") == "internal data"


def test_subscription_sees_other_clients_and_reads_own_writes(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url) as a, kernel_ext.connect(server.url) as b:
        sub = a.subscribe("counter:get", name="shared")
        assert sub.value == 0.0
        changed = threading.Event()
        sub.on_change(lambda value: changed.set())
        b.mutation("counter:inc", name="shared", by=5)
        assert changed.wait(10)
        assert sub.value == 5.0
        a.mutation("counter:inc", name="shared", by=1)
        assert sub.value == 6.0  # read your writes: reflected when the mutation returned


def test_reconnects_after_server_restart(server_factory):
    server = server_factory()
    client = kernel_ext.connect(server.url)
    try:
        statuses = []
        client.on_status(statuses.append)
        sub = client.subscribe("counter:get", name="again")
        assert sub.value == 0.0
        server.stop(signal.SIGTERM)
        wait_for(lambda: "reconnecting" in statuses)
        server.start()
        with kernel_ext.connect(server.url) as other:
            other.mutation("counter:inc", name="again", by=3)
        wait_for(lambda: sub.value == 3.0, timeout=20)
        wait_for(lambda: statuses[-1] == "connected")
        assert client.mutation("counter:inc", name="again", by=1) == 4.0
    finally:
        client.close()


def test_live_table_shows_reconnecting_then_catches_up(server_factory):
    from widgets import LiveTable

    server = server_factory()
    client = kernel_ext.connect(server.url)
    try:
        listeners = len(client._status_listeners)
        table = LiveTable(client, "counter:get", {"name": "w"})
        table.send = lambda *a, **k: None
        wait_for(lambda: table.status == "ready")
        server.stop(signal.SIGTERM)
        wait_for(lambda: table.status == "reconnecting")
        server.start()
        with kernel_ext.connect(server.url) as other:
            other.mutation("counter:inc", name="w", by=2)
        wait_for(lambda: table.status == "ready" and table.model.rows == [2.0], timeout=20)
        table.close()
        assert len(client._status_listeners) == listeners  # the table stopped listening
    finally:
        client.close()


def test_push_cells_and_modules_need_the_admin_key(server_factory, tmp_path):
    server = server_factory()
    cell = '%%convex_query pushed:hello(name: v.string())\nreturn "hello " + name'
    with kernel_ext.connect(server.url) as anonymous:
        with pytest.raises(kernel_ext.errors.AuthenticationError, match="needs the admin key"):
            anonymous.push_cell(cell)
        for read in (anonymous.tables, anonymous.functions, lambda: anonymous.table_df("t")):
            with pytest.raises(kernel_ext.errors.AuthenticationError, match="needs the admin"):
                read()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        assert owner.push_cell(cell) == ["pushed:hello"]
        assert owner.query("pushed:hello", name="ada") == "hello ada"
        with pytest.raises(kernel_ext.errors.FunctionError, match="SyntaxError"):
            owner.push_cell("%%convex_query pushed:broken\nreturn (")
        # The library's own errors keep their class through a push (by code, not by text).
        with pytest.raises(kernel_ext.errors.SchemaError):
            owner.push_cell('%%convex_schema\nbad = define_table({"x": v.strng()})')
        with pytest.raises(kernel_ext.errors.HeaderError):
            owner.push_cell("%%convex_query pushed:bad(x v.string())\nreturn x")
        folder = tmp_path / "fns"
        folder.mkdir()
        (folder / "extra.py").write_text(
            "from kernel_ext import query\n\n@query\ndef ping(ctx):\n    return 'pong'\n"
        )
        assert "extra:ping" in owner.load_functions(folder)
        assert owner.query("extra:ping") == "pong"


def test_magics_against_a_served_store(server_factory, tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    server = server_factory()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVEX_URL", server.url)
    monkeypatch.setenv("CONVEX_ADMIN_KEY", server.admin_key)
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "kernel_ext")
        assert isinstance(ip.user_ns["convex"], RemoteClient)
        for cell in (
            '%%convex_schema\nnotes = define_table({"text": v.string()})',
            "%%convex_mutation notes:add(text: v.string())\nreturn db.insert('notes', {'text': text})",
            "%%convex_query notes:all\nreturn [n['text'] for n in db.query('notes').collect()]",
        ):
            result = ip.run_cell(cell)
            assert result.success, result.error_in_exec
        ip.run_line_magic("convex", "mutation notes:add text='from a magic'")
        assert ip.user_ns["convex"].query("notes:all") == ["from a magic"]
        ip.run_cell("def shout(text):\n    return text.upper()")
        with pytest.warns(UserWarning, match="uses shout from this notebook"):
            result = ip.run_cell("%%convex_query notes:loud\nreturn [shout(t) for t in ['a']]")
        assert result.success  # pushed all the same: the warning says what will fail
        functions = ip.run_line_magic("convex", "functions")
        assert {"notes:add", "notes:all"} <= set(functions["path"])
        tables = ip.run_line_magic("convex", "tables")
        assert "notes" in set(tables["table"])
    finally:
        ip.run_line_magic("unload_ext", "kernel_ext")
        InteractiveShell.clear_instance()


def test_remote_bulk_import_table_df_and_paged_live_table(server_factory):
    import pandas as pd

    from widgets import LiveTable

    server = server_factory()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        ids = owner.import_dataframe(
            "rows", pd.DataFrame({"n": range(450)}), batch_size=200, progress=False
        )
        assert len(ids) == 450
        frame = owner.table_df("rows")
        assert list(frame["n"]) == list(range(450))
        assert list(frame.index) == ids
        owner.push_cell(
            "%%convex_query rows:page(paginationOpts: v.any())\n"
            "return db.query('rows').paginate(paginationOpts)"
        )
        assert owner.function_info("rows:page")["kind"] == "query"
        table = LiveTable(owner, "rows:page")
        table.send = lambda *a, **k: None
        assert table._paged is not None
        table._on_front_end_message(table, {"type": "window", "offset": 400, "limit": 50}, [])
        wait_for(lambda: table.total == 450 and table.complete, timeout=20)
        table.close()


# -- auth ------------------------------------------------------------------------------------


def test_set_auth_returns_once_accepted_and_raises_when_refused(server_factory):
    from sync_peers import ISSUER, SECRET

    from kernel_ext.errors import AuthenticationError
    from kernel_ext.functions.auth import make_dev_token

    server = server_factory("--auth-issuer", ISSUER, "--auth-secret", SECRET)
    with kernel_ext.connect(server.url) as client:
        client.set_auth(make_dev_token("ada", secret=SECRET, issuer=ISSUER))
        assert client.query("who:ami")["subject"] == "ada"
        expired = make_dev_token("bob", secret=SECRET, issuer=ISSUER, ttl_s=-10)
        started = time.monotonic()
        with pytest.raises(AuthenticationError, match="expired"):
            client.set_auth(expired)
        assert time.monotonic() - started < 5
        # The client carries on without the refused token, and does not keep reconnecting.
        assert client.query("who:ami") is None
        connections = client._session.connection_count
        time.sleep(1.0)
        assert client._session.connection_count == connections
        client.set_auth(make_dev_token("eve", secret=SECRET, issuer=ISSUER))
        assert client.query("who:ami")["subject"] == "eve"
        client.clear_auth()
        assert client.query("who:ami") is None


def test_a_server_that_verifies_no_tokens_refuses_them_clearly(server_factory):
    from kernel_ext.errors import AuthenticationError

    server = server_factory()
    with kernel_ext.connect(server.url) as client:
        with pytest.raises(AuthenticationError, match="No auth provider"):
            client.set_auth("any.token.at-all")
        assert client.query("counter:get", name="anon") == 0.0


def test_a_refused_admin_key_warns_and_the_client_carries_on(server_factory):
    server = server_factory()
    with pytest.warns(UserWarning, match="refused this client's admin credentials"):
        client = kernel_ext.connect(server.url, admin_key="not-the-key")
        try:
            assert client.query("counter:get", name="x") == 0.0
        finally:
            client.close()


def test_tables_functions_and_with_identity_like_the_embedded_client(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        owner.mutation("counter:inc", name="t1")
        assert "counters" in owner.tables()
        counters = {
            "table": "counters",
            "indexes": ["by_creation_time", "by_id", "by_name"],
            "searchIndexes": [],
            "vectorIndexes": [],
        }
        assert counters in owner.describe_tables()
        assert "counter:get" in owner.functions()
        as_ada = owner.with_identity({"sub": "ada", "iss": "https://issuer", "email": "a@x"})
        try:
            identity = as_ada.query("who:ami")
            assert identity["subject"] == "ada" and identity["email"] == "a@x"
            assert identity["tokenIdentifier"] == "https://issuer|ada"
        finally:
            as_ada.close()
    with kernel_ext.connect(server.url) as anonymous:
        with pytest.raises(kernel_ext.errors.AuthenticationError, match="needs the admin key"):
            anonymous.with_identity({"sub": "ada", "iss": "https://issuer"})


def test_library_errors_keep_their_classes_across_the_wire(server_factory):
    """`except ArgumentError` (etc.) works the same with the embedded and the remote client."""
    from kernel_ext.errors import ArgumentError, UnknownFunction, WrongFunctionKind

    server = server_factory()
    with kernel_ext.connect(server.url) as client:
        with pytest.raises(ArgumentError, match="ArgumentValidationError"):
            client.mutation("counter:inc", name=5)
        with pytest.raises(UnknownFunction, match="Could not find public function"):
            client.query("counter:nope")
        with pytest.raises(WrongFunctionKind, match="defined as Mutation"):
            client.query("counter:inc", name="x")
        with pytest.raises(RemoteFunctionError, match="Uncaught ValueError") as info:
            client.query("values:fail_plain")
        assert type(info.value) is RemoteFunctionError  # a handler's own error: as text
        # Library errors raised inside a handler: the class comes from the wire's code, the
        # message (which no prefix table knows) is kept as the server wrote it.
        with pytest.raises(QueryError, match="by_nothing") as query_info:
            client.query("values:bad_index")
        assert isinstance(query_info.value, RemoteFunctionError)
        with pytest.raises(SchemaViolation):
            client.mutation("values:bad_insert")


def test_conflict_code_maps_to_conflict_error():
    """A MutationResponse with Convex's OCC code raises ConflictError, whatever its text."""
    from kernel_ext.errors import ConflictError, RemoteConflictError
    from kernel_ext.sync.client_protocol import ClientSession, RequestDone

    session = ClientSession()
    session.open_messages("InitialConnect")
    request_id, _ = session.request("Mutation", "counter:inc", {})
    [done] = session.receive(
        orjson.dumps(
            {
                "type": "MutationResponse",
                "requestId": request_id,
                "success": False,
                "result": "the text is free",
                "ts": None,
                "logLines": [],
                "errorCode": "OptimisticConcurrencyControlFailure",
            }
        ).decode()
    )
    assert isinstance(done, RequestDone) and done.error_code is not None
    error = _error_of(done.error, done.error_data, done.has_error_data, done.error_code)
    assert type(error) is RemoteConflictError and isinstance(error, ConflictError)
    assert str(error) == "the text is free"


def test_arguments_that_cannot_travel_are_library_errors(server_factory):
    """Checked before anything is sent: a ValidationError, never an orjson TypeError or a
    RecursionError; enum keys (a str subclass) travel as plain strings."""
    import enum

    class Key(enum.StrEnum):
        A = "a"

    deep: list = []
    for _ in range(900):
        deep = [deep]
    server = server_factory()
    with kernel_ext.connect(server.url) as client:
        assert client.query("values:echo", {"x": {Key.A: 1}}) == {"x": {"a": 1}}
        with pytest.raises(ValidationError, match="too nested"):
            client.query("values:echo", {"x": deep})
        with pytest.raises(ValidationError, match="not a supported Convex value"):
            client.mutation("counter:inc", {"name": object()})
        with pytest.raises(ValidationError, match="must be a dict"):
            client.mutation("counter:inc", [1, 2])


def test_query_arguments_over_the_size_limits_fail_before_anything_is_sent(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url) as client:
        for call in (client.query, client.subscribe):
            with pytest.raises(ValidationError, match="8193 elements"):
                call("counter:get", name="big", extra=[0] * 8193)
        assert not client._by_key  # no server subscription was made
        assert client.query("counter:get", name="big") == 0.0


def test_an_import_to_a_vanished_server_raises_the_imports_error(server_factory):
    import pandas as pd

    server = server_factory()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        server.stop(signal.SIGKILL)
        with pytest.raises(OSError) as info:  # connection refused
            owner.import_dataframe("t", pd.DataFrame({"n": [1, 2]}), progress=False)
        # The failing batch's error (not the closing sync's) says what was not imported.
        assert "rows 0..1 of the DataFrame" in "\n".join(getattr(info.value, "__notes__", []))


def test_closing_a_subscription_after_its_client_does_nothing(server_factory):
    """A LiveTable or subscription closed after its client (the garbage collector does it
    late) must not fail: there is no socket to tell any more."""
    server = server_factory()
    client = kernel_ext.connect(server.url)
    sub = client.subscribe("counter:get", name="late")
    assert sub.value == 0.0
    client.close()
    sub.close()  # raised RuntimeError: Event loop is closed
    sub.close()

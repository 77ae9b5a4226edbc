"""The sans-I/O session: messages in, messages and events out (no sockets, no threads)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_ext import ConvexError
from kernel_ext.errors import AuthenticationError, ProtocolMisuse
from kernel_ext.sync import messages as m
from kernel_ext.sync.outcomes import Outcome, outcome_of_error
from kernel_ext.sync.protocol import (
    ANONYMOUS,
    CLOSE_AUTH_ERROR,
    CLOSE_PROTOCOL_ERROR,
    CloseConnection,
    Identity,
    RunAction,
    RunMutation,
    State,
    SubscribeQuery,
    SyncProtocol,
    UnsubscribeQuery,
)

T1 = m.decode_ts("fzb93hPI6hg=")
T2 = m.decode_ts("0bPaGhTI6hg=")


class FakeAuth:
    """Accepts user tokens "good:<sub>" (expiring at 1000) and the admin key "key"."""

    def authenticate_user(self, token):
        if not token.startswith("good:"):
            raise AuthenticationError("Invalid auth token: bad signature")
        sub = token.removeprefix("good:")
        return Identity(
            {"subject": sub, "issuer": "test", "tokenIdentifier": f"test|{sub}"}, expires_at=1000.0
        )

    def authenticate_admin(self, key, acting_as):
        if key != "key":
            raise AuthenticationError("The admin key is not valid for this server")
        return Identity(acting_as, admin=True)


def send(session, **message):
    session.receive_text(orjson.dumps(message))


def sent(session):
    return [orjson.loads(t) for t in session.data_to_send()]


def connected(now=0.0, **kw):
    session = SyncProtocol(FakeAuth(), now=now, **kw)
    send(
        session,
        type="Connect",
        sessionId="s1",
        connectionCount=0,
        lastCloseReason="InitialConnect",
        clientTs=0,
    )
    assert session.state is State.OPEN and session.session_id == "s1"
    return session


def add(session, base, *adds, removes=()):
    mods = [
        {"type": "Add", "queryId": q, "udfPath": path, "args": [args]} for q, path, args in adds
    ]
    mods += [{"type": "Remove", "queryId": q} for q in removes]
    send(session, type="ModifyQuerySet", baseVersion=base, newVersion=base + 1, modifications=mods)


def flush(session):
    """What a transport does: send the due Transition at the ts asked for."""
    ts = session.transition_ts()
    assert ts is not None, "a Transition should be due"
    session.send_transition(ts)
    return sent(session)


def test_the_transcript_of_protocol_section_5():
    s = connected()
    add(s, 0, (0, "counter:get", {}))
    assert s.events_received() == [SubscribeQuery(0, 1, "counter:get", {}, ANONYMOUS)]
    assert s.transition_ts() is None  # no result yet
    s.receive_query_result(0, 1, Outcome.ok(0.0), T1)
    assert flush(s) == [
        {
            "type": "Transition",
            "startVersion": {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="},
            "endVersion": {"querySet": 1, "identity": 0, "ts": "fzb93hPI6hg="},
            "modifications": [
                {
                    "type": "QueryUpdated",
                    "queryId": 0,
                    "value": 0.0,
                    "logLines": [],
                    "journal": None,
                }
            ],
        }
    ]
    send(s, type="Mutation", requestId=0, udfPath="counter:inc", args=[{"n": 1.0}])
    assert s.events_received() == [RunMutation(0, "counter:inc", {"n": 1.0}, ANONYMOUS)]
    s.receive_mutation_result(0, Outcome.ok(None), T2)
    assert sent(s) == [
        {
            "type": "MutationResponse",
            "requestId": 0,
            "success": True,
            "result": None,
            "ts": "0bPaGhTI6hg=",
            "logLines": [],
        }
    ]
    assert s.transition_ts() == T2
    s.receive_query_result(0, 1, Outcome.ok(1.0), T2)
    [transition] = flush(s)
    assert transition["startVersion"] == {"querySet": 1, "identity": 0, "ts": "fzb93hPI6hg="}
    assert transition["endVersion"] == {"querySet": 1, "identity": 0, "ts": "0bPaGhTI6hg="}
    assert transition["modifications"][0]["value"] == 1.0
    add(s, 1, removes=[0])
    assert s.events_received() == [UnsubscribeQuery(0, 1)]
    [removed] = flush(s)
    assert removed["endVersion"] == {"querySet": 2, "identity": 0, "ts": "0bPaGhTI6hg="}
    assert removed["modifications"] == [{"type": "QueryRemoved", "queryId": 0}]


def test_versions_chain_exactly_and_ts_never_decreases():
    s = connected()
    add(s, 0, (0, "a:q", {}))
    s.receive_query_result(0, 1, Outcome.ok(1.0), 100)
    previous = flush(s)[0]["endVersion"]
    for i, ts in enumerate([150, 120, 200]):
        s.receive_query_result(0, 1, Outcome.ok(float(i + 2)), ts)
        [t] = flush(s)
        assert t["startVersion"] == previous
        assert m.decode_ts(t["endVersion"]["ts"]) >= m.decode_ts(previous["ts"])
        previous = t["endVersion"]
    assert m.decode_ts(previous["ts"]) == 200
    s.receive_query_result(0, 1, Outcome.ok(9.0), 210)
    s.send_transition(5)  # a transport asking for less still gets a monotonic ts
    assert m.decode_ts(sent(s)[0]["endVersion"]["ts"]) == 210


def test_a_transition_waits_for_every_added_query():
    s = connected()
    add(s, 0, (0, "a:q", {}), (1, "a:r", {"x": 1}))
    events = s.events_received()
    assert [e.query_id for e in events] == [0, 1] and events[1].args == {"x": 1.0}
    s.receive_query_result(0, 1, Outcome.ok("a"), 10)
    assert s.transition_ts() is None
    s.receive_query_result(1, 2, Outcome.failure("no"), 12)
    assert s.transition_ts() == 12
    [t] = flush(s)
    assert [mod["type"] for mod in t["modifications"]] == ["QueryUpdated", "QueryFailed"]
    assert t["endVersion"]["querySet"] == 1


def test_unchanged_results_are_not_sent_again_but_removed_queries_are_acknowledged():
    s = connected()
    add(s, 0, (0, "a:q", {}), (1, "a:r", {}))
    s.receive_query_result(0, 1, Outcome.ok(1.0), 10)
    s.receive_query_result(1, 2, Outcome.ok(2.0), 10)
    flush(s)
    s.receive_query_result(0, 1, Outcome.ok(1.0), 20)
    assert s.transition_ts() is None  # nothing new for the client
    s.receive_query_result(0, 1, Outcome.ok(3.0), 30)
    s.receive_query_result(0, 1, Outcome.ok(1.0), 31)  # changed back before it was sent
    add(s, 1, removes=[1])
    [t] = flush(s)
    assert t["modifications"] == [{"type": "QueryRemoved", "queryId": 1}]
    s.receive_query_result(1, 2, Outcome.ok(5.0), 40)  # late result of a removed query
    assert s.transition_ts() is None


def test_errors_reach_the_client_as_data():
    s = connected()
    add(s, 0, (0, "a:q", {}))
    s.receive_query_result(0, 1, outcome_of_error(ConvexError({"code": "E1"})), 10)
    [t] = flush(s)
    assert t["modifications"] == [
        {
            "type": "QueryFailed",
            "queryId": 0,
            "errorMessage": 'Uncaught ConvexError: {"code":"E1"}',
            "logLines": [],
            "journal": None,
            "errorData": {"code": "E1"},
        }
    ]


def test_bad_arguments_fail_the_call_not_the_connection():
    s = connected()
    add(s, 0, (0, "a:q", {"n": {"$integer": "AA=="}}))
    assert s.events_received() == []  # never subscribed
    [t] = flush(s)
    assert t["modifications"][0]["type"] == "QueryFailed"
    assert "ArgumentValidationError" in t["modifications"][0]["errorMessage"]
    send(s, type="Mutation", requestId=0, udfPath="a:m", args=[{}, {}])
    [response] = sent(s)
    assert response["type"] == "MutationResponse" and response["success"] is False
    assert response["ts"] is None and response["logLines"] == []
    assert s.transition_ts() is not None  # Rust waits for a Transition after any response
    send(s, type="Action", requestId=1, udfPath="a:act", args=[{"x": {"$bytes": 5}}])
    [response] = sent(s)
    assert response["type"] == "ActionResponse" and response["success"] is False
    send(s, type="Mutation", requestId=2, udfPath="a:m", args=[{}], componentPath="child")
    assert "Components" in sent(s)[0]["result"]
    add(s, 1, removes=[0])
    assert s.events_received() == []  # nothing to unsubscribe
    assert not s.closed


def test_mutations_run_one_at_a_time_in_order_actions_concurrently():
    s = connected()
    send(s, type="Mutation", requestId=0, udfPath="a:m", args=[{}])
    send(s, type="Mutation", requestId=1, udfPath="a:m", args=["bad"])
    send(s, type="Mutation", requestId=2, udfPath="a:m", args=[{"k": 2}])
    send(s, type="Action", requestId=3, udfPath="a:act", args=[{}])
    send(s, type="Action", requestId=4, udfPath="a:act", args=[{}])
    assert s.events_received() == [
        RunMutation(0, "a:m", {}, ANONYMOUS),
        RunAction(3, "a:act", {}, ANONYMOUS),
        RunAction(4, "a:act", {}, ANONYMOUS),
    ]
    s.receive_action_result(4, Outcome.ok("four"))
    assert [r["requestId"] for r in sent(s)] == [4]
    s.receive_mutation_result(0, Outcome.ok(1.0), 50)
    # Mutation 1 fails in its turn (bad args), then mutation 2 starts.
    assert [(r["requestId"], r["success"]) for r in sent(s)] == [(0, True), (1, False)]
    assert s.events_received() == [RunMutation(2, "a:m", {"k": 2.0}, ANONYMOUS)]
    assert s.transition_ts() == 50
    with pytest.raises(ProtocolMisuse):
        s.receive_mutation_result(0, Outcome.ok(None), 60)
    with pytest.raises(ProtocolMisuse):
        s.receive_action_result(4, Outcome.ok(None))


def test_failed_mutation_response_shape():
    s = connected()
    send(s, type="Mutation", requestId=1, udfPath="a:m", args=[{}])
    s.events_received()
    s.receive_mutation_result(1, outcome_of_error(ConvexError({"why": "nope"})), 77)
    [r] = sent(s)
    assert r == {
        "type": "MutationResponse",
        "requestId": 1,
        "success": False,
        "result": 'Uncaught ConvexError: {"why":"nope"}',
        "ts": None,
        "errorData": {"why": "nope"},
        "logLines": [],
    }


def test_authenticate_reruns_every_query_under_the_new_identity():
    s = connected()
    add(s, 0, (0, "who:ami", {}))
    s.events_received()
    s.receive_query_result(0, 1, Outcome.ok(None), 10)
    flush(s)
    send(s, type="Authenticate", baseVersion=0, tokenType="User", value="good:ada")
    user = s.identity
    assert user.user["subject"] == "ada"
    assert s.events_received() == [
        UnsubscribeQuery(0, 1),
        SubscribeQuery(0, 2, "who:ami", {}, user),
    ]
    assert s.transition_ts() is None  # waiting for the re-run
    s.receive_query_result(0, 1, Outcome.ok("stale"), 11)  # old subscription: ignored
    s.receive_query_result(0, 2, Outcome.ok("ada"), 12)
    [t] = flush(s)
    assert t["startVersion"]["identity"] == 0 and t["endVersion"]["identity"] == 1
    assert t["modifications"][0]["value"] == "ada"
    send(s, type="Mutation", requestId=0, udfPath="a:m", args=[{}])
    assert s.events_received()[0].identity == user
    # Logging out: identity 1 -> 2 even when the result does not change.
    send(s, type="Authenticate", baseVersion=1, tokenType="None")
    s.events_received()
    s.receive_query_result(0, 3, Outcome.ok("ada"), 13)
    [t] = flush(s)
    assert t["endVersion"]["identity"] == 2 and t["modifications"] == []
    assert s.identity == ANONYMOUS


def test_admin_key_and_impersonation():
    s = connected()
    send(s, type="Authenticate", baseVersion=0, tokenType="Admin", value="key")
    assert s.identity == Identity(None, admin=True)
    [t] = flush(s)
    assert t["endVersion"]["identity"] == 1
    send(
        s,
        type="Authenticate",
        baseVersion=1,
        tokenType="Admin",
        value="key",
        impersonating={"subject": "u", "issuer": "i"},
    )
    assert s.identity.admin and s.identity.user == {"subject": "u", "issuer": "i"}


@pytest.mark.parametrize(
    "message",
    [
        {"tokenType": "User", "value": "forged"},
        {"tokenType": "Admin", "value": "wrong key"},
    ],
)
def test_a_refused_token_gets_an_auth_error_and_closes(message):
    s = connected()
    add(s, 0, (0, "a:q", {}))
    s.events_received()
    send(s, type="Authenticate", baseVersion=0, **message)
    [error] = sent(s)
    assert error["type"] == "AuthError" and error["baseVersion"] == 0
    assert error["authUpdateAttempted"] is True and error["error"]
    assert s.events_received() == [
        UnsubscribeQuery(0, 1),
        CloseConnection(CLOSE_AUTH_ERROR, "AuthError"),
    ]
    assert s.closed and s.transition_ts() is None


def test_an_expired_token_gets_an_auth_error():
    s = connected()
    send(s, type="Authenticate", baseVersion=0, tokenType="User", value="good:ada")
    flush(s)
    s.receive_tick(999.0)
    assert not s.closed
    s.receive_tick(1000.0)
    [error] = sent(s)
    assert error == {
        "type": "AuthError",
        "error": "The auth token has expired",
        "baseVersion": 1,
        "authUpdateAttempted": False,
    }
    assert s.events_received() == [CloseConnection(CLOSE_AUTH_ERROR, "AuthError")]


def test_ping_after_idle_interval_only():
    s = connected(now=0.0, ping_interval=15.0)
    s.receive_tick(10.0)
    assert sent(s) == []
    s.receive_tick(15.0)
    assert sent(s) == [{"type": "Ping"}]
    s.receive_tick(20.0)
    assert sent(s) == []
    send(s, type="Mutation", requestId=0, udfPath="a:m", args=[{}])
    s.receive_mutation_result(0, Outcome.ok(None), 5)
    sent(s)
    s.receive_tick(29.0)  # something was sent since the last tick: idle restarts at 29
    s.receive_tick(43.0)
    assert sent(s) == []
    s.receive_tick(44.0)
    assert sent(s) == [{"type": "Ping"}]


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        (
            [{"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2, "modifications": []}],
            "BaseVersionMismatch",
        ),
        (
            [{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 0, "modifications": []}],
            "newVersion",
        ),
        (
            [{"type": "Authenticate", "baseVersion": 3, "tokenType": "None"}],
            "IdentityVersionMismatch",
        ),
        ([{"type": "Connect", "sessionId": "again", "connectionCount": 1}], "twice"),
        (
            [
                {
                    "type": "ModifyQuerySet",
                    "baseVersion": 0,
                    "newVersion": 1,
                    "modifications": [
                        {"type": "Add", "queryId": 0, "udfPath": "a:q", "args": [{}]},
                        {"type": "Add", "queryId": 0, "udfPath": "a:r", "args": [{}]},
                    ],
                }
            ],
            "already",
        ),
        (
            [
                {
                    "type": "ModifyQuerySet",
                    "baseVersion": 0,
                    "newVersion": 1,
                    "modifications": [{"type": "Remove", "queryId": 9}],
                }
            ],
            "not in the query set",
        ),
        ([{"type": "Mutation", "requestId": 0, "udfPath": 5, "args": [{}]}], "udfPath"),
    ],
)
def test_protocol_violations_get_a_fatal_error_and_close(messages, fragment):
    s = connected()
    for message in messages:
        send(s, **message)
    [fatal] = sent(s)
    assert fatal["type"] == "FatalError" and fragment in fatal["error"]
    [close] = s.events_received()
    assert close.code == CLOSE_PROTOCOL_ERROR and fragment in close.reason
    assert s.closed
    # Nothing more happens on a closed session.
    send(s, type="Mutation", requestId=0, udfPath="a:m", args=[{}])
    s.receive_tick(1e9)
    assert sent(s) == [] and s.events_received() == []


def test_the_first_message_must_be_connect():
    s = SyncProtocol(FakeAuth(), now=0)
    send(s, type="Mutation", requestId=0, udfPath="a:m", args=[{}])
    assert sent(s)[0]["type"] == "FatalError"
    s = SyncProtocol(FakeAuth(), now=0)
    s.receive_text("{not json")
    assert "Invalid JSON" in sent(s)[0]["error"]


def test_fatal_error_unsubscribes_live_queries_and_close_is_idempotent():
    s = connected()
    add(s, 0, (0, "a:q", {}), (1, "a:r", {}))
    s.events_received()
    s.receive_text(b"\x00garbage")
    assert s.events_received()[:2] == [UnsubscribeQuery(0, 1), UnsubscribeQuery(1, 2)]
    s.close()
    assert s.events_received() == []


def test_close_unsubscribes_without_closing_twice():
    s = connected()
    add(s, 0, (0, "a:q", {}))
    s.events_received()
    s.close()
    assert s.events_received() == [UnsubscribeQuery(0, 1)]
    s.receive_query_result(0, 1, Outcome.ok(1.0), 5)
    s.receive_mutation_result(0, Outcome.ok(None), 5)  # ignored once closed
    assert s.transition_ts() is None and sent(s) == []
    with pytest.raises(ProtocolMisuse):
        s.send_transition(5)


def test_event_messages_are_ignored():
    s = connected()
    send(s, type="Event", eventType="ClientConnect", event={"marks": []})
    assert sent(s) == [] and s.events_received() == [] and s.transition_ts() is None


_messages = st.one_of(
    st.builds(
        lambda b, n, ids: {
            "type": "ModifyQuerySet",
            "baseVersion": b,
            "newVersion": n,
            "modifications": [
                {"type": "Add", "queryId": i, "udfPath": "a:q", "args": [{}]}
                if i >= 0
                else {"type": "Remove", "queryId": -i}
                for i in ids
            ],
        },
        st.integers(0, 3),
        st.integers(0, 4),
        st.lists(st.integers(-3, 3), max_size=3),
    ),
    st.builds(
        lambda r: {"type": "Mutation", "requestId": r, "udfPath": "a:m", "args": [{}]},
        st.integers(0, 3),
    ),
    st.builds(
        lambda b, t: {"type": "Authenticate", "baseVersion": b, "tokenType": t, "value": "good:x"},
        st.integers(0, 2),
        st.sampled_from(["User", "None"]),
    ),
    st.just({"type": "Event", "eventType": "x", "event": None}),
)


@settings(max_examples=200)
@given(st.lists(st.tuples(_messages, st.integers(0, 4)), max_size=12))
def test_random_sessions_keep_their_invariants(steps):
    """Whatever a client sends, the session never raises, chains versions exactly and only
    answers requests that are running."""
    s = connected()
    subscribed: dict[tuple[int, int], bool] = {}
    running: list[int] = []
    previous = m.StateVersion().to_json()
    ts = 0
    for message, action in steps:
        send(s, **message)
        for event in s.events_received():
            if isinstance(event, SubscribeQuery):
                subscribed[(event.query_id, event.token)] = True
            elif isinstance(event, UnsubscribeQuery):
                subscribed.pop((event.query_id, event.token))
            elif isinstance(event, RunMutation):
                running.append(event.request_id)
        ts += action
        for query_id, token in list(subscribed):
            s.receive_query_result(query_id, token, Outcome.ok(float(ts % 3)), ts)
        if running and action % 2:
            s.receive_mutation_result(running.pop(0), Outcome.ok(None), ts)
            for event in s.events_received():
                if isinstance(event, RunMutation):
                    running.append(event.request_id)
        if s.transition_ts() is not None:
            s.send_transition(ts)
        for out in sent(s):
            if out["type"] == "Transition":
                assert out["startVersion"] == previous
                previous = out["endVersion"]
        if s.closed:
            break

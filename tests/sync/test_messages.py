"""Decoding client messages and building server messages (no sockets)."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_ext import ConvexError
from kernel_ext.errors import ArgumentError, ProtocolError, UnknownFunction, ValidationError
from kernel_ext.sync import messages as m
from kernel_ext.sync.outcomes import SERVER_ERROR, Outcome, outcome_of_error, to_clean_json

# -- timestamps and paths ------------------------------------------------------------------


def test_ts_encoding_matches_the_transcripts():
    assert m.encode_ts(0) == "AAAAAAAAAAA="
    assert m.decode_ts("fzb93hPI6hg=") == 0x18EAC813DEFD367F
    assert m.decode_ts(m.encode_ts(1_763_000_000_000_000_000)) == 1_763_000_000_000_000_000


@given(st.integers(0, 2**63 - 1))
def test_ts_round_trip(ts):
    assert m.decode_ts(m.encode_ts(ts)) == ts


@pytest.mark.parametrize("bad", [5, "not base64!", "AAAA", m.encode_ts(0)[:-1], "//////////8="])
def test_bad_ts_is_a_protocol_error(bad):
    with pytest.raises(ProtocolError):
        m.decode_ts(bad)


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("counter", "counter:default"),
        ("counter:default", "counter:default"),
        ("counter.js:get", "counter:get"),
        ("counter:get", "counter:get"),
        ("dir/x:f", "dir/x:f"),
        ("dir/x.js:f", "dir/x:f"),
        ("dir/x", "dir/x:default"),
    ],
)
def test_paths_are_canonicalised(path, canonical):
    assert m.canonical_udf_path(path) == canonical


@pytest.mark.parametrize("bad", ["", "a:b:c", "x:", ":f", "/x:f", "a//b:f", "../x:f", 7, None])
def test_bad_paths_are_protocol_errors(bad):
    with pytest.raises(ProtocolError):
        m.canonical_udf_path(bad)


def test_state_version_wire_form():
    assert m.StateVersion(1, 2, 0).to_json() == {
        "querySet": 1,
        "identity": 2,
        "ts": "AAAAAAAAAAA=",
    }


# -- client messages -----------------------------------------------------------------------

PY_CONNECT = (
    '{"type":"Connect","sessionId":"2ae4518b","connectionCount":0,'
    '"lastCloseReason":"InitialConnect","clientTs":0}'
)


def test_connect_from_the_python_client():
    msg = m.parse_client_message(PY_CONNECT)
    assert msg == m.Connect("2ae4518b", 0, "InitialConnect", None, 0.0)


def test_connect_after_reconnect_has_max_observed_ts():
    msg = m.parse_client_message(
        orjson.dumps(
            {
                "type": "Connect",
                "sessionId": "s",
                "connectionCount": 1,
                "lastCloseReason": None,
                "maxObservedTimestamp": "aKQR5hXI6hg=",
                "clientTs": 1763000000000,
            }
        )
    )
    assert isinstance(msg, m.Connect)
    assert msg.max_observed_timestamp == m.decode_ts("aKQR5hXI6hg=")


def test_modify_query_set_canonicalises_paths_and_keeps_raw_args():
    msg = m.parse_client_message(
        '{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":['
        '{"type":"Add","queryId":0,"udfPath":"counter.js:get","args":[{"n":{"$integer":"KgAAAAAAAAA="}}]},'
        '{"type":"Remove","queryId":3}]}'
    )
    assert msg == m.ModifyQuerySet(
        0,
        1,
        (
            m.AddQuery(0, "counter:get", [{"n": {"$integer": "KgAAAAAAAAA="}}], None, None),
            m.RemoveQuery(3),
        ),
    )


def test_mutation_action_event():
    mut = m.parse_client_message(
        '{"type":"Mutation","requestId":4,"udfPath":"messages:send","args":[{}]}'
    )
    assert mut == m.Mutation(4, "messages:send", [{}], None)
    act = m.parse_client_message('{"type":"Action","requestId":5,"udfPath":"a","args":[{}]}')
    assert act == m.Action(5, "a:default", [{}], None)
    ev = m.parse_client_message('{"type":"Event","eventType":"ClientConnect","event":{"x":1}}')
    assert ev == m.Event("ClientConnect", {"x": 1})


def test_authenticate_shapes():
    user = m.parse_client_message(
        '{"type":"Authenticate","baseVersion":0,"tokenType":"User","value":"a.b.c"}'
    )
    assert user == m.Authenticate(0, "User", "a.b.c", None)
    admin = m.parse_client_message(
        '{"type":"Authenticate","baseVersion":1,"tokenType":"Admin","value":"k",'
        '"impersonating":{"subject":"u","issuer":"i"}}'
    )
    assert admin == m.Authenticate(1, "Admin", "k", {"subject": "u", "issuer": "i"})
    rust = m.parse_client_message(
        '{"type":"Authenticate","baseVersion":1,"tokenType":"Admin","value":"k",'
        '"acting_as":{"subject":"u","issuer":"i"}}'
    )
    assert isinstance(rust, m.Authenticate) and rust.impersonating == {
        "subject": "u",
        "issuer": "i",
    }
    none = m.parse_client_message('{"type":"Authenticate","baseVersion":2,"tokenType":"None"}')
    assert none == m.Authenticate(2, "None", None, None)


def test_unknown_fields_are_ignored_and_integral_floats_accepted():
    msg = m.parse_client_message(
        '{"type":"Mutation","requestId":4.0,"udfPath":"a:b","args":[{}],"future":1}'
    )
    assert msg == m.Mutation(4, "a:b", [{}], None)


BAD_MESSAGES = [
    "",
    "{",
    "null",
    "[1,2]",
    '"Connect"',
    "{}",
    '{"type":"Nope"}',
    '{"type":7}',
    '{"type":"Connect"}',
    '{"type":"Connect","sessionId":5,"connectionCount":0}',
    '{"type":"Connect","sessionId":"s","connectionCount":-1}',
    '{"type":"Connect","sessionId":"s","connectionCount":4294967296}',
    '{"type":"Connect","sessionId":"s","connectionCount":true}',
    '{"type":"Connect","sessionId":"s","connectionCount":0,"maxObservedTimestamp":"x"}',
    '{"type":"Connect","sessionId":"s","connectionCount":0,"clientTs":"now"}',
    '{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1}',
    '{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":{}}',
    '{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[5]}',
    '{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Swap"}]}',
    '{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Add","queryId":0,"udfPath":"a:b","args":{}}]}',
    '{"type":"ModifyQuerySet","baseVersion":"0","newVersion":1,"modifications":[]}',
    '{"type":"Mutation","requestId":0,"udfPath":"a:b:c","args":[{}]}',
    '{"type":"Mutation","requestId":0,"udfPath":"a:b"}',
    '{"type":"Action","requestId":null,"udfPath":"a:b","args":[{}]}',
    '{"type":"Authenticate","baseVersion":0,"tokenType":"Magic","value":"x"}',
    '{"type":"Authenticate","baseVersion":0,"tokenType":"User"}',
    '{"type":"Authenticate","baseVersion":0,"tokenType":"Admin","value":"k","impersonating":5}',
    '{"type":"Event","event":1}',
    '{"type":"Mutation","requestId":0,"udfPath":"a:b","args":[{}]} trailing',
    b"\xff\xfe",
]


@pytest.mark.parametrize("text", BAD_MESSAGES)
def test_malformed_messages_are_protocol_errors(text):
    with pytest.raises(ProtocolError):
        m.parse_client_message(text)


def test_deep_nesting_is_refused_before_decoding():
    deep = (
        '{"type":"Mutation","requestId":0,"udfPath":"a:b","args":[' + "[" * 500 + "]" * 500 + "]}"
    )
    with pytest.raises(ProtocolError, match="nested"):
        m.parse_client_message(deep)
    very_deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ProtocolError):
        m.parse_client_message(very_deep)


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_parse_never_raises_anything_but_protocol_error(data):
    try:
        m.parse_client_message(data)
    except ProtocolError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.sampled_from(["Connect", "ModifyQuerySet", "Mutation", "Action", "Authenticate", "Event"]),
    st.dictionaries(
        st.sampled_from(
            [
                "sessionId",
                "connectionCount",
                "baseVersion",
                "newVersion",
                "modifications",
                "requestId",
                "udfPath",
                "args",
                "tokenType",
                "value",
                "eventType",
                "queryId",
            ]
        ),
        _json,
    ),
)
def test_wrong_field_types_never_crash_the_parser(kind, fields):
    try:
        m.parse_client_message(json.dumps({"type": kind, **fields}))
    except ProtocolError:
        pass


# -- arguments -----------------------------------------------------------------------------


def test_decode_args():
    assert m.decode_args(
        [{"n": {"$integer": "KgAAAAAAAAA="}, "x": 5, "b": {"$bytes": "aGk="}}]
    ) == {
        "n": 42,
        "x": 5.0,
        "b": b"hi",
    }
    for bad in ([], [{}, {}], [5], [{"n": {"$integer": "AA=="}}]):
        with pytest.raises(ValidationError):
            m.decode_args(bad)


# -- server messages -----------------------------------------------------------------------


def test_transition_shape_matches_the_transcript():
    start = m.StateVersion(0, 0, 0)
    end = m.StateVersion(1, 0, m.decode_ts("fzb93hPI6hg="))
    text = m.serialize(m.transition(start, end, [m.query_updated(0, Outcome.ok(0.0))]))
    assert orjson.loads(text) == {
        "type": "Transition",
        "startVersion": {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="},
        "endVersion": {"querySet": 1, "identity": 0, "ts": "fzb93hPI6hg="},
        "modifications": [
            {"type": "QueryUpdated", "queryId": 0, "value": 0.0, "logLines": [], "journal": None}
        ],
    }


def test_query_failed_with_and_without_error_data():
    failed = m.query_failed(2, outcome_of_error(ConvexError({"code": "E1"})))
    assert failed == {
        "type": "QueryFailed",
        "queryId": 2,
        "errorMessage": 'Uncaught ConvexError: {"code":"E1"}',
        "logLines": [],
        "journal": None,
        "errorData": {"code": "E1"},
    }
    plain = m.query_failed(3, Outcome.failure("nope"))
    assert "errorData" not in plain and plain["logLines"] == []
    assert m.query_removed(3) == {"type": "QueryRemoved", "queryId": 3}


def test_mutation_and_action_responses():
    ok = m.mutation_response(0, Outcome.ok(None), 5)
    assert ok == {
        "type": "MutationResponse",
        "requestId": 0,
        "success": True,
        "result": None,
        "ts": m.encode_ts(5),
        "logLines": [],
    }
    err = m.mutation_response(1, outcome_of_error(ConvexError({"why": "nope"})), None)
    assert err["success"] is False and err["ts"] is None and err["errorData"] == {"why": "nope"}
    assert err["logLines"] == []
    act = m.action_response(2, Outcome.ok(2**40))
    assert act == {
        "type": "ActionResponse",
        "requestId": 2,
        "success": True,
        "result": {"$integer": "AAAAAAABAAA="},
        "logLines": [],
    }
    assert "ts" not in act
    act_err = m.action_response(3, outcome_of_error(ConvexError("plain string")))
    assert act_err["result"] == "Uncaught ConvexError: plain string"
    assert act_err["errorData"] == "plain string"


def test_auth_fatal_ping():
    assert m.auth_error("bad", 0, attempted=True) == {
        "type": "AuthError",
        "error": "bad",
        "baseVersion": 0,
        "authUpdateAttempted": True,
    }
    assert m.fatal_error("x") == {"type": "FatalError", "error": "x"}
    assert m.ping() == {"type": "Ping"}


# -- outcomes ------------------------------------------------------------------------------


def test_errors_become_data_without_internals():
    unknown = outcome_of_error(UnknownFunction("Could not find public function for 'a:b'."))
    assert unknown.error_message == "Could not find public function for 'a:b'."
    handler_error = ValueError("boom")
    handler_error.add_note("raised by query a:b")
    assert outcome_of_error(handler_error).error_message == "Uncaught ValueError: boom"
    args = ArgumentError("ArgumentValidationError for a:b: x")
    assert outcome_of_error(args).error_message == "ArgumentValidationError for a:b: x"
    internal = outcome_of_error(AssertionError("our bug at /srv/secret.py"))
    assert internal.error_message == SERVER_ERROR and not internal.has_error_data
    weird = outcome_of_error(ConvexError({1, 2}))  # not a Convex value: text only
    assert weird.error_message.startswith("Uncaught ConvexError") and not weird.has_error_data


def test_clean_json_export():
    assert to_clean_json(
        {"i": 2**62, "b": b"hi", "f": [math.nan, math.inf, -math.inf, 1.5], "s": "x", "n": None}
    ) == {
        "i": str(2**62),
        "b": "aGk=",
        "f": ["NaN", "Infinity", "-Infinity", 1.5],
        "s": "x",
        "n": None,
    }


def test_outcome_fingerprints():
    assert Outcome.ok(1.0).fingerprint() == Outcome.ok(1.0).fingerprint()
    assert Outcome.ok(1).fingerprint() != Outcome.ok(1.0).fingerprint()
    assert Outcome.failure("x").fingerprint() != Outcome.ok("x").fingerprint()

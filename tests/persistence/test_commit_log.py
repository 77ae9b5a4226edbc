"""The commit log's entries: what one commit changed survives encoding exactly."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_ext.persistence.commit_log import LoggedCommit, decode_commit, encode_commit
from kernel_ext.store.catalog import new_table_info
from kernel_ext.store.transaction import Write

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.sampled_from([math.inf, -math.inf]),
    st.text(max_size=8),
    st.binary(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
_DOCS = st.dictionaries(st.text("xyz", min_size=1, max_size=3), _VALUES, max_size=4)


# Generating nested documents is slow on a loaded machine: not a failure of the code.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.text("0123456789abcdef", min_size=1, max_size=6),
        st.tuples(st.sampled_from(["t", "u"]), st.none() | _DOCS, st.none() | _DOCS, st.booleans()),
        max_size=4,
    ),
    st.lists(st.tuples(st.sampled_from(["t.by_id", "*", "u.x"]), st.binary(max_size=6))),
    st.booleans(),
    st.booleans(),
)
def test_round_trip(writes, keys, catalog_changed, definitions_changed):
    commit = LoggedCommit(
        {doc_id: Write(*w) for doc_id, w in writes.items()},
        list(keys),
        [new_table_info("t", 7, 12)],
        catalog_changed,
        definitions_changed,
    )
    back = decode_commit(encode_commit(commit))
    assert back.keys == commit.keys
    assert back.catalog_changed == catalog_changed
    assert back.definitions_changed == definitions_changed
    assert [(t.name, t.number, t.indexes) for t in back.new_tables] == [
        (t.name, t.number, t.indexes) for t in commit.new_tables
    ]
    assert list(back.writes) == list(commit.writes)
    for doc_id, write in commit.writes.items():
        got = back.writes[doc_id]
        assert (got.table, got.rewritten) == (write.table, write.rewritten)
        # repr tells -0.0 from 0.0 and 1 from 1.0, which == would not
        assert repr(got.old) == repr(write.old) and repr(got.new) == repr(write.new)


def test_a_truncated_entry_is_refused():
    data = encode_commit(LoggedCommit({"1": Write("t", None, {"a": 1})}, [("t.by_id", b"k")]))
    for cut in (1, 5, len(data) - 1):
        with pytest.raises(ValueError, match="ends in the middle"):
            decode_commit(data[:cut])
    with pytest.raises(ValueError, match="after its last chunk"):
        decode_commit(data + b"\x00")

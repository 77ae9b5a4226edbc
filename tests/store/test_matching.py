"""SubscriptionIndex: which registered read sets contain a written key."""

from __future__ import annotations

from kernel_ext.store.keys import encode_key, key_successor, prefix_end
from kernel_ext.store.matching import ALL, SubscriptionIndex
from kernel_ext.store.readset import ReadSet

IDX = "tasks.by_id"
RNG = "tasks.by_done"


def k(*values) -> bytes:
    return encode_key(values)


def point(index: str, key: bytes):
    return (index, key, key_successor(key))


def test_empty_index_matches_nothing():
    index = SubscriptionIndex()
    assert len(index) == 0
    assert index.match([(IDX, k("a"))]) == set()
    assert index.match([]) == set()


def test_point_reads_match_only_their_key():
    index = SubscriptionIndex()
    index.register("q1", [point(IDX, k("a"))])
    assert index.match([(IDX, k("a"))]) == {"q1"}
    assert index.match([(IDX, k("b"))]) == set()
    assert index.match([(IDX, k("a") + b"\x00")]) == set()
    # Same key, another index.
    assert index.match([(RNG, k("a"))]) == set()


def test_range_reads_match_keys_in_the_half_open_interval():
    index = SubscriptionIndex()
    lo, hi = k(False), prefix_end(k(False))
    index.register("q1", [(RNG, lo, hi)])
    assert index.match([(RNG, k(False, 1.0, "id"))]) == {"q1"}
    assert index.match([(RNG, lo)]) == {"q1"}
    assert index.match([(RNG, hi)]) == set()
    assert index.match([(RNG, k(True, 1.0, "id"))]) == set()
    assert index.match([(RNG, k(None))]) == set()


def test_points_and_ranges_together():
    index = SubscriptionIndex()
    index.register("get", [point(IDX, k("a"))])
    index.register("scan", [(IDX, k("a"), k("c"))])
    index.register("other", [(RNG, b"", b"\xff")])
    assert index.match([(IDX, k("a"))]) == {"get", "scan"}
    assert index.match([(IDX, k("b"))]) == {"scan"}
    assert index.match([(IDX, k("b")), (RNG, k(1))]) == {"scan", "other"}


def test_several_queries_share_a_point():
    index = SubscriptionIndex()
    index.register("q1", [point(IDX, k("a"))])
    index.register("q2", [point(IDX, k("a"))])
    assert index.match([(IDX, k("a"))]) == {"q1", "q2"}
    index.remove("q1")
    assert index.match([(IDX, k("a"))]) == {"q2"}
    index.remove("q2")
    assert index.match([(IDX, k("a"))]) == set()


def test_several_queries_share_a_range():
    index = SubscriptionIndex()
    index.register("q1", [(RNG, b"a", b"c")])
    index.register("q2", [(RNG, b"a", b"c")])
    assert index.match([(RNG, b"b")]) == {"q1", "q2"}
    index.remove("q2")
    assert index.match([(RNG, b"b")]) == {"q1"}


def test_register_replaces_previous_intervals():
    index = SubscriptionIndex()
    index.register("q", [point(IDX, k("a")), (RNG, b"a", b"c")])
    index.register("q", [point(IDX, k("b"))])
    assert len(index) == 1
    assert index.match([(IDX, k("a"))]) == set()
    assert index.match([(RNG, b"b")]) == set()
    assert index.match([(IDX, k("b"))]) == {"q"}


def test_remove_forgets_everything_and_is_idempotent():
    index = SubscriptionIndex()
    index.register("q", [point(IDX, k("a")), (RNG, b"a", b"c")])
    index.remove("q")
    index.remove("q")
    index.remove("never registered")
    assert len(index) == 0
    assert index.match([(IDX, k("a")), (RNG, b"b")]) == set()


def test_empty_intervals_are_ignored_but_the_query_is_registered():
    index = SubscriptionIndex()
    index.register("q", [(RNG, b"b", b"b"), (RNG, b"c", b"a")])
    assert len(index) == 1
    assert index.match([(RNG, b"b")]) == set()
    index.remove("q")
    assert len(index) == 0


def test_query_without_reads_is_only_matched_by_all():
    index = SubscriptionIndex()
    index.register("q", [])
    assert index.match([(IDX, k("a"))]) == set()
    assert index.match([(ALL, b"")]) == {"q"}


def test_all_key_matches_every_registered_query():
    index = SubscriptionIndex()
    index.register("q1", [point(IDX, k("a"))])
    index.register("q2", [(RNG, b"a", b"b")])
    assert index.match([(IDX, k("zzz")), (ALL, b"")]) == {"q1", "q2"}
    index.remove("q1")
    assert index.match([(ALL, b"")]) == {"q2"}


def test_many_queries_only_affected_ones_match():
    index = SubscriptionIndex()
    for i in range(200):
        index.register(i, [point(IDX, k(i)), (RNG, k(i), k(i + 1))])
    assert len(index) == 200
    assert index.match([(IDX, k(57))]) == {57}
    assert index.match([(RNG, k(57, "x"))]) == {57}
    assert index.match([(RNG, k(57)), (IDX, k(3))]) == {3, 57}


def test_duplicate_point_reads_can_be_removed():
    # A query that calls db.get(id) twice records the same point twice (ReadSet does not
    # deduplicate); removing or re-registering that query must still work.
    reads = ReadSet()
    reads.add_point(IDX, k("a"))
    reads.add_point(IDX, k("a"))
    index = SubscriptionIndex()
    index.register("q", reads.finalize().all_intervals())
    assert index.match([(IDX, k("a"))]) == {"q"}
    index.register("q", reads.all_intervals())  # a re-run replaces the intervals
    index.remove("q")
    assert index.match([(IDX, k("a"))]) == set()
    assert len(index) == 0


def test_duplicate_range_reads_can_be_removed():
    # The same scan run twice in one query records the same interval twice.
    index = SubscriptionIndex()
    index.register("q", [(RNG, b"a", b"c"), (RNG, b"a", b"c")])
    assert index.match([(RNG, b"b")]) == {"q"}
    index.remove("q")
    assert index.match([(RNG, b"b")]) == set()

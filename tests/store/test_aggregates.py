"""Aggregates: accumulators and grouped state against a reference computed from scratch."""

from __future__ import annotations

import functools
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_ext.errors import QueryError
from kernel_ext.store.aggregates import (
    AggregateSpec,
    Count,
    GroupedAggregate,
    Max,
    Mean,
    Min,
    Sum,
)
from kernel_ext.store.keys import encode_value
from kernel_ext.store.values import UNDEFINED, compare, float_total_order_bits

# -- reference ---------------------------------------------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6),
    st.sampled_from(["", "a", "b", "ab", "é"]),
    st.binary(max_size=2),
    st.lists(st.integers(0, 2), max_size=2),
)


def same(a, b) -> bool:
    """Equal values of the same type; floats equal within 1e-9 relative (NaN == NaN)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return compare(a, b) == 0


def to_float(exact: Fraction) -> float:
    try:
        return float(exact)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


def ref_sum(values):
    numbers = [v for v in values if type(v) in (int, float)]
    if all(type(v) is int for v in numbers):
        return sum(numbers)
    special = [v for v in numbers if type(v) is float and not math.isfinite(v)]
    if special:  # finite values do not change an inf or NaN result
        return sum(special)
    return to_float(sum(Fraction(v) for v in numbers))


def ref_mean(values):
    numbers = [v for v in values if type(v) in (int, float)]
    if not numbers:
        return None
    special = [v for v in numbers if type(v) is float and not math.isfinite(v)]
    if special:
        return sum(special) / len(numbers)
    return to_float(sum(Fraction(v) for v in numbers) / len(numbers))


def ref_output(func, values):
    if func == "count":
        return len(values)
    if func == "sum":
        return ref_sum(values)
    if func == "mean":
        return ref_mean(values)
    if not values:
        return None
    ordered = sorted(values, key=functools.cmp_to_key(compare))
    return ordered[0] if func == "min" else ordered[-1]


def get(doc, path):
    current = doc
    for part in path.split("."):
        if type(current) is not dict:
            return UNDEFINED
        current = current.get(part, UNDEFINED)
    return current


def ref_aggregate(spec: AggregateSpec, docs):
    groups: dict = {}
    for doc in docs:
        values = tuple(get(doc, f) for f in spec.group_fields)
        key = tuple(encode_value(v) for v in values)
        groups.setdefault(key, (values, []))[1].append(doc)

    def row(values, members):
        out = {f: v for f, v in zip(spec.group_fields, values) if v is not UNDEFINED}
        for name, field, func in spec.outputs:
            present = [get(d, field) for d in members]
            out[name] = ref_output(func, [v for v in present if v is not UNDEFINED])
        return out

    if not spec.group_fields:
        return row((), docs)

    def order(a, b):
        for x, y in zip(a[0], b[0]):
            c = compare(x, y)
            if c:
                return c
        return 0

    return [row(v, m) for v, m in sorted(groups.values(), key=functools.cmp_to_key(order))]


# -- accumulators --------------------------------------------------------------------------


def test_the_key_encoding_orders_like_compare():
    values = [UNDEFINED, None, -1, 3, -0.0, 0.0, math.inf, math.nan, False, True, "a", b"", [1]]
    by_key = sorted(values, key=encode_value)
    by_compare = sorted(values, key=functools.cmp_to_key(compare))
    assert [encode_value(v) for v in by_key] == [encode_value(v) for v in by_compare]


OPS = st.lists(st.tuples(st.booleans(), VALUES), max_size=40)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_accumulators_under_adds_and_removes_equal_a_fresh_computation(ops):
    accumulators = {"count": Count(), "sum": Sum(), "mean": Mean(), "min": Min(), "max": Max()}
    present: list = []
    for add, value in ops:
        if not add and present:
            value = present.pop(len(present) // 2)
            for acc in accumulators.values():
                acc.remove(value)
        else:
            present.append(value)
            for acc in accumulators.values():
                acc.add(value)
        for func, acc in accumulators.items():
            assert same(acc.value(), ref_output(func, present)), (func, present)


def test_sum_types():
    s = Sum()
    assert s.value() == 0 and type(s.value()) is int
    s.add(2)
    s.add(True)  # booleans are not numbers here
    s.add("x")
    assert s.value() == 2 and type(s.value()) is int
    s.add(0.5)
    assert s.value() == 2.5
    s.remove(0.5)
    assert s.value() == 2 and type(s.value()) is int
    m = Mean()
    assert m.value() is None
    m.add(1)
    m.add(2)
    assert m.value() == 1.5


def test_int64_overflow_of_a_sum_is_a_query_error_naming_the_field():
    s = Sum("n")
    s.add(2**63 - 1)
    s.add(1)
    with pytest.raises(QueryError, match="'n'"):
        s.value()
    s.remove(1)
    assert s.value() == 2**63 - 1


def test_min_max_follow_the_total_order_and_survive_removing_the_extreme():
    lo, hi = Min(), Max()
    for v in [3, 1.0, None, "z", False, 3]:
        lo.add(v)
        hi.add(v)
    assert lo.value() is None and hi.value() == "z"  # null < int < float < bool < string
    lo.remove(None)
    hi.remove("z")
    assert lo.value() == 3 and type(lo.value()) is int and hi.value() is False
    lo.remove(3)
    assert lo.value() == 3  # a duplicate remains
    assert float_total_order_bits(-0.0) < float_total_order_bits(0.0)


def test_float_sums_do_not_drift():
    """A million random updates (magnitudes 1e-6..1e12, so cancellation matters): the
    maintained sum and mean equal math.fsum of the remaining values within 1e-9."""
    rng = random.Random(7)
    s, m = Sum(), Mean()
    live: list[float] = []
    for _ in range(1_000_000):
        if live and rng.random() < 0.45:
            i = rng.randrange(len(live))
            live[i], live[-1] = live[-1], live[i]
            x = live.pop()
            s.remove(x)
            m.remove(x)
        else:
            x = rng.choice([rng.uniform(-1e12, 1e12), rng.uniform(-1, 1), rng.gauss(0, 1e-6)])
            live.append(x)
            s.add(x)
            m.add(x)
    expected = math.fsum(live)
    assert math.isclose(s.value(), expected, rel_tol=1e-9)
    assert math.isclose(m.value(), expected / len(live), rel_tol=1e-9)
    for x in live:
        s.remove(x)
    assert s.value() == 0.0 and s.float_count == 0


# -- grouped ----------------------------------------------------------------------------------

GROUP_VALUES = st.one_of(
    st.just(UNDEFINED),
    st.none(),
    st.integers(0, 2),
    st.sampled_from([0.0, -0.0, 1.5]),
    st.booleans(),
    st.sampled_from(["a", "b"]),
)


@st.composite
def documents(draw):
    doc = {"_id": draw(st.integers(0, 10**9))}
    for field, strategy in (("g", GROUP_VALUES), ("h", GROUP_VALUES), ("x", VALUES)):
        value = draw(strategy)
        if value is not UNDEFINED:
            doc[field] = value
    if draw(st.booleans()):
        doc["nested"] = {"y": draw(VALUES)}
    return doc


SPECS = st.sampled_from(
    [
        AggregateSpec.build(
            ("g",),
            {
                "n": ("_id", "count"),
                "c": ("x", "count"),
                "s": ("x", "sum"),
                "m": ("x", "mean"),
                "lo": ("x", "min"),
                "hi": ("x", "max"),
            },
        ),
        AggregateSpec.build(("g", "h"), {"n": ("_id", "count"), "s": ("nested.y", "sum")}),
        AggregateSpec.build(("nested.y",), {"hi": ("g", "max"), "m": ("x", "mean")}),
        AggregateSpec.build((), {"n": ("_id", "count"), "s": ("x", "sum"), "lo": ("x", "min")}),
    ]
)


@settings(max_examples=200, deadline=None)
@given(SPECS, st.lists(st.tuples(st.integers(0, 2), documents()), max_size=30))
def test_grouped_aggregate_under_changes_equals_a_fresh_computation(spec, ops):
    """ops: 0 insert, 1 replace, 2 delete (of an earlier document, when there is one)."""
    state = GroupedAggregate(spec)
    docs: list = []
    for op, doc in ops:
        if op == 0 or not docs:
            docs.append(doc)
            state.apply(None, doc)
        elif op == 1:
            i = doc["_id"] % len(docs)
            state.apply(docs[i], doc)
            docs[i] = doc
        else:
            state.apply(docs.pop(doc["_id"] % len(docs)), None)
        assert same(state.value(), ref_aggregate(spec, docs))
    if spec.group_fields:
        for doc in list(docs):
            state.apply(doc, None)
        assert state.value() == [] and state.groups == {}  # empty groups vanish


@settings(max_examples=200, deadline=None)
@given(SPECS, st.lists(documents(), max_size=30), st.lists(documents(), max_size=10))
def test_bulk_extend_equals_adding_one_by_one(spec, docs, more):
    """`extend` (the initial build of a view and of `collect()`) leaves the same state as
    one `apply(None, doc)` per document, also after further changes."""
    bulk, single = GroupedAggregate(spec), GroupedAggregate(spec)
    bulk.extend(docs)
    for doc in docs:
        single.apply(None, doc)
    assert same(bulk.value(), single.value())
    assert same(bulk.value(), ref_aggregate(spec, docs))
    for doc in more:
        bulk.apply(None, doc)
    for doc in docs:
        bulk.apply(doc, None)
    assert same(bulk.value(), ref_aggregate(spec, more))


def test_missing_group_first_and_absent_from_its_dict():
    spec = AggregateSpec.build(("g",), {"n": ("_id", "count")})
    state = GroupedAggregate(spec)
    for i, doc in enumerate([{"g": "b"}, {}, {"g": None}, {"g": 1}, {"g": 1.0}, {"g": "b"}]):
        state.apply(None, {"_id": i, **doc})
    assert state.value() == [
        {"n": 1},
        {"g": None, "n": 1},
        {"g": 1, "n": 1},
        {"g": 1.0, "n": 1},
        {"g": "b", "n": 2},
    ]
    assert type(state.value()[2]["g"]) is int and type(state.value()[3]["g"]) is float


def test_ungrouped_without_documents_is_one_dict():
    spec = AggregateSpec.build(
        (), {"n": ("_id", "count"), "s": ("x", "sum"), "m": ("x", "mean"), "hi": ("x", "max")}
    )
    assert GroupedAggregate(spec).value() == {"n": 0, "s": 0, "m": None, "hi": None}


@pytest.mark.parametrize(
    ("fields", "outputs", "message"),
    [
        (("g",), {}, "at least one output"),
        (("g",), {"bad": ("x", "median")}, "bad="),
        (("g",), {"bad": "x"}, "bad="),
        (("g",), {"bad": ("", "sum")}, "bad="),
        (("g",), {"g": ("x", "sum")}, "'g'"),
        (("g", "g"), {"n": ("x", "sum")}, "repeated"),
        ((3,), {"n": ("x", "sum")}, "non-empty string"),
    ],
)
def test_specs_are_validated(fields, outputs, message):
    with pytest.raises(QueryError, match=message):
        AggregateSpec.build(fields, outputs)


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture
def penguins_client():
    import kernel_ext
    from kernel_ext import mutation, query, v

    palmerpenguins = pytest.importorskip("palmerpenguins")
    frame = palmerpenguins.load_penguins()
    rows = []
    for record in frame.to_dict("records"):
        # NaN means missing: leave the field out, as a Convex document would.
        rows.append({k: x for k, x in record.items() if not (type(x) is float and x != x)})
    client = kernel_ext.connect("memory")

    @mutation(args={"rows": v.array(v.any())})
    def put(ctx, rows):
        for row in rows:
            ctx.db.insert("penguins", row)

    outputs = {
        "n": ("_id", "count"),
        "mean_mass": ("body_mass_g", "mean"),
        "max_mass": ("body_mass_g", "max"),
        "total": ("body_mass_g", "sum"),
    }

    @query
    def summary(ctx):
        return ctx.db.query("penguins").group_by("species", "island").agg(**outputs)

    @query
    def summary_collected(ctx):
        result = ctx.db.query("penguins").group_by("species", "island").agg(**outputs).collect()
        assert type(result) is list
        return result

    @query
    def overall(ctx):
        return ctx.db.query("penguins").agg(n=("_id", "count"), lo=("body_mass_g", "min"))

    for name, fn in {
        "put": put,
        "summary": summary,
        "summary_collected": summary_collected,
        "overall": overall,
    }.items():
        client.backend.register(f"p:{name}", fn)
    client.mutation("p:put", rows=rows)
    yield client, frame
    client.close()


def test_group_by_agg_end_to_end_equals_pandas(penguins_client):
    client, frame = penguins_client
    expected = (
        frame.groupby(["species", "island"])
        .agg(
            n=("species", "size"),
            mean_mass=("body_mass_g", "mean"),
            max_mass=("body_mass_g", "max"),
            total=("body_mass_g", "sum"),
        )
        .reset_index()
        .to_dict("records")
    )
    for name in ("p:summary", "p:summary_collected"):
        result = client.query(name)
        assert len(result) == len(expected) == 5
        for got, want in zip(result, expected, strict=True):
            assert (got["species"], got["island"], got["n"]) == (
                want["species"],
                want["island"],
                want["n"],
            )
            assert type(got["n"]) is int and type(got["total"]) is float
            assert got["max_mass"] == want["max_mass"]
            assert math.isclose(got["mean_mass"], want["mean_mass"], rel_tol=1e-12)
            assert math.isclose(got["total"], want["total"], rel_tol=1e-12)
    overall = client.query("p:overall")
    assert overall == {"n": len(frame), "lo": float(frame["body_mass_g"].min())}


def test_a_live_aggregate_follows_writes_and_loses_empty_groups(penguins_client):
    from tests.polling import wait_for

    client, _ = penguins_client
    sub = client.subscribe("p:summary")
    wait_for(lambda: sub.value is not None and len(sub.value) == 5)
    client.mutation("p:put", rows=[{"island": "Nowhere", "body_mass_g": 1}])
    # species missing: its own group, first, without a "species" key; an int-only sum is int64
    wait_for(lambda: len(sub.value) == 6)
    assert sub.value[0] == {
        "island": "Nowhere",
        "n": 1,
        "mean_mass": 1.0,
        "max_mass": 1,
        "total": 1,
    }


def test_bad_outputs_are_refused_when_built(penguins_client):
    client, _ = penguins_client
    from kernel_ext import query

    @query
    def bad(ctx):
        return ctx.db.query("penguins").group_by("species").agg(m=("body_mass_g", "median"))

    client.backend.register("p:bad", bad)
    with pytest.raises(QueryError, match=r"m=.*median"):
        client.query("p:bad")

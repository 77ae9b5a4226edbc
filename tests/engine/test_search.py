"""Full-text search through the engine on every backend: results in relevance order, the
same everywhere; own writes; limits; an index created over existing documents; and reactive
searches that re-run only for writes that match them."""

from __future__ import annotations

from collections import Counter

import pytest

import kernel_ext
from kernel_ext import define_schema, define_table, mutation, query, v
from kernel_ext.errors import QueryError
from kernel_ext.store.index_kinds import SearchIndexConfig
from kernel_ext.store.search import InvertedIndex, SearchFilterBuilder, compile_search, rank

TABLE = define_table({"body": v.any(), "channel": v.string()})
SCHEMA = define_schema(
    {"messages": TABLE.search_index("search_body", search_field="body", filter_fields=["channel"])}
)
BODIES = [
    ("the quick brown fox", "#a"),
    ("the lazy dog sleeps", "#a"),
    ("quick quick quick", "#b"),
    ("a fox and a dog", "#b"),
    ("foxes are quick", "#a"),
    ("nothing here", "#a"),
]


@pytest.fixture
def app(store_url):
    client = kernel_ext.connect(store_url)
    runs: Counter[str] = Counter()

    @mutation
    def add(ctx, body, channel):
        return ctx.db.insert("messages", {"body": body, "channel": channel})

    @mutation
    def patch(ctx, id, body):
        ctx.db.patch(id, {"body": body})

    @query
    def find(ctx, text, channel=None, n=10):
        runs[text] += 1

        def build(q):
            q = q.search("body", text)
            return q if channel is None else q.eq("channel", channel)

        return [
            d["body"]
            for d in ctx.db.query("messages").with_search_index("search_body", build).take(n)
        ]

    @query
    def collect_all(ctx, text):
        return len(
            ctx.db.query("messages")
            .with_search_index("search_body", lambda q: q.search("body", text))
            .collect()
        )

    @query
    def ordered(ctx):
        return (
            ctx.db.query("messages")
            .with_search_index("search_body", lambda q: q.search("body", "x"))
            .order("desc")
            .collect()
        )

    @query
    def post_filtered(ctx, text):
        q = ctx.db.query("messages").with_search_index(
            "search_body", lambda q: q.search("body", text)
        )
        return [d["body"] for d in q.filter(lambda f: f.eq(f.field("channel"), "#a")).collect()]

    @query
    def pages(ctx, text, cursor=None):
        q = ctx.db.query("messages").with_search_index(
            "search_body", lambda q: q.search("body", text)
        )
        page = q.paginate({"numItems": 2, "cursor": cursor})
        return {
            "page": [d["body"] for d in page["page"]],
            "cursor": page["continueCursor"],
            "done": page["isDone"],
        }

    @mutation
    def insert_then_search(ctx, body, text):
        ctx.db.insert("messages", {"body": body, "channel": "#z"})
        return [
            d["body"]
            for d in ctx.db.query("messages")
            .with_search_index("search_body", lambda q: q.search("body", text))
            .collect()
        ]

    fns = dict(
        add=add,
        patch=patch,
        find=find,
        collect_all=collect_all,
        ordered=ordered,
        post_filtered=post_filtered,
        pages=pages,
        insert_then_search=insert_then_search,
    )
    for name, fn in fns.items():
        client.register(f"s:{name}", fn)
    client.set_schema(SCHEMA)
    ids = [client.mutation("s:add", body=b, channel=c) for b, c in BODIES]
    yield client, runs, ids
    client.close()


def _expected(text: str, channel: str | None = None) -> list[str]:
    """The pure core's ranking of BODIES (creation order = list order)."""
    config = SearchIndexConfig("body", ("channel",))
    index = InvertedIndex(config, 0)
    index.load(
        {"_id": f"id{i}", "_creationTime": float(i), "body": b, "channel": c}
        for i, (b, c) in enumerate(BODIES)
    )
    q = SearchFilterBuilder().search("body", text)
    if channel:
        q = q.eq("channel", channel)
    spec = compile_search("messages", "search_body", config, q)
    return [
        index._entries[e.doc_id] and BODIES[int(e.doc_id[2:])][0]
        for _, e in rank(spec, index.state(spec))
    ]


@pytest.mark.parametrize(
    ("text", "channel"),
    [
        ("quick", None),
        ("fox", None),
        ("dog qui", None),
        ("quick", "#a"),
        ("the", None),
        ("zebra", None),
    ],
)
def test_results_in_relevance_order_are_the_same_on_every_backend(app, text, channel):
    client, _, _ = app
    assert client.query("s:find", text=text, channel=channel) == _expected(text, channel)


def test_own_writes_post_filters_pagination_and_errors(app):
    client, _, _ = app
    assert client.mutation("s:insert_then_search", body="zebra crossing", text="zebra") == [
        "zebra crossing"
    ]
    assert client.query("s:post_filtered", text="quick") == [
        b for b in _expected("quick") if b != "quick quick quick"
    ]
    first = client.query("s:pages", text="quick")
    assert first["page"] == _expected("quick")[:2] and not first["done"]
    second = client.query("s:pages", text="quick", cursor=first["cursor"])
    assert first["page"] + second["page"] == _expected("quick")
    with pytest.raises(QueryError, match="relevance order"):
        client.query("s:ordered")


def test_non_string_bodies_are_stored_but_never_match(app):
    client, _, _ = app
    client.mutation("s:add", body=["quick"], channel="#a")
    client.mutation("s:add", body=12, channel="#a")
    assert client.query("s:find", text="quick") == _expected("quick")


def test_collect_beyond_1024_results_is_an_error_take_is_fine(app):
    client, _, _ = app

    @mutation
    def many(ctx):
        for i in range(1025):
            ctx.db.insert("messages", {"body": f"common word {i}", "channel": "#m"})

    client.register("s:many", many)
    client.mutation("s:many")
    with pytest.raises(QueryError, match="too many documents"):
        client.query("s:collect_all", text="common")
    assert len(client.query("s:find", text="common", n=10)) == 10


def test_an_index_created_over_existing_documents_finds_them(store_url):
    client = kernel_ext.connect(store_url)
    try:
        client.set_schema(define_schema({"messages": TABLE}))

        @mutation
        def add(ctx, body):
            ctx.db.insert("messages", {"body": body, "channel": "#a"})

        @query
        def find(ctx, text):
            return [
                d["body"]
                for d in ctx.db.query("messages")
                .with_search_index("search_body", lambda q: q.search("body", text))
                .collect()
            ]

        client.register("s:add", add)
        client.register("s:find", find)
        client.mutation("s:add", body="before the index")
        client.set_schema(SCHEMA)
        client.mutation("s:add", body="after the index")
        assert client.query("s:find", text="index") == ["after the index", "before the index"]
        client.set_schema(define_schema({"messages": TABLE}))  # dropped
        with pytest.raises(QueryError, match="not found"):
            client.query("s:find", text="index")
    finally:
        client.close()


def test_a_search_subscription_reruns_only_for_matching_writes(app):
    client, runs, ids = app
    sub = client.subscribe("s:find", text="fox", channel="#a")
    assert sub.value == _expected("fox", "#a")
    before = runs["fox"]
    client.mutation("s:add", body="unrelated words", channel="#a")  # no term
    client.mutation("s:add", body="a fox elsewhere", channel="#b")  # other channel
    client.mutation("s:patch", id=ids[1], body="the lazy cat")  # neither version matches
    assert runs["fox"] == before  # (mutation() returns once subscriptions reflect it)
    client.mutation("s:add", body="another fox", channel="#a")
    assert runs["fox"] == before + 1
    assert "another fox" in sub.value
    client.mutation("s:patch", id=ids[0], body="no longer")  # its old version matched
    assert runs["fox"] == before + 2
    assert "the quick brown fox" not in sub.value
    prefix = client.subscribe("s:find", text="do")
    assert prefix.value == ["a fox and a dog"]  # ("the lazy dog" was patched away)
    before = runs["do"]
    client.mutation("s:add", body="dormouse", channel="#b")  # extends the prefix
    assert runs["do"] == before + 1 and "dormouse" in prefix.value
    client.mutation("s:add", body="cat", channel="#b")
    assert runs["do"] == before + 1

"""LiveChart's Python side: the FigureWidget it keeps and updates, its status line, its
coalescing and its static HTML, on an embedded store."""

from __future__ import annotations

import re

import pandas as pd
import plotly.express as px
import pytest
from polling import wait_for

import kernel_ext
from kernel_ext import ConvexError, mutation, query, v
from kernel_ext.errors import ValidationError
from widgets import LiveChart
from widgets.live_chart import UIREVISION


@pytest.fixture(params=["file", "memory"])
def app(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "file" else "memory"
    client = kernel_ext.connect(url)

    @query
    def summary(ctx):
        return ctx.db.query("pets").group_by("kind").agg(n=("_id", "count"), mean=("w", "mean"))

    @query
    def overall(ctx):
        return ctx.db.query("pets").agg(n=("_id", "count"), total=("w", "sum"))

    @query
    def pets(ctx):
        return ctx.db.query("pets").collect()

    @query(args={"fail": v.boolean()})
    def maybe(ctx, fail):
        if fail:
            raise ConvexError("the query failed")
        return [{"k": "a", "n": 1}]

    @mutation(args={"kind": v.string(), "w": v.number()})
    def add(ctx, kind, w):
        return ctx.db.insert("pets", {"kind": kind, "w": w})

    @mutation(args={"id": v.id("pets"), "w": v.number()})
    def set_w(ctx, id, w):
        ctx.db.patch(id, {"w": w})

    @mutation(args={"id": v.id("pets")})
    def remove(ctx, id):
        ctx.db.delete(id)

    functions = dict(
        summary=summary, overall=overall, pets=pets, maybe=maybe, add=add, set_w=set_w,
        remove=remove,
    )  # fmt: skip
    for name, fn in functions.items():
        client.register(f"p:{name}", fn)
    yield client
    client.close()


def bars(chart, trace=0):
    """(x, y) of a trace, as plain lists."""
    data = chart.figure.data[trace]
    return list(data.x), list(data.y)


def wait_bars(chart, expected, trace=0, timeout=10.0):
    wait_for(lambda: chart.status == "ready" and bars(chart, trace) == expected, timeout)


@pytest.mark.parametrize(("kind", "trace_type", "mode"), [
    ("bar", "bar", None), ("line", "scatter", "lines+markers"), ("scatter", "scatter", "markers"),
])  # fmt: skip
def test_trace_follows_mutations_on_the_same_figure(app, kind, trace_type, mode):
    ids = [app.mutation("p:add", kind=k, w=w) for k, w in [("cat", 4), ("dog", 10), ("cat", 6)]]
    chart = LiveChart(app, "p:summary", x="kind", y="mean", kind=kind)
    figure = chart.figure
    wait_bars(chart, (["cat", "dog"], [5.0, 10.0]))
    assert figure.data[0].type == trace_type
    assert mode is None or figure.data[0].mode == mode
    assert figure.layout.uirevision == UIREVISION
    app.mutation("p:set_w", id=ids[1], w=20)
    wait_bars(chart, (["cat", "dog"], [5.0, 20.0]))
    app.mutation("p:add", kind="eel", w=1)
    wait_bars(chart, (["cat", "dog", "eel"], [5.0, 20.0, 1.0]))
    app.mutation("p:remove", id=ids[1])
    wait_bars(chart, (["cat", "eel"], [5.0, 1.0]))
    assert chart.figure is figure and chart.children[1] is figure  # never replaced
    assert len(figure.data) == 1
    assert figure.layout.uirevision == UIREVISION
    chart.close()


def test_several_y_columns_give_one_trace_each(app):
    app.mutation("p:add", kind="cat", w=3)
    chart = LiveChart(app, "p:summary", x="kind", y=["n", "mean"])
    wait_for(lambda: chart.status == "ready" and list(chart.figure.data[1].y) == [3.0])
    assert [t.name for t in chart.figure.data] == ["n", "mean"]
    assert bars(chart) == (["cat"], [1])
    chart.close()


def test_ungrouped_aggregate_is_one_row(app):
    chart = LiveChart(app, "p:overall", y=["n", "total"])
    wait_for(lambda: chart.status == "ready")
    assert bars(chart) == ([0], [0])  # no documents: count 0, sum 0
    app.mutation("p:add", kind="cat", w=2.5)
    app.mutation("p:add", kind="dog", w=1.5)
    wait_bars(chart, ([0], [2]))
    wait_bars(chart, ([0], [4.0]), trace=1)
    assert "1 row" in chart._status_line.value
    chart.close()


def test_documents_keep_their_datetime_column(app):
    app.mutation("p:add", kind="cat", w=1)
    chart = LiveChart(app, "p:pets", x="_creationTime", y="w", kind="scatter")
    wait_for(lambda: chart.status == "ready" and len(chart.figure.data[0].x) == 1)
    assert pd.api.types.is_datetime64_any_dtype(pd.Series(chart.figure.data[0].x))
    chart.close()


def test_plot_function_updates_the_same_figure(app):
    app.mutation("p:add", kind="cat", w=4)
    app.mutation("p:add", kind="dog", w=8)
    calls = []

    def plot(df):
        calls.append(df)
        return px.bar(df, x="kind", y="n", color="kind", title="pets by kind")

    chart = LiveChart(app, "p:summary", plot=plot)
    figure = chart.figure
    wait_for(lambda: chart.status == "ready" and len(figure.data) == 2)
    assert isinstance(calls[-1], pd.DataFrame) and list(calls[-1]["kind"]) == ["cat", "dog"]
    assert figure.layout.title.text == "pets by kind"
    assert figure.layout.uirevision == UIREVISION
    first = figure.data[0]
    app.mutation("p:add", kind="cat", w=1)
    wait_for(lambda: list(figure.data[0].y) == [2])
    assert figure.data[0] is first  # updated in place
    app.mutation("p:add", kind="eel", w=1)  # a new colour: one more trace, same widget
    wait_for(lambda: len(figure.data) == 3)
    assert [list(t.x) for t in figure.data] == [["cat"], ["dog"], ["eel"]]
    assert chart.figure is figure and figure.data[0] is first
    chart.close()


def test_error_in_plot_shows_in_status_and_the_chart_recovers(app):
    app.mutation("p:add", kind="cat", w=4)

    def plot(df):
        if len(df) > 1:
            raise ZeroDivisionError("plot is broken for two kinds")
        return px.bar(df, x="kind", y="n")

    chart = LiveChart(app, "p:summary", plot=plot)
    wait_for(lambda: chart.status == "ready")
    app.mutation("p:add", kind="dog", w=1)
    wait_for(lambda: chart.status == "error")
    assert "ZeroDivisionError: plot is broken" in chart.error
    assert "plot is broken for two kinds" in chart._status_line.value
    assert 'data-status="error"' in chart._status_line.value
    assert list(chart.figure.data[0].x) == ["cat"]  # the last drawing stays
    dog = app.query("p:pets")[-1]["_id"]
    app.mutation("p:remove", id=dog)
    wait_for(lambda: chart.status == "ready")
    assert chart.error == "" and list(chart.figure.data[0].y) == [1]
    chart.close()


def test_missing_column_and_query_error_show_in_status(app):
    app.mutation("p:add", kind="cat", w=4)
    chart = LiveChart(app, "p:summary", x="kind", y="nope")
    wait_for(lambda: chart.status == "error")
    assert "'nope' is not in the result" in chart.error and "kind, n, mean" in chart.error
    chart.close()
    failing = LiveChart(app, "p:maybe", {"fail": True}, x="k", y="n")
    wait_for(lambda: failing.status == "error")
    assert "the query failed" in failing.error
    failing.close()


def test_bad_arguments_are_refused(app):
    with pytest.raises(ValidationError, match="y="):
        LiveChart(app, "p:summary", x="kind")
    with pytest.raises(ValidationError, match="kind must be one of"):
        LiveChart(app, "p:summary", x="kind", y="n", kind="pie")
    with pytest.raises(ValidationError, match="either"):
        LiveChart(app, "p:summary", y="n", plot=lambda df: px.bar(df))


def test_bursts_are_coalesced(app):
    doc = app.mutation("p:add", kind="cat", w=0)
    chart = LiveChart(app, "p:summary", x="kind", y="mean")
    wait_bars(chart, (["cat"], [0.0]))
    before = chart.updates
    mutations = 200
    for w in range(1, mutations + 1):
        app.mutation("p:set_w", id=doc, w=w)
    wait_bars(chart, (["cat"], [float(mutations)]))
    applied = chart.updates - before
    assert 1 <= applied < mutations // 4, applied
    chart.close()


def test_close_stops_updates_and_the_subscription(app):
    app.mutation("p:add", kind="cat", w=1)
    sub = app.subscribe("p:summary")
    closed = LiveChart(sub, x="kind", y="n")
    witness = LiveChart(sub, x="kind", y="n")
    owning = LiveChart(app, "p:summary", x="kind", y="n")
    for chart in (closed, witness, owning):
        wait_bars(chart, (["cat"], [1]))
    closed.close()
    owning.close()
    assert owning.subscription._closed and not sub._closed  # it closes only its own
    updates = closed.updates
    app.mutation("p:add", kind="cat", w=1)
    wait_bars(witness, (["cat"], [2]))
    app.mutation("p:add", kind="dog", w=1)  # a second result, later than any timer of the first
    wait_bars(witness, (["cat", "dog"], [2, 1]))
    assert closed.updates == updates and bars(closed) == (["cat"], [1])
    witness.close()
    sub.close()


def test_static_html_has_the_data_and_no_remote_script(app):
    app.mutation("p:add", kind="cat", w=4)
    chart = LiveChart(app, "p:summary", x="kind", y="n")
    wait_for(lambda: chart.status == "ready")
    bundle = chart._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    page = data["text/html"]
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and not [s for s in scripts if "src" in s]  # plotly.js is inline
    assert "Plotly.newPlot" in page and '"cat"' in page
    assert "p:summary · 1 row" in page
    chart.close()
    light = LiveChart(app, "p:summary", x="kind", y="n", static_html=False)
    bundle = light._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "<script" not in data["text/html"] and "p:summary" in data["text/html"]
    light.close()

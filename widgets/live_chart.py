"""LiveChart: a Plotly chart of a subscription's result that changes in place.

The chart is a Plotly `FigureWidget` (plotly >= 6 ships its JavaScript inside the PyPI package
as an anywidget, so nothing is fetched from a CDN) under a one-line status. Each result is
turned into a DataFrame (`Subscription.df`, so imported datetime and nullable columns keep
their dtype, and a view's read-only snapshot or an ungrouped aggregate's one dict become
rows) and applied to the SAME figure inside `batch_update()`: the
plot element in the page stays, and `layout.uirevision` is a constant so the user's zoom, pan
and selection survive updates. Results arrive on the client's callback thread; bursts are
coalesced to at most 30 figure updates a second, applied on a timer thread, so a slow `plot`
never holds up the client's other callbacks.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Final

import ipywidgets
import plotly.graph_objects as go
import traitlets

from kernel_ext import CallbackHandle, QueryResult, Subscription
from kernel_ext.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd
    from plotly.basedatatypes import BaseFigure, BaseTraceType

__all__ = ["LiveChart"]

_MIN_INTERVAL: Final = 1 / 30
#: Constant: plotly.js keeps zoom, pan, legend and selection while it does not change.
UIREVISION: Final = "convex-live-chart"
_KINDS: Final = ("bar", "line", "scatter")
_STATUS_TEXT: Final = {
    "loading": "Loading {title}…",
    "ready": "{title} · {rows}",
    "error": "{title} · {error}",
    "reconnecting": "{title} · reconnecting… (showing the last result)",
}
_STATUS_COLOR: Final = {
    "loading": "var(--jp-ui-font-color2, #666)",
    "ready": "var(--jp-ui-font-color2, #666)",
    "error": "var(--jp-error-color1, #d32f2f)",
    "reconnecting": "var(--jp-warn-color1, #e65100)",
}


class _Figure(go.FigureWidget):  # type: ignore[misc]
    """A FigureWidget whose front-end messages (zoom, selection: `set_state`, on the kernel's
    shell thread) and the chart's updates (on a timer thread) take turns on one lock, since
    Plotly's Python-side figure state is not thread-safe."""

    def __init__(self, lock: threading.RLock, **kwargs: Any) -> None:
        self._chart_lock = lock
        super().__init__(**kwargs)

    def set_state(self, sync_data: dict[str, Any]) -> None:
        with self._chart_lock:
            super().set_state(sync_data)


class LiveChart(ipywidgets.VBox):  # type: ignore[misc]
    """A live Plotly chart of a query's result.

    `LiveChart(sub, x="species", y="mean_mass", kind="bar")` draws one trace per `y` column
    (`kind` is "bar", "line" or "scatter"; `x=None` uses the row number).
    `LiveChart(sub, plot=lambda df: px.scatter(df, ...))` calls `plot(df)` on each result and
    copies the returned figure's traces and layout into the chart (traces of the same type in
    the same place are updated in place; layout properties are merged, so the user's zoom
    stays). `LiveChart(client, ref, args, ...)` subscribes first and closes that subscription
    with the chart.

    `chart.figure` is the `FigureWidget`; `chart.status` is "loading", "ready", "error" or
    "reconnecting", `chart.error` the message shown for an error (the query's, or one raised
    by `plot` or a missing column: the last drawn result stays visible). `chart.updates`
    counts the figure updates applied. Without a front end (a saved notebook, nbconvert) the
    chart shows as static HTML with plotly.js inline (about 4.6 MB per chart in the saved
    file; `static_html=False` leaves a one-line note instead).

    Raises:
        ValidationError: neither `y` nor `plot` is given, both are, or `kind` is unknown.
    """

    status = traitlets.Unicode("loading")
    error = traitlets.Unicode("")

    def __init__(
        self,
        source: Any,
        ref: Any = None,
        args: dict[str, Any] | None = None,
        *,
        x: str | None = None,
        y: str | Sequence[str] | None = None,
        kind: str = "bar",
        plot: Callable[[pd.DataFrame], Any] | None = None,
        title: str | None = None,
        height: int | None = None,
        static_html: bool = True,
        **kwargs: Any,
    ) -> None:
        columns = _check_spec(y, kind, plot)
        # Import pandas here, on the caller's thread: a first import on the timer thread
        # while the kernel renders the chart (plotly checks `sys.modules["pandas"]`) lets
        # plotly see a half-initialized module.
        import pandas  # noqa: F401

        if isinstance(source, Subscription):
            subscription, self._owns = source, False
        else:
            subscription, self._owns = source.subscribe(ref, args or {}), True
        self.subscription = subscription
        self.title = subscription.description if title is None else title
        self._x, self._y, self._kind, self._plot = x, columns, kind, plot
        self._static_html = static_html
        self._lock = threading.Lock()  # the pending result, timer and state below
        self._figure_lock = threading.RLock()  # the figure's Python-side state
        self._flush_lock = threading.Lock()  # one flush at a time, in order
        self._seq = 0  # results received; the flush of the latest one may show "ready"
        self._dirty = False
        self._closed = False
        self._state = "loading"
        self._rows = ""
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None
        self.updates = 0
        self._view_seen = False  # has a front-end view drawn the figure (and reported back)?
        self.figure = _Figure(self._figure_lock, layout=self._initial_layout(height))
        self.figure.observe(
            self._on_view_report, names=["_js2py_layoutDelta", "_js2py_traceDeltas"]
        )
        if plot is None:
            self.figure.add_traces([_empty_trace(kind, name) for name in columns])
        self._status_line = ipywidgets.HTML(_status_html("loading", self.title, "", ""))
        super().__init__([self._status_line, self.figure], **kwargs)
        self.add_class("convex-live-chart")
        self._handle: CallbackHandle = subscription.on_result(self._on_result)
        self._status_handle: CallbackHandle | None = None
        on_status = getattr(source, "on_status", None)  # remote clients report reconnects
        if callable(on_status):
            self._status_handle = on_status(self._on_connection_status)

    def _initial_layout(self, height: int | None) -> dict[str, Any]:
        layout: dict[str, Any] = {"uirevision": UIREVISION, "margin": {"t": 30}}
        if height is not None:
            layout["height"] = height
        if self._plot is None:
            layout["xaxis"] = {"title": {"text": self._x or "row"}}
            if len(self._y) == 1:
                layout["yaxis"] = {"title": {"text": self._y[0]}}
        return layout

    # -- results from the store ----------------------------------------------------------

    def _on_result(self, result: QueryResult) -> None:
        with self._lock:
            if self._closed:
                return
            self._seq += 1
            if result.error is not None:
                # Keep the last drawing visible under the error, as LiveTable keeps its rows.
                self._set_state("error", f"{type(result.error).__name__}: {result.error}")
                return
            self._dirty = True
        self._schedule()

    def _on_connection_status(self, status: str) -> None:
        """Show "reconnecting" (keeping the last drawing) until the connection is back."""
        with self._lock:
            self._show("reconnecting" if status == "reconnecting" else self._state)

    def _schedule(self) -> None:
        """Flush on a timer thread, at most once per 1/30 s: a pending timer carries every
        result that arrives before it fires (only the latest is drawn)."""
        with self._lock:
            if self._timer is not None or self._closed:
                return
            wait = max(0.0, self._last_flush + _MIN_INTERVAL - time.monotonic())
            self._timer = threading.Timer(wait, self._flush)
            self._timer.daemon = True
            self._timer.start()

    def _flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                self._timer = None
                if not self._dirty or self._closed:
                    return
                seq, self._dirty = self._seq, False
                self._last_flush = time.monotonic()
            try:
                rows = self._draw()
            except Exception as exc:  # the user's plot or columns: show it, keep the chart
                with self._lock:
                    self._set_state("error", f"{type(exc).__name__}: {exc}")
                return
            with self._lock:
                self.updates += 1
                self._rows = rows
                if seq == self._seq and not self._closed:  # no error arrived since
                    self._set_state("ready", "")

    def _draw(self) -> str:
        """Apply the latest result to the figure; returns the row count text for the status.

        Raises:
            Exception: the query's error (if the latest result is one), the user's `plot`'s,
                or ValidationError for a column that is not in the result.
        """
        frame = self.subscription.df
        if self._plot is not None:
            new = _as_figure(self._plot(frame))  # outside the figure lock: may be slow
            with self._figure_lock:
                _copy_figure(self.figure, new)
        else:
            xs = _column(frame, self._x) if self._x is not None else list(range(len(frame)))
            ys = [_column(frame, name) for name in self._y]
            with self._figure_lock, self.figure.batch_update():
                for trace, column in zip(self.figure.data, ys, strict=True):
                    trace.x, trace.y = xs, column
        if not self._view_seen:
            self._sync_model_state()
        return f"{len(frame):,} row" + ("" if len(frame) == 1 else "s")

    # -- front end -----------------------------------------------------------------------

    def _on_view_report(self, change: dict[str, Any]) -> None:
        if change["new"] is not None:
            self._view_seen = True

    def _sync_model_state(self) -> None:
        """Copy the figure's whole state into its synced `_widget_data`/`_widget_layout`.

        Plotly sends changes as `_py2js_update` messages that its front-end model applies
        only once its JavaScript (4.8 MB) has loaded and initialized; one that arrives
        earlier is lost, and the view then draws the model's construction-time data (seen in
        JupyterLab: an empty chart under a "6 rows" status). A view draws from these two
        traits, so until a view reports back (after it has drawn), every update also sets
        them, as `FigureWidget._repr_mimebundle_` does when a figure is displayed."""
        with self._figure_lock:
            self.figure._widget_layout = deepcopy(self.figure._layout_obj._props)
            self.figure._widget_data = deepcopy(self.figure._data)

    # -- status line ---------------------------------------------------------------------

    def _set_state(self, state: str, error: str) -> None:
        """(Under `_lock`.) Record what the results say and show it."""
        self._state, self.error = state, error
        self._show(state)

    def _show(self, state: str) -> None:
        self.status = state
        self._status_line.value = _status_html(state, self.title, self._rows, self.error)

    # -- display -------------------------------------------------------------------------

    def to_html(self) -> str:
        """The chart as it is now, as static HTML: the status line and the figure with
        plotly.js inline (no script is fetched from anywhere)."""
        with self._lock:
            status = _status_html(self.status, self.title, self._rows, self.error)
        with self._figure_lock:
            figure = self.figure.to_html(
                include_plotlyjs=True, full_html=False, config={"displaylogo": False}
            )
        return f'<div class="convex-live-chart">{status}{figure}</div>'

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self._sync_model_state()  # the figure may have changed since it was created
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            if self._static_html:
                data["text/html"] = self.to_html()
            else:
                title = html.escape(self.title)
                data["text/html"] = f"<p>LiveChart of {title} (run the notebook to see it)</p>"
        return bundle

    def close(self) -> None:
        """Stop following the query (and close the subscription if the chart opened it)."""
        if not hasattr(self, "_handle"):  # the constructor refused its arguments
            super().close()
            return
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        for handle in (self._handle, self._status_handle):
            if handle is not None:
                handle.remove()
        if self._owns:
            self.subscription.close()
        self.figure.close()
        self._status_line.close()
        super().close()


# -- helpers -------------------------------------------------------------------------------


def _check_spec(
    y: str | Sequence[str] | None, kind: str, plot: Callable[..., Any] | None
) -> list[str]:
    """The `y` columns (empty with `plot`), after checking the arguments fit together."""
    if plot is not None:
        if y is not None:
            raise ValidationError("LiveChart takes either y=... (with x and kind) or plot=...")
        return []
    if y is None:
        raise ValidationError(
            'LiveChart needs y="column" (and x=, kind=) or plot=lambda df: <a Plotly figure>'
        )
    if kind not in _KINDS:
        raise ValidationError(f"LiveChart kind must be one of {_KINDS}, not {kind!r}")
    return [y] if isinstance(y, str) else [str(c) for c in y]


def _column(frame: pd.DataFrame, name: str) -> Any:
    """Column `name` of `frame` (or its index, e.g. `_id`).

    Raises:
        ValidationError: no such column.
    """
    if name in frame.columns:
        return frame[name]
    if name == frame.index.name:
        return frame.index.to_series()
    if frame.empty:
        return []
    shown = ", ".join(map(str, frame.columns))
    raise ValidationError(f"column {name!r} is not in the result (its columns: {shown})")


def _empty_trace(kind: str, name: str) -> BaseTraceType:
    if kind == "bar":
        return go.Bar(name=name, x=[], y=[])
    mode = "lines+markers" if kind == "line" else "markers"
    return go.Scatter(name=name, x=[], y=[], mode=mode)


def _as_figure(figure: Any) -> BaseFigure:
    """What `plot` returned, as a Plotly figure.

    Raises:
        ValidationError: it is not a figure (or a dict Plotly accepts as one).
    """
    from plotly.basedatatypes import BaseFigure

    if isinstance(figure, BaseFigure):
        return figure
    if isinstance(figure, dict):
        return go.Figure(figure)
    raise ValidationError(f"plot must return a Plotly figure, not {type(figure).__name__}")


def _copy_figure(target: go.FigureWidget, new: BaseFigure) -> None:
    """Make `target` show `new`: traces of the same type at the same position are updated in
    place (one batched message), others deleted or added; `new`'s layout is merged in, so
    user-made axis ranges stay."""
    old, fresh = list(target.data), list(new.data)
    keep = 0
    while keep < min(len(old), len(fresh)) and old[keep].type == fresh[keep].type:
        keep += 1
    if len(old) > keep:
        target.data = old[:keep]
    layout = new.layout.to_plotly_json()
    layout.setdefault("uirevision", UIREVISION)
    with target.batch_update():
        for trace, replacement in zip(old[:keep], fresh[:keep], strict=True):
            _update_trace(trace, replacement)
        _merge_layout(target, layout)
    if len(fresh) > keep:
        target.add_traces([t.to_plotly_json() for t in fresh[keep:]])


def _update_trace(trace: BaseTraceType, replacement: BaseTraceType) -> None:
    """Set `trace`'s properties to `replacement`'s; properties it no longer has are removed.
    Plotly sends only the properties whose values changed."""
    new = replacement.to_plotly_json()
    new.pop("type", None)
    new.pop("uid", None)
    stale = [k for k in trace.to_plotly_json() if k not in new and k not in ("type", "uid")]
    trace.update(new, overwrite=True)
    for key in stale:
        trace[key] = None


def _merge_layout(target: go.FigureWidget, layout: dict[str, Any]) -> None:
    """Merge `layout` into `target.layout`; the template (large, and the same on every call
    in practice) only when it differs."""
    template = layout.pop("template", None)
    if template is not None and template != target.layout.template.to_plotly_json():
        target.layout.template = template
    target.layout.update(layout)


def _status_html(state: str, title: str, rows: str, error: str) -> str:
    text = _STATUS_TEXT[state].format(title=title, rows=rows or "no result yet", error=error)
    return (
        f'<div class="clc-status" data-status="{state}" style="font-size: 12px; '
        f'color: {_STATUS_COLOR[state]}; white-space: pre-wrap">{html.escape(text)}</div>'
    )

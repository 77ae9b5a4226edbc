"""LiveChart over a remote client: it shows "reconnecting" while the server is away, keeps its
last drawing, and catches up when the server is back."""

from __future__ import annotations

import signal

from polling import wait_for

import kernel_ext


def test_live_chart_shows_reconnecting_then_catches_up(server_factory):
    from widgets import LiveChart

    server = server_factory()
    client = kernel_ext.connect(server.url)
    try:
        listeners = len(client._status_listeners)
        chart = LiveChart(client, "counter:get", {"name": "c"}, y="value")
        wait_for(lambda: chart.status == "ready" and list(chart.figure.data[0].y) == [0.0])
        server.stop(signal.SIGTERM)
        wait_for(lambda: chart.status == "reconnecting")
        assert "reconnecting" in chart._status_line.value
        assert list(chart.figure.data[0].y) == [0.0]  # the last drawing stays
        server.start()
        with kernel_ext.connect(server.url) as other:
            other.mutation("counter:inc", name="c", by=2)
        wait_for(
            lambda: chart.status == "ready" and list(chart.figure.data[0].y) == [2.0], timeout=20
        )
        chart.close()
        assert len(client._status_listeners) == listeners  # the chart stopped listening
    finally:
        client.close()

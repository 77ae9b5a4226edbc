"""import_dataframe through a served store: batches do not wait for the server's live
re-runs (they coalesce), and the import still ends with every live query up to date."""

from __future__ import annotations

import time

import pandas as pd
from polling import wait_for

import kernel_ext
from kernel_ext import query
from kernel_ext.sync.background import BackgroundServer


def test_remote_import_coalesces_the_servers_live_reruns(tmp_path):
    runs: list[int] = []

    @query
    def everything(ctx):
        runs.append(1)
        time.sleep(0.02)  # a live query that takes a while, as a big table's does
        return [d["n"] for d in ctx.db.query("rows").collect()]

    store = kernel_ext.connect(tmp_path / "store.db")
    store.register("live:everything", everything)
    server = BackgroundServer(store.backend)
    try:
        with kernel_ext.connect(server.url, admin_key=server.admin_key) as remote:
            sub = remote.subscribe("live:everything")
            assert sub.value == []
            runs_before = len(runs)
            ids = remote.import_dataframe(
                "rows", pd.DataFrame({"n": range(500)}), batch_size=10, progress=False
            )
            reruns = len(runs) - runs_before
            assert len(ids) == 500
            assert 1 <= reruns < 50, f"{reruns} re-runs for 50 batches"
            # The server's live query reflected every row before the import returned.
            assert sorted(store.query("live:everything")) == list(range(500))
            wait_for(lambda: sorted(sub.value) == list(range(500)), timeout=10)
    finally:
        server.stop()
        store.close()

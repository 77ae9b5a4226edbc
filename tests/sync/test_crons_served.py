"""Crons on a served store: pushed with the functions folder, run by the server."""

from __future__ import annotations

from pathlib import Path

from polling import wait_for

import kernel_ext

APP = Path(__file__).parent.parent / "fixtures" / "cron_app"


def test_pushed_crons_run_on_the_server_and_are_listed(server_factory):
    server = server_factory()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        owner.load_functions(APP)
        wait_for(lambda: owner.query("ticks:count", {"tag": "tick"}) >= 2, timeout=20)
        crons = {f["path"]: f for f in owner.describe_functions() if f["kind"] == "cron"}
        assert crons["tick"]["function"] == "ticks:record"
        assert crons["tick"]["schedule"] == "every 1 second"
        assert "tick" not in owner.functions()

"""`%convex functions` lists the crons of a loaded functions folder."""

from __future__ import annotations

from pathlib import Path

APP = Path(__file__).parent.parent / "fixtures" / "cron_app"


def test_convex_functions_lists_crons_with_their_schedule(ip):
    ip.user_ns["convex"].load_functions(APP)
    frame = ip.run_line_magic("convex", "functions")
    crons = frame[frame["kind"] == "cron"].set_index("path")
    assert list(crons.index) == ["every five minutes", "tick"]
    assert crons.loc["tick", "function"] == "ticks:record"
    assert crons.loc["tick", "schedule"] == "every 1 second"
    assert crons.loc["every five minutes", "schedule"] == "*/5 * * * * (UTC)"
    assert "ticks:record" in set(frame[frame["kind"] == "mutation"]["path"])

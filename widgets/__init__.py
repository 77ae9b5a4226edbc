"""Live widgets for convex-notebook: `LiveTable`, `LiveChart`."""

from __future__ import annotations

from widgets.live_chart import LiveChart
from widgets.live_table import LiveTable

__all__ = ["LiveChart", "LiveTable"]

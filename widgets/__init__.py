"""Live widgets for convex-notebook: `LiveTable`."""

from __future__ import annotations

from widgets.live_table import LiveTable

__all__ = ["LiveTable"]

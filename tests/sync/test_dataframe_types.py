"""DataFrame types round-trip through a served store (issue 8): the column kinds recorded by
`import_dataframe` are visible to a remote client's `table_df` and `Subscription.df`."""

from __future__ import annotations

import sys
from pathlib import Path

import kernel_ext

sys.path.insert(0, str(Path(__file__).parents[1] / "client"))
from test_dataframes import assert_types_round_trip, typed_frame


def test_types_round_trip_through_a_served_store(server_factory):
    server = server_factory()
    frame = typed_frame()
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        owner.import_dataframe("typed", frame, batch_size=2, progress=False)
        assert_types_round_trip(owner.table_df("typed"), frame)
        owner.push_cell("%%convex_query typed:all\nreturn db.query('typed').collect()")
        assert_types_round_trip(owner.subscribe("typed:all").df, frame)
    server.stop()
    server.start()  # the kinds are in the store file
    with kernel_ext.connect(server.url, admin_key=server.admin_key) as owner:
        assert_types_round_trip(owner.table_df("typed"), frame)

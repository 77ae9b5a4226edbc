"""A slow counter: a mutation still running when its client's socket drops."""

import time

from kernel_ext import mutation, v


@mutation(args={"name": v.string(), "seconds": v.number()})
def inc_slowly(ctx, name, seconds):
    doc = ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()
    time.sleep(seconds)
    if doc is None:
        ctx.db.insert("counters", {"name": name, "value": 1.0})
        return 1.0
    ctx.db.patch(doc["_id"], {"value": doc["value"] + 1.0})
    return doc["value"] + 1.0

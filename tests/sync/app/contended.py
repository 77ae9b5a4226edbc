"""A counter whose increment computes a little between its read and its write, so that
concurrent increments conflict (contention tests)."""

import time

from kernel_ext import mutation, query, v


def _find(ctx, name):
    return ctx.db.query("slow_counters").filter(lambda q: q.eq(q.field("name"), name)).first()


@query(args={"name": v.string()})
def get(ctx, name):
    doc = _find(ctx, name)
    return 0 if doc is None else doc["value"]


@mutation(args={"name": v.string()})
def inc(ctx, name):
    doc = _find(ctx, name)
    time.sleep(0.002)  # the window in which another increment commits
    if doc is None:
        ctx.db.insert("slow_counters", {"name": name, "value": 1})
    else:
        ctx.db.patch(doc["_id"], {"value": doc["value"] + 1})

"""A counter: one document per name."""

from kernel_ext import ConvexError, action, internal_mutation, internal_query, mutation, query, v


def _find(ctx, name):
    return ctx.db.query("counters").with_index("by_name", lambda q: q.eq("name", name)).first()


@query(args={"name": v.optional(v.string())})
def get(ctx, name="main"):
    doc = _find(ctx, name)
    return 0.0 if doc is None else doc["value"]


@mutation(args={"name": v.optional(v.string()), "by": v.optional(v.number())})
def inc(ctx, name="main", by=1.0):
    doc = _find(ctx, name)
    if doc is None:
        ctx.db.insert("counters", {"name": name, "value": float(by)})
        return float(by)
    ctx.db.patch(doc["_id"], {"value": doc["value"] + by})
    return doc["value"] + by


@mutation(args={"name": v.string()})
def fail_after_write(ctx, name):
    ctx.db.insert("counters", {"name": name, "value": -1.0})
    raise ConvexError({"code": "ROLLED_BACK", "name": name})


@internal_query
def secret(ctx):
    return "internal data"


@internal_mutation(args={"name": v.string(), "by": v.number()})
def inc_internal(ctx, name, by):
    return inc.handler(ctx, name=name, by=by)


@action(args={"name": v.string(), "times": v.number()})
def inc_many(ctx, name, times):
    return [
        ctx.run_mutation("counter:inc_internal", {"name": name, "by": 1.0})
        for _ in range(int(times))
    ]


@mutation(args={"a": v.string(), "b": v.string()})
def inc_pair(ctx, a, b):
    """Both counters move together: a client must never see one without the other."""
    inc.handler(ctx, name=a, by=1.0)
    inc.handler(ctx, name=b, by=1.0)

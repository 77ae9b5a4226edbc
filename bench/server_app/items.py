"""Functions of the server benchmarks (`python -m kernel_ext serve --functions bench/server_app`).

`items` holds documents `{key, value, name}` looked up through the `by_key` index.
"""

from kernel_ext import mutation, query, v


def _find(ctx, key):
    return ctx.db.query("items").with_index("by_key", lambda q: q.eq("key", key)).unique()


@query(args={"key": v.number()})
def get(ctx, key):
    """One document's user fields, or None."""
    doc = _find(ctx, key)
    if doc is None:
        return None
    return {"key": doc["key"], "value": doc["value"], "name": doc["name"]}


@query(args={"key": v.number(), "slot": v.number()})
def watch(ctx, key, slot):
    """The value of one document, tagged with `slot` so that every subscriber's query is a
    distinct subscription (the clients de-duplicate identical ones, the server might too)."""
    doc = _find(ctx, key)
    return {"slot": slot, "value": None if doc is None else doc["value"]}


@mutation(args={"key": v.number(), "value": v.number()})
def put(ctx, key, value):
    """Set one document's value (inserting it if missing); returns the value."""
    doc = _find(ctx, key)
    if doc is None:
        ctx.db.insert("items", {"key": key, "value": value, "name": f"item-{int(key):05d}"})
    else:
        ctx.db.patch(doc["_id"], {"value": value})
    return value


@mutation(args={"n": v.number()})
def seed(ctx, n):
    """Insert documents with keys 0 .. n-1 (value 0); returns how many were inserted."""
    for key in range(int(n)):
        ctx.db.insert("items", {"key": float(key), "value": 0.0, "name": f"item-{key:05d}"})
    return float(n)

"""Values that break limits: too deeply nested, keys of a str subclass."""

from kernel_ext import mutation, query, v


class Key(str):
    """A str subclass (as enums and config libraries make them)."""


def _nested(depth):
    value = 1.0
    for _ in range(depth):
        value = [value]
    return value


@query(args={"depth": v.number()})
def deep(ctx, depth):
    return _nested(int(depth))


@query
def subclass_key(ctx):
    return {Key("a"): 1.0}


@mutation
def insert_subclass_key(ctx):
    doc_id = ctx.db.insert("counters", {Key("name"): "subclass", Key("value"): 2.0})
    doc = ctx.db.get(doc_id)
    return {"name": doc["name"], "value": doc["value"]}

"""Round trips of every Convex type."""

from kernel_ext import ConvexError, action, mutation, query, v


@query
def echo(ctx, **args):
    return args


@query(args={"n": v.int64(), "b": v.bytes()})
def typed(ctx, n, b):
    return {"n": n + 1, "b": b + b"!", "types": [type(n).__name__, type(b).__name__]}


@query
def default(ctx):
    return "the default export"


@query(args={"code": v.string()})
def fail_convex(ctx, code):
    raise ConvexError({"code": code, "n": 7})


@query
def fail_plain(ctx):
    raise ValueError("plain failure with a secret path /etc/hidden")


@action(args={"code": v.string()})
def fail_action(ctx, code):
    raise ConvexError(code)


@action(args={"x": v.any()})
def echo_action(ctx, x):
    return x


@query
def bad_index(ctx):
    """A library error raised inside a handler (QueryError: no such index)."""
    return ctx.db.query("counters").with_index("by_nothing").collect()


@mutation
def bad_insert(ctx):
    """A write that breaks the schema (SchemaViolation), raised inside a handler."""
    return ctx.db.insert("counters", {"name": 5, "value": 1.0})


@query
def fail_in_the_standard_library(ctx):
    """Raises inside json.loads: the user's line is this one, not json's."""
    import json

    return json.loads("not json")

"""Functions that print and log: their output reaches the caller as log lines."""

import logging

from kernel_ext import ConvexError, action, mutation, query, v

_log = logging.getLogger("app.logs")


@query(args={"name": v.string()})
def greet(ctx, name):
    print("hello", name)
    _log.warning("careful, %s", name)
    return f"hi {name}"


@query(args={"name": v.string()})
def fail(ctx, name):
    print(f"about to fail for {name}")
    raise ConvexError({"name": name})


@mutation(args={"n": v.float64()})
def count(ctx, n):
    for i in range(int(n)):
        print(f"line {i}")
    return n


@action(args={})
def shout(ctx):
    greeting = ctx.run_query("logs:greet", {"name": "action"})
    print("from an action", end="")  # no newline: still a line
    return greeting

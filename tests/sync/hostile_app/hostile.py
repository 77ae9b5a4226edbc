"""Functions that misbehave: raise what no function should, run forever, or are slow."""

import time

from kernel_ext import mutation, query, v

_RAISE = {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}
_RAISE["GeneratorExit"] = GeneratorExit


@mutation(args={"what": v.string()})
def raise_base(ctx, what):
    ctx.db.insert("written", {"by": "raise_base"})
    raise _RAISE[what]()


@query
def exits(ctx):
    ctx.db.query("written").collect()
    raise SystemExit(1)


@query
def count(ctx):
    return float(len(ctx.db.query("written").collect()))


@mutation
def write(ctx):
    ctx.db.insert("written", {"by": "write"})


@mutation
def spin(ctx):
    """Writes forever (stopped by the time limit at a ctx.db call)."""
    while True:
        ctx.db.insert("spun", {"x": 1})


@query
def busy(ctx):
    """A pure-Python loop that swallows everything (stopped by the injected interrupt)."""
    n = 0
    while True:
        try:
            n += 1
        except BaseException:
            continue


@query
def spun(ctx):
    return float(len(ctx.db.query("spun").collect()))


@query(args={"delay": v.number()})
def slow(ctx, delay):
    """Reads `written`, then computes for `delay` seconds (a slow live query)."""
    count = len(ctx.db.query("written").collect())
    end = time.monotonic() + delay
    while time.monotonic() < end:
        pass
    return float(count)

"""Functions that misbehave: raise what no function should, run forever, or are slow."""

import os
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


@query(args={"gate": v.string(), "warmup": v.number()})
def gated(ctx, gate, warmup):
    """Reads `written`. With nothing written, computes for `warmup` seconds (a run slow
    enough to move it to the slow lane); else creates `<gate>.waiting` and waits for the file
    `gate` to exist (at most 9 s, below the time limit): a live query the test holds."""
    count = len(ctx.db.query("written").collect())
    end = time.monotonic() + (warmup if count == 0 else 9.0)
    if count == 0:
        while time.monotonic() < end:
            pass
    else:
        open(gate + ".waiting", "w").close()
        while not os.path.exists(gate) and time.monotonic() < end:
            time.sleep(0.005)
    return float(count)

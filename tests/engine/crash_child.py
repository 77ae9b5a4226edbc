"""Child process of `test_crash.py`: commits numbered mutations until it is killed.

    python crash_child.py STORE_PATH FIRST_SEQ

Prints `opening` before opening the store, `ready <ts>` once it is open, and after each
acknowledged mutation `ack <seq> <ts>` (ts: the store's latest commit timestamp, which in this
single-threaded process is that mutation's commit timestamp). Each line is flushed before the
next mutation starts, so every printed `ack` is a commit the store has promised to keep.

Each mutation inserts one `items` document and increments the single `counter` document (or
creates it), so every commit writes two documents: a partially applied commit would show up
as `counter.value != number of items`.
"""

from __future__ import annotations

import sys

import kernel_ext
from kernel_ext import mutation


@mutation
def put(ctx, seq):
    counter = ctx.db.query("counter").first()
    ctx.db.insert("items", {"seq": seq})
    if counter is None:
        ctx.db.insert("counter", {"value": 1})
    else:
        ctx.db.patch(counter["_id"], {"value": counter["value"] + 1})
    return seq


def main() -> None:
    path, seq = sys.argv[1], int(sys.argv[2])
    print("opening", flush=True)
    client = kernel_ext.connect(path)
    client.backend.register("crash:put", put)
    store = client.backend.store
    print("ready", store.ts, flush=True)
    while True:
        acknowledged = client.mutation("crash:put", seq=seq)
        assert acknowledged == seq
        print("ack", seq, store.ts, flush=True)
        seq += 1


if __name__ == "__main__":
    main()

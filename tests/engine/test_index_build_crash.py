"""A SIGKILL while a schema change builds indexes never leaves a partial index behind.

A store holds 100,000 documents. Round after round, a child process (`index_build_child.py`)
applies a schema declaring a random subset of indexes (creating some, dropping others) and is
killed at a random moment, usually in the middle of building an index. After each kill the
parent reopens the store: every index that exists holds exactly the entries a fresh build
gives (an index the kill interrupted does not exist), and re-applying the schema builds the
missing ones fully.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from index_build_child import INDEXES, schema_with

import kernel_ext
from kernel_ext.store.catalog import BY_CREATION_TIME, BY_ID, IndexInfo, id_key

CHILD = Path(__file__).with_name("index_build_child.py")
REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = 100_000
ROUNDS = 6
STARTUP_TIMEOUT = 60.0


def _fill(path: Path) -> None:
    with kernel_ext.connect(path) as client:
        store = client.backend.store
        for start in range(0, DOCUMENTS, 10_000):
            store.mutate(
                lambda txn, start=start: [
                    txn.insert("docs", {"a": float((i * 7919) % 1000), "b": f"k{i % 97}"})
                    for i in range(start, start + 10_000)
                ]
            )


def _entries(path: Path, index_id: int) -> set[tuple[bytes, bytes]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT key, id_key FROM index_entries WHERE index_id=?", (index_id,)
        ).fetchall()
    return set(rows)


def _check_indexes(
    path: Path, context: str, fresh: dict[str, set[tuple[bytes, bytes]]]
) -> set[str]:
    """Reopen the store; every index of `docs` must hold exactly a fresh build's entries
    (`fresh`: a cache of them by index name; the documents never change). Returns the names
    of the user indexes that exist."""
    with kernel_ext.connect(path) as client:
        store = client.backend.store
        table = store.catalog.table("docs")
        assert table is not None, context
        indexes = dict(table.indexes)
        if not fresh:
            docs = [doc for _, doc in store.persistence.documents_of(table.number)]
            assert len(docs) == DOCUMENTS, context
            for name, fields in [*INDEXES.items(), (BY_CREATION_TIME, [])]:
                index = IndexInfo(name, 0, tuple(fields))
                fresh[name] = {(index.key_of(doc), id_key(doc["_id"])) for doc in docs}
    for name, index in indexes.items():
        if name == BY_ID:
            continue
        assert index.index_id is not None
        expected = fresh[name]
        stored = _entries(path, index.index_id)
        if stored != expected:  # a short message: the sets hold 100,000 entries
            pytest.fail(
                f"{context}: index {name} holds {len(stored):,} entries, a fresh build "
                f"{len(expected):,} ({len(expected - stored):,} missing, "
                f"{len(stored - expected):,} extra)"
            )
    return {name for name in indexes if name in INDEXES}


def _run_child(path: Path, names: list[str], delay: float, log: Path) -> bool:
    """Start a child that applies a schema with `names`, kill it `delay` s after it starts
    building; returns whether it had finished."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), ",".join(names)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=REPO,
            env=env,
        )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()  # bounded: the child prints it or dies (EOF)
        assert first == "building\n", f"child did not start: {first!r}\n{log.read_text()}"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=STARTUP_TIMEOUT)
    finished = proc.stdout.read() == "built\n"
    proc.stdout.close()
    return finished


@pytest.mark.slow
def test_sigkill_while_building_indexes_leaves_no_partial_index(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "store.db"
    _fill(path)
    # How long one index build takes here, to spread the kills over the build.
    with kernel_ext.connect(path) as client:
        started = time.monotonic()
        client.backend.store.set_schema(schema_with(["by_a"]))
        build = time.monotonic() - started
        client.backend.store.set_schema(schema_with([]))
    interrupted = 0
    fresh: dict[str, set[tuple[bytes, bytes]]] = {}
    # The kills must land mid-build often enough to test anything, whatever the machine's
    # load does to the build's speed: a round whose child finished before its kill shrinks
    # the delays of the next ones, and rounds go on (up to a bound) until enough kills did.
    scale, round_number = 1.2, 0
    while round_number < ROUNDS or interrupted < ROUNDS // 3:
        assert round_number < 4 * ROUNDS, f"seed {seed}: only {interrupted} kills mid-build"
        names = rng.sample(sorted(INDEXES), rng.randint(1, len(INDEXES)))
        delay = rng.uniform(0.0, scale * build * len(names))
        finished = _run_child(path, names, delay, tmp_path / f"child-{round_number}.log")
        context = f"seed {seed}, round {round_number}: {names} killed after {delay:.2f} s"
        existing = _check_indexes(path, context, fresh)
        if finished:
            assert existing == set(names), context
            scale /= 2
        interrupted += not finished
        round_number += 1
    # Re-applying the schema builds whatever a kill left out.
    with kernel_ext.connect(path) as client:
        client.backend.store.set_schema(schema_with(sorted(INDEXES)))
    assert _check_indexes(path, f"seed {seed}, final", fresh) == set(INDEXES)

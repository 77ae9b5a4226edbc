"""Crash recovery: a process killed with SIGKILL at a random moment loses no acknowledged
commit, leaves no partial commit behind, and timestamps keep increasing across restarts.

A child process (`crash_child.py`) commits numbered two-document mutations into a SQLite store
file and prints each acknowledged sequence number. The parent kills it at a random point (while
committing, or while it opens and recovers the store), reopens the same file, checks it, closes
it and starts the next child on the same file, so recovery runs again and again.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import kernel_ext

CHILD = Path(__file__).with_name("crash_child.py")
REPO = Path(__file__).resolve().parents[2]
ROUNDS = 28  # kills; every fourth one lands while the child opens (and recovers) the store
STARTUP_TIMEOUT = 30.0


@dataclass
class History:
    """What the children acknowledged and what the parent saw, over every round so far."""

    acked: dict[int, int]  # seq -> commit ts
    last_ack_ts: int = 0
    last_reopen_ts: int = 0
    last_seq: int = 0  # highest seq in the store at the last reopen


def _reader(stream, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        if line.endswith("\n"):  # a torn last line was not acknowledged
            lines.put(line.split("\n")[0])
    lines.put(None)


def _run_child(path: Path, first_seq: int, rng: random.Random, kill_while_opening: bool, log):
    """Start a child, kill it at a random moment and return the lines it printed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), str(first_seq)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=REPO,
            env=env,
        )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    ended = False  # the reader reached the end of the output
    try:
        # Wait for the phase in which to kill: "opening" (about to open and recover the store)
        # or "ready" (open, about to commit in a loop).
        wanted = "opening" if kill_while_opening else "ready"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not seen or not seen[-1].startswith(wanted):
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                ended = True
                break
            seen.append(line)
        delay = rng.uniform(0.0, 0.01) if kill_while_opening else rng.uniform(0.0, 0.2)
        time.sleep(delay)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    while not ended and (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    return proc.returncode, seen, delay


def _check_store(path: Path, history: History, context: str) -> None:
    """Reopen the store file and check it against everything acknowledged so far."""
    client = kernel_ext.connect(path)
    try:
        store = client.backend.store
        reopen_ts = store.ts

        def contents(txn):
            if store.catalog.table("items") is None:
                return [], [], []
            by_creation = txn.query("items").collect()
            by_id = txn.query("items").with_index("by_id").collect()
            return by_creation, by_id, txn.query("counter").collect()

        items, items_by_id, counters = store.read(contents)[0]
    finally:
        client.close()

    seqs = sorted(doc["seq"] for doc in items)
    assert sorted(doc["seq"] for doc in items_by_id) == seqs, (
        f"{context}: the by_creation_time index and the documents disagree"
    )
    # Atomicity: each commit inserted an item and incremented the counter.
    if items:
        assert len(counters) == 1, f"{context}: expected one counter document, got {counters}"
        assert counters[0]["value"] == len(items), (
            f"{context}: partial commit visible: counter={counters[0]['value']} but "
            f"{len(items)} items"
        )
    else:
        assert counters == [], f"{context}: counter without items: {counters}"
    # Durability: every acknowledged commit survived; nothing else appeared except possibly
    # the one commit in flight when the child was killed.
    missing = sorted(set(history.acked) - set(seqs))
    assert not missing, f"{context}: acknowledged commits lost: {missing}"
    assert len(seqs) == len(set(seqs)), f"{context}: duplicate items: {seqs}"
    assert seqs == list(range(1, len(seqs) + 1)), f"{context}: gaps in items: {seqs}"
    highest_known = max([history.last_seq, *history.acked])
    assert len(seqs) <= highest_known + 1, (
        f"{context}: {len(seqs)} items but only {highest_known} were acknowledged and one "
        "more could have been in flight"
    )
    # Timestamps never go back, across restarts too.
    assert reopen_ts >= history.last_reopen_ts, (
        f"{context}: store ts went back from {history.last_reopen_ts} to {reopen_ts}"
    )
    assert reopen_ts >= history.last_ack_ts, (
        f"{context}: store ts {reopen_ts} is older than the acknowledged commit ts "
        f"{history.last_ack_ts}"
    )
    if len(seqs) > 0:
        assert reopen_ts > 0
    history.last_reopen_ts = reopen_ts
    history.last_seq = len(seqs)

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", context


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "store.db"
    history = History({})
    kills_mid_commit = 0

    for round_number in range(ROUNDS):
        kill_while_opening = round_number % 4 == 3
        returncode, lines, delay = _run_child(
            path,
            history.last_seq + 1,
            rng,
            kill_while_opening,
            tmp_path / f"child-{round_number}.stderr",
        )
        context = (
            f"seed {seed}, round {round_number} (killed {delay * 1000:.1f} ms after "
            f"{'opening' if kill_while_opening else 'ready'})"
        )
        stderr = (tmp_path / f"child-{round_number}.stderr").read_text()
        assert returncode == -signal.SIGKILL, (
            f"{context}: child exited by itself ({returncode}):\n{stderr}"
        )

        acks = []
        for line in lines:
            kind, *fields = line.split()
            if kind == "ready":
                (ts,) = map(int, fields)
                assert ts >= history.last_reopen_ts, (
                    f"{context}: child opened the store at ts {ts}, older than "
                    f"{history.last_reopen_ts} seen before"
                )
            elif kind == "ack":
                seq, ts = map(int, fields)
                assert ts > history.last_ack_ts, (
                    f"{context}: commit ts {ts} of seq {seq} not after {history.last_ack_ts}"
                )
                history.acked[seq] = history.last_ack_ts = ts
                acks.append(seq)
            else:
                assert kind == "opening", f"{context}: unexpected output {line!r}"
        assert acks == list(range(history.last_seq + 1, history.last_seq + 1 + len(acks))), (
            f"{context}: acknowledged {acks}"
        )
        kills_mid_commit += bool(acks)

        _check_store(path, history, context)

    # The test did exercise something: many commits, and kills in the middle of committing.
    assert len(history.acked) >= ROUNDS, f"seed {seed}: only {len(history.acked)} commits"
    assert kills_mid_commit >= ROUNDS // 2, f"seed {seed}: {kills_mid_commit} mid-commit kills"

"""Shared by `live_views` and `live_aggregates`: their data sets and a commit -> on_change probe.

Data set of N documents (`frame(n)`, deterministic): table `items` with `x` (int64, the
`by_x` index; a permutation of the even numbers 0..2N-2), `g` (one of `GROUPS` strings, about
N / GROUPS documents each) and `v` (float64, normal around 100). The store file is built once
with `client.import_dataframe` (batches of `IMPORT_BATCH`, tqdm progress bar) under
`bench/.data/live-N.db` with a completion marker, and copied to a scratch folder for every run
(the benchmarks patch documents; the cached file stays as built).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import kernel_ext
from bench._common import DATA_DIR, cached_build, percentile, remove_db
from kernel_ext import define_schema, define_table, v

if TYPE_CHECKING:
    import pandas as pd

    from kernel_ext.client.embedded import Client

__all__ = [
    "GROUPS",
    "LIVE_SCHEMA",
    "Probe",
    "Sample",
    "copy_dataset",
    "ensure_live_dataset",
    "frame",
    "timed",
]

GROUPS: Final = 20
IMPORT_BATCH: Final = 20_000
_FORMAT: Final = 1

LIVE_SCHEMA: Final = define_schema(
    {
        "items": define_table({"x": v.int64(), "g": v.string(), "v": v.float64()}).index(
            "by_x", ["x"]
        )
    }
)


def frame(n: int) -> pd.DataFrame:
    """The `n` documents of the data set, in import order (deterministic)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(n)
    names = np.array([f"g{k:02d}" for k in range(GROUPS)], dtype=object)
    return pd.DataFrame(
        {
            "x": (rng.permutation(n) * 2).astype("int64"),
            "g": names[rng.integers(0, GROUPS, n)],
            "v": rng.normal(100.0, 15.0, n),
        }
    )


def _files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal")) if p.exists()]


def ensure_live_dataset(n: int) -> Path:
    """The cached store file of `frame(n)` (built now if it or its marker is missing)."""
    path = DATA_DIR / f"live-{n}.db"

    def build() -> None:
        remove_db(path)
        client = kernel_ext.connect(path)
        try:
            client.set_schema(LIVE_SCHEMA)
            client.import_dataframe("items", frame(n), batch_size=IMPORT_BATCH, progress=n > 50_000)
        finally:
            client.close()

    cached_build((path,), f"live-{n}", {"format": _FORMAT, "docs": n}, build)
    return path


def copy_dataset(n: int, folder: Path) -> Path:
    """A fresh copy of the `n`-document store in `folder` (its path)."""
    source = ensure_live_dataset(n)
    target = folder / f"live-{n}.db"
    for path in _files(source):
        shutil.copyfile(path, folder / path.name.replace(source.name, target.name))
    return target


@dataclass
class Sample:
    """One commit's timings, in seconds (perf_counter differences)."""

    call_to_cb: float  # just before client.mutation -> the on_change callback starts
    commit_to_cb: float  # the store's commit listener (SQLite committed) -> on_change starts
    call_to_return: float  # client.mutation's own duration (it waits for live queries)


@dataclass
class Probe:
    """Times commit -> on_change for one subscription of `client`.

    `client.mutation(...)` through `commit()`; the commit time is taken by a store commit
    listener (called right after SQLite committed, under the commit lock) and the callback
    time by an `on_change` callback, both with `time.perf_counter`. `commit()` checks that
    exactly one commit happened and exactly one `on_change` fired for it.
    """

    client: Client
    subscription: Any
    commits: list[float] = field(default_factory=list)
    callbacks: list[float] = field(default_factory=list)
    #: The value the latest callback received (only the latest: a consumed twin's values are
    #: a million fresh dicts each).
    value: Any = None
    fired: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        clock = time.perf_counter

        def on_change(value: Any) -> None:
            self.callbacks.append(clock())
            self.value = value
            self.fired.set()

        self.subscription.on_change(on_change)
        self.client.backend.store.add_listener(lambda _commit: self.commits.append(clock()))

    def commit(self, ref: str, args: Mapping[str, Any]) -> tuple[Sample, Any]:
        """Run mutation `ref(args)`, wait for the on_change callback (60 s at most); returns
        the timings and the value the callback received."""
        self.fired.clear()
        commits_before, callbacks_before = len(self.commits), len(self.callbacks)
        t_call = time.perf_counter()
        self.client.mutation(ref, args)
        t_return = time.perf_counter()
        assert self.fired.wait(60), "no on_change within 60 s"
        # Every callback of the commit's round was queued before client.mutation returned;
        # an empty task through the (single, in-order) callback thread drains them.
        self.client._dispatcher.submit(lambda: None).result(timeout=60)
        assert len(self.commits) == commits_before + 1, "expected exactly one commit"
        new = self.callbacks[callbacks_before:]
        assert len(new) == 1, f"expected exactly one on_change, got {len(new)}"
        t_cb = new[0]
        sample = Sample(t_cb - t_call, t_cb - self.commits[-1], t_return - t_call)
        return sample, self.value


def timed(function: Callable[[], Any], rounds: int) -> list[float]:
    """Seconds of `rounds` calls of `function`."""
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


@dataclass
class Stats:
    """Percentiles of one series, in milliseconds."""

    p50: float
    p95: float
    p99: float
    max: float
    n: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        ms = sorted(s * 1e3 for s in seconds)
        return cls(percentile(ms, 50), percentile(ms, 95), percentile(ms, 99), ms[-1], len(ms))

    def __str__(self) -> str:
        return (
            f"p50 {self.p50:9.3f} ms  p95 {self.p95:9.3f} ms  p99 {self.p99:9.3f} ms  "
            f"max {self.max:9.3f} ms  (n={self.n})"
        )


def report(label: str, samples: list[Sample]) -> dict[str, Stats]:
    """Print the three timings of `samples` under `label`; returns their `Stats`."""
    stats = {
        "commit": Stats.of([s.commit_to_cb for s in samples]),
        "call": Stats.of([s.call_to_cb for s in samples]),
        "mutation": Stats.of([s.call_to_return for s in samples]),
    }
    print(f"  {label}")
    print(f"    commit -> on_change  {stats['commit']}")
    print(f"    call   -> on_change  {stats['call']}")
    print(f"    client.mutation      {stats['mutation']}")
    return stats

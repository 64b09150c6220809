"""Metrics shared by the workers of one instance: prometheus-client's multiprocess mode.

Each worker writes its metric values to memory-mapped files named by its pid in one directory
(`PROMETHEUS_MULTIPROC_DIR`); whichever worker answers a scrape sums them. prometheus-client picks
that mode when it is first imported, from the environment, so the directory must be named before any
worker imports it: `lb serve --workers N` and `lb.worker.UvicornWorker` (gunicorn) do that here, in
the parent process, before the workers start. Files of a previous run are removed at start; a dead
worker's counters stay (totals never go backwards), its live gauges are dropped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Set next to ENV_DIR once the directory was cleaned for this instance, so a worker started later
# (a restart after a crash) does not wipe what the others wrote.
ENV_READY = "LB_METRICS_DIR_READY"
_HEADER = 8  # bytes a metric file starts with (how much of it is used, padding) once sized


def multiprocess_dir() -> str | None:
    return os.environ.get(ENV_DIR) or None


def multiprocess_active() -> bool:
    """True when prometheus-client in this process writes to multiprocess files."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


def clean_directory(path: str) -> None:
    """Remove the metric files of an earlier run (only `*.db`: the directory may be shared)."""
    for name in glob.glob(os.path.join(path, "*.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def prepare_multiprocess() -> Callable[[], None]:
    """Name and clean the shared metrics directory for the workers about to start.

    Uses `$PROMETHEUS_MULTIPROC_DIR` when set (created if missing), else a new temporary directory.
    Returns a cleanup to call when the instance exits: it removes a directory it created.
    """
    path = multiprocess_dir()
    created = False
    if path is None:
        path = tempfile.mkdtemp(prefix="lb-metrics-")
        created = True
        os.environ[ENV_DIR] = path
    os.makedirs(path, exist_ok=True)
    if os.environ.get(ENV_READY) != path:
        clean_directory(path)
        os.environ[ENV_READY] = path
    owner = os.getpid()

    def cleanup() -> None:
        # Forked workers inherit this; only the process that made the directory removes it.
        if created and os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    return cleanup


def pids_with_live_files(path: str) -> set[int]:
    pids = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        tail = os.path.basename(name)[:-3].rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    return pids


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A worker killed a moment ago is a zombie until its launcher reaps it: dead already.
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rpartition(b")")[2].split()[:1] != [b"Z"]
    except OSError:
        return True  # no /proc: the signal said it exists


def mark_dead(pid: int, path: str | None = None) -> None:
    """A worker exited: drop its live gauges (gunicorn's `child_exit` hook calls this)."""
    from prometheus_client import multiprocess

    path = path or multiprocess_dir()
    if path:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def sweep_dead(path: str, alive: Callable[[int], bool] = process_alive) -> list[int]:
    """Mark workers that died without a hook (killed, crashed) dead; returns their pids.

    Runs before each aggregated read, so `lb serve` (whose supervisor has no exit hook) and a
    gunicorn set up without `lb.gunicorn_conf` both drop a dead worker's live gauges.
    """
    dead = [pid for pid in pids_with_live_files(path) if not alive(pid)]
    for pid in dead:
        mark_dead(pid, path)
    return dead


def read_samples(
    path: str, kinds: Iterable[str]
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples summed over every worker's files of the given kinds (`counter`, `gauge_livesum`).

    Returns {sample name: {sorted label pairs: value}}.
    """
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for metric in WrittenFiles(path, kinds).collect():
        for sample in metric.samples:
            labels = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[labels] = sample.value
    return out


def written_files(path: str, kinds: Iterable[str] = ("*",)) -> list[str]:
    """The metric files of `kinds` in `path`, less those a worker is still creating.

    prometheus-client creates a worker's file empty, then sizes it (zero-filled, which reads as
    no value): a reader that opens it in between fails on the missing header (`struct.error`),
    and the scrape or status read with it. Such a file holds no value yet, so it is left out; a
    file only grows, so one seen sized is read whole.
    """
    files = []
    for kind in kinds:
        for name in glob.glob(os.path.join(path, f"{kind}_*.db")):
            with contextlib.suppress(FileNotFoundError):  # a dead worker's live gauges go
                if os.stat(name).st_size >= _HEADER:
                    files.append(name)
    return files


class WrittenFiles:
    """prometheus-client's `MultiProcessCollector` over `written_files` only (its own reads every
    file there, one being created included)."""

    def __init__(self, path: str, kinds: Iterable[str] = ("*",)) -> None:
        self.path = path
        self.kinds = tuple(kinds)

    def __repr__(self) -> str:
        return f"<WrittenFiles {self.path} {self.kinds}>"

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = written_files(self.path, self.kinds)
        return MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]


def render(path: str) -> bytes:
    """The Prometheus text exposition of every worker's values, summed."""
    from prometheus_client import generate_latest

    sweep_dead(path)
    return generate_latest(WrittenFiles(path))


def backend_totals(path: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(pool, backend): {requests_total, failures_total, active_requests}} over every worker."""
    sweep_dead(path)
    samples = read_samples(path, ("counter", "gauge_livesum"))
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for sample, field in (
        ("lb_backend_requests_total", "requests_total"),
        ("lb_backend_failures_total", "failures_total"),
        ("lb_backend_active_requests", "active_requests"),
    ):
        for labels, value in samples.get(sample, {}).items():
            named = dict(labels)
            key = (named.get("pool", ""), named.get("backend", ""))
            totals.setdefault(key, {})[field] = value
    return totals

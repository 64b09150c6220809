"""Four workers behave as one balancer for health: `lb serve --workers 4` and gunicorn with lb's
worker class check each backend once per interval (the leader does), another worker takes over
when the leader dies, a backend going down is logged once and avoided by every worker, and every
log line says which worker wrote it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import pytest

from lb import multiprocess as mp
from servers import LbProcess, wait_until, workers_of

WORKERS = 4
INTERVAL = 0.5
WINDOW = 5.0
# At most this many checks per interval and backend: one checker, with jitter and scheduling
# slack; four checkers (one per worker) make about four.
MAX_PER_INTERVAL = 1.5


def started_workers(lb: LbProcess, metrics: str) -> set[int]:
    """Workers that have started their app: they write their live metric gauges at once."""
    return mp.pids_with_live_files(metrics) & set(workers_of(lb.process.pid))


def log_lines(lb: LbProcess) -> list[dict[str, Any] | str]:
    """Each line of the process's output: parsed when JSON, else the text."""
    out: list[dict[str, Any] | str] = []
    for line in lb.output().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
        elif line.strip():
            out.append(line)
    return out


def messages(lb: LbProcess, text: str) -> list[dict[str, Any]]:
    return [
        line
        for line in log_lines(lb)
        if isinstance(line, dict) and text in str(line.get("message", ""))
    ]


def leader(lb: LbProcess) -> int | None:
    """The pid of the worker that last said it leads, if it is still alive."""
    said = messages(lb, "leads the instance")
    if not said:
        return None
    pid = int(said[-1]["pid"])
    return pid if pid in workers_of(lb.process.pid) else None


def checks_in(backends: list[Any], seconds: float) -> list[int]:
    """Health checks each backend gets over the next `seconds` (measured, not estimated)."""
    start = time.monotonic()
    time.sleep(seconds)
    return [b.checks_since(start) for b in backends]


def spread_requests(url: str, count: int) -> list[str]:
    """`count` requests, each on a new connection (so the kernel spreads them over the
    workers); the name of the backend that answered each."""
    names = []
    for _ in range(count):
        response = httpx.get(url + "/")
        assert response.status_code == 200
        names.append(response.headers["x-backend"])
    return names


@pytest.mark.parametrize("gunicorn", [False, True], ids=["lb-serve", "gunicorn"])
def test_workers_check_once_per_interval_share_health_and_say_who_they_are(  # type: ignore[no-untyped-def]
    start_backends, lb_process, tmp_path, gunicorn: bool
) -> None:
    (b1, s1), (b2, s2) = start_backends(2)
    config = {
        "pools": {
            "web": {
                "backends": [{"id": "b1", "url": s1.url}, {"id": "b2", "url": s2.url}],
                "health_check": {
                    "path": "/health",
                    "interval": f"{int(INTERVAL * 1000)}ms",
                    "timeout": "400ms",
                    "healthy_threshold": 1,
                    "unhealthy_threshold": 2,
                },
            }
        },
        "logging": {"format": "json"},
    }
    # Named here: a gunicorn worker's /proc environ does not show what its master set after exec.
    metrics = str(tmp_path / "metrics")
    lb = lb_process(config, workers=WORKERS, gunicorn=gunicorn, **{mp.ENV_DIR: metrics})
    wait_until(lambda: len(started_workers(lb, metrics)) == WORKERS, 30, 0.1)

    # One check per interval and backend, not one per worker.
    limit = MAX_PER_INTERVAL * WINDOW / INTERVAL
    counts = checks_in([b1, b2], WINDOW)
    assert all(0.5 * WINDOW / INTERVAL <= n <= limit for n in counts), counts

    # Every worker's lines carry its pid; access lines name the worker that served.
    names = spread_requests(lb.url, 40)
    assert set(names) == {"b1", "b2"}
    served = wait_until(lambda: access_workers(lb, 40), 10)
    assert len(served) >= 2 and served <= set(workers_of(lb.process.pid))
    for line in log_lines(lb):
        if isinstance(line, dict):
            assert isinstance(line.get("pid", line.get("worker")), int), line
        else:  # gunicorn's master, before lb's JSON formatter is set up: `[1234]`
            assert "[" in line and any(part.strip("[]").isdigit() for part in line.split()), line

    # The leader dies: another worker takes over within about a second, from the shared state.
    first = wait_until(lambda: leader(lb), 10)
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    second = wait_until(lambda: (p := leader(lb)) is not None and p != first and p, 10)
    took = time.monotonic() - killed_at
    assert took < 3.0, took
    counts = checks_in([b1, b2], 4 * INTERVAL)
    assert all(1 <= n <= MAX_PER_INTERVAL * 4 + 1 for n in counts), counts
    assert not messages(lb, "is unhealthy"), "no flap on takeover"
    status = httpx.get(lb.url + "/_lb/status").json()
    assert [b["state"] for b in status["pools"]["web"]["backends"]] == ["healthy", "healthy"]

    # b2 goes down: logged once, by the leader, and every worker stops sending to it.
    b2.health_status = 503
    down = wait_until(lambda: messages(lb, "backend b2 in pool web is unhealthy"), 10)
    assert down[0]["pid"] == second
    before = len(b2.seen)
    wait_until(lambda: set(spread_requests(lb.url, 40)) == {"b1"}, 10, 0)
    assert len(b2.seen) - before < 40  # at most the requests of the first round
    marked = len(b2.seen)
    names = spread_requests(lb.url, 40)
    assert names == ["b1"] * 40 and len(b2.seen) == marked
    served = wait_until(lambda: access_workers(lb, 40, since_backend="b1"), 10)
    assert len(served) >= 2  # several workers, all of them avoiding b2
    time.sleep(2 * INTERVAL)  # more checks fail meanwhile: still one line per instance
    assert len(messages(lb, "backend b2 in pool web is unhealthy")) == 1

    # A worker that crashes is replaced; the new one knows b2 is down before it serves.
    before = started_workers(lb, metrics)
    os.kill(min(before - {second}), signal.SIGKILL)

    def replaced() -> set[int] | None:
        now = started_workers(lb, metrics)
        return now - before if len(now) == WORKERS and now - before else None

    (replacement,) = wait_until(replaced, 30, 0.1)
    marked = len(b2.seen)

    def served_by_replacement() -> bool:
        assert spread_requests(lb.url, 20) == ["b1"] * 20
        return replacement in wait_until(lambda: access_workers(lb, 20), 10)

    wait_until(served_by_replacement, 30, 0)
    assert len(b2.seen) == marked  # not one request to b2 from any worker, the new one included


def access_workers(lb: LbProcess, last: int, since_backend: str | None = None) -> set[int] | None:
    """The workers that served the last `last` requests (access-log lines), once all are
    written (lines are flushed in batches); with `since_backend`, all went there."""
    access = [
        line
        for line in log_lines(lb)
        if isinstance(line, dict) and "request_id" in line and line.get("path") == "/"
    ]
    if len(access) < last:
        return None
    recent = access[-last:]
    if since_backend is not None and any(a["backend"] != since_backend for a in recent):
        return None
    return {int(a["worker"]) for a in recent}

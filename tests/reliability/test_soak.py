"""The soak: N requests at 200 connections through every feature at once, with 0 errors, every
request logged and counted once, and the balancer's memory flat.

An `lb serve` process (least_latency, active and passive health checks, retries, a rate limit
that never triggers, the memory cache on part of the paths, metrics and status scraped all along,
a JSON access log to a file) in front of two nginx backends, driven by wrk. CI runs 50,000
requests; `LB_SOAK_REQUESTS=1000000` is the full run (docs/reliability.md has its figures).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import httpx
import pytest

from wrkload import run_wrk

REQUESTS = int(os.environ.get("LB_SOAK_REQUESTS", "50000"))
CONNECTIONS = 200
PATHS = ["/", "/api/items?id=7", "/", *(f"/cache/{c}" for c in "abcdefghij")]


def soak_config(urls: list[str], access_log: str) -> dict[str, Any]:
    return {
        "pools": {
            "web": {
                "strategy": "least_latency",
                "backends": urls,
                "health_check": {"path": "/health", "interval": "1s", "timeout": "1s"},
                "passive_health": {"max_failures": 5, "ejection_time": "10s"},
                "retries": {"attempts": 2, "retry_on": ["connect_error", "502", "503"]},
            }
        },
        "rate_limit": {"rate": 1e6, "burst": 1_000_000, "key": "client_ip"},
        "cache": {"max_entries": 1000, "max_bytes": "8MiB"},
        "logging": {"access_log": True, "format": "json", "file": access_log, "level": "warning"},
    }


class Watcher:
    """Scrapes metrics and status and samples the balancer's RSS while the load runs."""

    def __init__(self, lb: Any) -> None:
        self.lb = lb
        self.rss: list[int] = []
        self.scrapes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.lb.url, timeout=10) as client:
            while not self._stop.wait(0.5):
                self.rss.append(self.lb.rss_kib())
                self.scrapes.append(client.get("/_lb/metrics").status_code)
                self.scrapes.append(client.get("/_lb/status").status_code)


def requests_total(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("lb_requests_total{") and 'pool="web"' in line
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_soak(nginx, lb_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    log_path = str(tmp_path / "access.log")
    lb = lb_process(soak_config(nginx.urls, log_path))
    # Warm up (imports, pools, allocator arenas), then measure from a steady baseline.
    warmup = run_wrk(
        lb.url, requests=max(REQUESTS // 10, 5000), connections=CONNECTIONS, paths=PATHS
    )
    assert warmup.errors == 0, warmup.output
    baseline = lb.rss_kib()
    with Watcher(lb) as watcher:
        result = run_wrk(lb.url, requests=REQUESTS, connections=CONNECTIONS, paths=PATHS)
    final = lb.rss_kib()

    print(
        f"\nsoak: {result.requests} requests at {CONNECTIONS} connections in {result.seconds:.1f}s"
        f" ({result.rate:.0f}/s), errors {result.errors}; RSS {baseline} -> {final} KiB"
        f" (max {max(watcher.rss, default=final)});"
        f" samples {watcher.rss[:: max(1, len(watcher.rss) // 12)]}"
    )
    assert result.requests >= REQUESTS, result.output
    assert result.errors == 0, result.output
    assert set(watcher.scrapes) == {200}

    # Every request was logged once, with its status; the only other lines are requests wrk
    # abandoned when it stopped (at most one per connection, each time it stopped).
    sent = warmup.requests + result.requests
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    cut_off = [r for r in records if r["status"] != 200]
    assert sent <= len(records) <= sent + 2 * CONNECTIONS
    assert all(r.get("error") == "client_disconnected" for r in cut_off), cut_off[:3]
    assert {r["cache"] for r in records if r["path"].startswith("/cache/")} >= {"HIT"}
    metrics = httpx.get(lb.url + "/_lb/metrics", timeout=10).text
    assert requests_total(metrics) == len(records)
    status = httpx.get(lb.url + "/_lb/status", timeout=10).json()
    assert {b["state"] for b in status["pools"]["web"]["backends"]} == {"healthy"}

    # Flat: no growth with the number of requests beyond allocator noise.
    assert final - baseline < 16 * 1024, (baseline, final, watcher.rss)
    assert "Traceback" not in lb.output()

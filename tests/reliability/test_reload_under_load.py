"""Config reloads under load: an `lb serve` process takes wrk's traffic at 100 connections while
it is reloaded again and again (POST /_lb/reload and SIGHUP in turn) between configs that move
backends, switch strategies and turn the cache and rate limit on and off. Not one request fails.
(tests/integration/test_reload.py covers what one reload keeps and drops.)"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from servers import wait_until
from wrkload import WrkResult, run_wrk

pytestmark = pytest.mark.slow

RELOADS = 12


def variant(urls: list[str], i: int) -> dict[str, Any]:
    """The i-th config: alternately both backends or one, and features on or off."""
    config: dict[str, Any] = {
        "pools": {
            "web": {
                "backends": urls if i % 2 == 0 else urls[i % 4 // 2 :][:1],
                "strategy": ["round_robin", "least_connections", "least_latency"][i % 3],
            }
        },
        "logging": {"access_log": False, "level": "info"},
    }
    if i % 3 == 1:
        config["cache"] = {"max_entries": 100}
    if i % 4 == 2:
        config["rate_limit"] = {"rate": 1e6, "burst": 1_000_000}
    return config


def test_reloads_under_load_fail_no_request(nginx, lb_process) -> None:  # type: ignore[no-untyped-def]
    lb = lb_process(variant(nginx.urls, 0))
    results: dict[str, WrkResult] = {}
    load = threading.Thread(
        target=lambda: results.update(
            wrk=run_wrk(lb.url, requests=40_000, connections=100, paths=["/", "/cache/a", "/x?y=1"])
        )
    )
    load.start()
    wait_until(lambda: httpx.get(lb.url + "/_lb/metrics").text.count("lb_requests_total{") > 0)
    answers = []
    for i in range(1, RELOADS + 1):
        lb.write_config(variant(nginx.urls, i))
        if i % 2:
            answers.append(httpx.post(lb.url + "/_lb/reload", timeout=10).json()["status"])
        else:
            os.kill(lb.process.pid, signal.SIGHUP)
        time.sleep(0.2)
        if not load.is_alive():
            break
    load.join(120)
    result = results["wrk"]
    assert i == RELOADS, f"the load ended after {i} reloads: make it longer"
    assert set(answers) == {"reloaded"}
    assert result.requests >= 40_000
    assert result.errors == 0, result.output
    # The last config is the one serving.
    last = variant(nginx.urls, RELOADS)["pools"]["web"]
    status = httpx.get(lb.url + "/_lb/status").json()["pools"]["web"]
    assert status["strategy"] == last["strategy"]
    assert len(status["backends"]) == len(last["backends"])
    assert lb.output().count("config reloaded (SIGHUP)") == RELOADS // 2
    assert "Traceback" not in lb.output()

"""Redis killed (SIGKILL) and restarted under load: the rate limit follows `on_store_error`, the
cache passes through, nothing hangs or fails otherwise, and both recover by themselves."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from conftest import pool_config
from servers import ClientThreads, wait_until

pytestmark = pytest.mark.redis

CACHED = "/cache/hot?h=cache-control:max-age=60"


def kill(redis_server: Any) -> None:
    redis_server.process.kill()  # SIGKILL: no goodbye to the clients
    redis_server.process.wait(10)
    redis_server.process = None


class Load(ClientThreads):
    """Threads sending a mix of cached and uncached requests until stopped; every result is
    recorded with when it started and ended."""

    def __init__(self, url: str, threads: int = 6) -> None:
        super().__init__(url, threads)
        self.results: list[dict[str, Any]] = []

    def since(self, moment: float) -> list[dict[str, Any]]:
        return [r for r in self.results if r["started"] > moment]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                path = CACHED if i % 2 else "/echo"
                started = time.monotonic()
                try:
                    response = client.get(path)
                except httpx.HTTPError as exc:
                    result = {"status": repr(exc), "headers": {}}
                else:
                    result = {"status": response.status_code, "headers": response.headers}
                result.update(path=path, started=started, ended=time.monotonic())
                self.results.append(result)


def recovered(load: Load, restarted: float) -> bool:
    recent = [r for r in load.results[-12:] if r["started"] > restarted]
    cached = [r for r in recent if r["path"] == CACHED]
    return (
        len(recent) >= 12
        and all(r["status"] == 200 and "ratelimit-limit" in r["headers"] for r in recent)
        and bool(cached)
        and all(r["headers"].get("x-cache") == "HIT" for r in cached)
    )


@pytest.mark.parametrize("on_store_error", ["allow", "deny"])
def test_redis_killed_and_restarted_under_load(
    redis_server, start_backends, start_balancer, on_store_error: str
) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["rate_limit"] = {  # a limit that never triggers: only the store's health matters
        "rate": 1e6,
        "burst": 1_000_000,
        "store": "redis",
        "redis_url": redis_server.url,
        "on_store_error": on_store_error,
    }
    config["cache"] = {"store": "redis", "redis_url": redis_server.url}
    lb = start_balancer(config)
    with Load(lb.url) as load:
        wait_until(lambda: len(load.results) >= 60)
        killed = time.monotonic()
        kill(redis_server)
        # An outage long enough for several retry intervals of both stores.
        wait_until(
            lambda: len(load.since(killed)) >= 200 and time.monotonic() - killed > 1.5, timeout=20
        )
        restarting = time.monotonic()
        redis_server.start()
        restarted = time.monotonic()
        wait_until(lambda: recovered(load, restarted), timeout=20)

    results = load.results
    statuses = {r["status"] for r in results}
    expected = {200} if on_store_error == "allow" else {200, 503}
    assert statuses <= expected, statuses  # no 5xx of another kind, no timeouts, no resets
    slowest = max(r["ended"] - r["started"] for r in results)
    assert slowest < 1.5, slowest  # a dead store never makes a request wait on it for long
    before = [r for r in results if r["ended"] < killed]
    assert all("ratelimit-limit" in r["headers"] for r in before)
    down = [r for r in results if r["started"] > killed and r["ended"] < restarting]
    if on_store_error == "allow":
        assert all(r["status"] == 200 for r in down)
        # The cache passes requests through while its store is away.
        assert "BYPASS" in {r["headers"].get("x-cache") for r in down if r["path"] == CACHED}
    else:
        denied = [r for r in down if r["status"] == 503]
        assert len(denied) > len(down) / 2
        assert all(r["headers"]["retry-after"] == "1" for r in denied)
    # The backend never saw a request that was denied.
    assert backend.count() == sum(
        1
        for r in results
        if r["status"] == 200 and (r["path"] == "/echo" or r["headers"].get("x-cache") != "HIT")
    )

"""A pool's `limits` (circuit breakers) against real backends on loopback."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

from apps import Backend
from conftest import pool_config
from rawbackend import counting
from servers import wait_until

SLOW = 2.5  # seconds the slow backend takes per request: far longer than a refusal


def timed_get(url: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    with httpx.Client() as client:  # a connection per request: lb sees them all at once
        response = client.get(url, timeout=20)
    return response, time.monotonic() - start


def overflows(lb_url: str) -> float:
    text = httpx.get(lb_url + "/_lb/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "lb_pool_overflows":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels == {
                    "pool": "web",
                    "limit": "max_pending",
                }:
                    return sample.value
    return 0.0


def test_beyond_max_pending_requests_get_503_at_once(start_server, start_balancer) -> None:  # type: ignore[no-untyped-def]
    slow = Backend("slow")
    slow.delay = SLOW
    server = start_server(slow)
    limits = {"max_connections": 1, "max_pending": 2}
    # The last queued request waits two slow answers: within timeouts.pool.
    lb = start_balancer(pool_config([server.url], limits=limits, timeouts={"pool": "30s"}))
    status = httpx.get(lb.url + "/_lb/status").json()["pools"]["web"]
    assert status["limits"] == {**limits, "max_requests_per_connection": None}

    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(timed_get, lb.url + "/first")
        wait_until(lambda: slow.in_flight == 1, 5)  # holds the one connection
        queued = [pool.submit(timed_get, lb.url + f"/queued{i}") for i in range(2)]

        def backend_load() -> tuple[int, int]:
            backend = httpx.get(lb.url + "/_lb/status").json()["pools"]["web"]["backends"][0]
            return backend["connections"], backend["pending"]

        wait_until(lambda: backend_load() == (1, 2), 5)
        refused = [pool.submit(timed_get, lb.url + f"/refused{i}") for i in range(3)]
        for future in refused:
            response, seconds = future.result()
            assert response.status_code == 503
            assert response.json()["error"] == "unavailable"
            assert response.headers["retry-after"] == "1"
            assert seconds < SLOW / 2, seconds  # at once: well before the slow backend answers
        assert overflows(lb.url) == 3
        # The queued ones are served in turn on the one connection, never refused.
        assert first.result()[0].status_code == 200
        assert [future.result()[0].status_code for future in queued] == [200, 200]
    assert slow.count() == 3
    assert backend_load() == (1, 0)  # the connection stays open, idle


def test_max_connections_serialises_requests_to_a_backend(start_server, start_balancer) -> None:  # type: ignore[no-untyped-def]
    slow = Backend("slow")
    slow.delay = 0.3
    server = start_server(slow)
    lb = start_balancer(pool_config([server.url], limits={"max_connections": 2}))
    peak = 0

    def watch() -> bool:
        nonlocal peak
        peak = max(peak, slow.in_flight)
        return False

    with ThreadPoolExecutor(6) as pool:
        start = time.monotonic()
        answers = [pool.submit(timed_get, lb.url + f"/r{i}") for i in range(6)]
        while not all(a.done() for a in answers):
            watch()
            time.sleep(0.01)
        elapsed = time.monotonic() - start
    assert [a.result()[0].status_code for a in answers] == [200] * 6
    assert peak <= 2
    assert elapsed >= 3 * 0.3 * 0.9  # three rounds of two, not one round of six
    assert overflows(lb.url) == 0  # no max_pending: they wait (up to timeouts.pool)


def test_max_requests_per_connection_retires_connections(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    backend = raw_backend(counting)
    lb = start_balancer(pool_config([backend.url], limits={"max_requests_per_connection": 3}))
    with httpx.Client(base_url=lb.url) as client:
        for i in range(9):
            assert client.get(f"/r{i}").status_code == 200
    assert len(backend.requests) == 9
    assert backend.connections == 3  # a new connection every three requests


def test_without_limits_one_connection_serves_them_all(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    backend = raw_backend(counting)
    lb = start_balancer(pool_config([backend.url]))
    with httpx.Client(base_url=lb.url) as client:
        for i in range(9):
            assert client.get(f"/r{i}").status_code == 200
    assert backend.connections == 1
    status = httpx.get(lb.url + "/_lb/status").json()["pools"]["web"]
    assert status["limits"] is None


def test_a_reload_applies_new_limits(start_server, start_balancer, config_file) -> None:  # type: ignore[no-untyped-def]
    slow = Backend("slow")
    slow.delay = SLOW
    server = start_server(slow)
    lb = start_balancer(config_file(pool_config([server.url])))
    config_file(pool_config([server.url], limits={"max_connections": 1, "max_pending": 0}))
    assert httpx.post(lb.url + "/_lb/reload", timeout=10).status_code == 200
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(timed_get, lb.url + "/first")
        wait_until(lambda: slow.in_flight == 1, 5)
        response, seconds = timed_get(lb.url + "/second")
        assert response.status_code == 503 and seconds < SLOW / 2
        assert first.result()[0].status_code == 200
    config_file(pool_config([server.url]))  # lifted again
    assert httpx.post(lb.url + "/_lb/reload", timeout=10).status_code == 200
    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(timed_get, lb.url + f"/r{i}") for i in range(2)]
        assert [a.result()[0].status_code for a in answers] == [200, 200]


def test_health_checks_are_not_held_by_limits(start_server, start_balancer) -> None:  # type: ignore[no-untyped-def]
    slow = Backend("slow")
    slow.delay = SLOW
    server = start_server(slow)
    check = {"interval": "100ms", "timeout": "300ms", "unhealthy_threshold": 1}
    limits = {"max_connections": 1}
    lb = start_balancer(pool_config([server.url], limits=limits, health_check=check))

    def state() -> str:
        status = httpx.get(lb.url + "/_lb/status").json()
        return str(status["pools"]["web"]["backends"][0]["state"])

    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(timed_get, lb.url + f"/r{i}") for i in range(2)]
        wait_until(lambda: slow.in_flight == 1, 5)  # one on the connection, one queued
        since = time.monotonic()
        # The one connection is busy for SLOW seconds, yet checks reach the backend within
        # their timeout, on a connection of their own: they do not queue behind traffic.
        wait_until(lambda: slow.checks_since(since) >= 3, SLOW / 2)
        assert state() == "healthy" and answers[1].running()
        assert [a.result()[0].status_code for a in answers] == [200, 200]
    assert state() == "healthy"


def test_a_backend_added_at_run_time_takes_its_pools_limits(start_server, start_balancer) -> None:  # type: ignore[no-untyped-def]
    slow = Backend("slow")
    slow.delay = SLOW
    server = start_server(slow)
    idle = {"url": "http://127.0.0.1:9", "weight": 0}  # takes no traffic: only the added one does
    lb = start_balancer(pool_config([idle], limits={"max_connections": 1, "max_pending": 0}))
    added = httpx.post(lb.url + "/_lb/pools/web/backends", json={"url": server.url, "id": "slow"})
    assert added.status_code == 201, added.text
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(timed_get, lb.url + "/first")
        wait_until(lambda: slow.in_flight == 1, 5)
        response, seconds = timed_get(lb.url + "/second")
        assert response.status_code == 503 and seconds < SLOW / 2
        assert first.result()[0].status_code == 200

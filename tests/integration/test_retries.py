"""SPEC 5 retries and timeouts through a real balancer: what is retried, what never is, the
budget, per-try and total timeouts, and the attempts in the access log."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import pool_config
from faults import RawServer
from lb.app import LoadBalancer
from servers import wait_until


def logged(config: dict[str, Any], path: Path) -> dict[str, Any]:
    config["logging"] = {"access_log": True, "file": str(path)}
    return config


def last_logged(path: Path) -> dict[str, Any]:
    """The last access-log line, once written (the client may see the response first)."""

    def lines() -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    line: str = wait_until(lines, 5)[-1]
    return dict(json.loads(line))


def test_connect_errors_are_retried_on_another_backend_for_any_method(
    start_backends, start_balancer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    (b1, s1), (b2, s2) = start_backends(2)
    s1.stop()
    log = tmp_path / "access.log"
    lb = start_balancer(logged(pool_config([s1.url, s2.url]), log))
    with httpx.Client(base_url=lb.url) as client:
        response = client.post("/echo", content=b"hello")  # round robin: b1 first, refused
        assert response.status_code == 200
        assert response.json()["backend"] == "b2" and response.json()["body"] == "hello"
    line = last_logged(log)
    assert line["attempts"] == 2 and line["backend"] == f"127.0.0.1:{s2.port}"


def test_a_large_upload_is_retried_after_a_connect_error_and_streams_whole(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    (b1, s1), (b2, s2) = start_backends(2)
    s1.stop()
    lb = start_balancer(pool_config([s1.url, s2.url]))

    def chunks() -> Any:
        for _ in range(64):
            yield b"u" * 16384

    response = httpx.post(f"{lb.url}/upload", content=chunks(), timeout=10)
    assert response.status_code == 200
    assert response.json() == {"received": 64 * 16384}


def test_post_is_not_replayed_once_the_backend_may_have_received_it(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    ((b2, s2),) = start_backends(1)
    closer = RawServer("close").start()
    try:
        config = pool_config([closer.url, s2.url], retries={"retry_on": ["connect_error", "502"]})
        lb = start_balancer(config)
        with httpx.Client(base_url=lb.url) as client:
            statuses = [client.post("/echo", content=b"pay once").status_code for _ in range(4)]
            # Those that went to the closing backend got 502 and went nowhere else.
            assert sorted(statuses) == [200, 200, 502, 502]
            assert closer.requests == 2 and b2.count() == 2
            # An idempotent request is retried on the other backend.
            assert [client.get("/").status_code for _ in range(4)] == [200] * 4
            assert closer.requests == 4 and b2.count() == 6
    finally:
        closer.stop()


def test_a_response_that_broke_off_after_its_head_is_never_retried(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    ((b2, s2),) = start_backends(1)
    reset = RawServer("reset").start()
    try:
        retries = {"retry_on": ["connect_error", "timeout", "502"], "attempts": 3}
        lb = start_balancer(pool_config([reset.url, s2.url], retries=retries))
        with httpx.Client(base_url=lb.url) as client, pytest.raises(httpx.HTTPError):
            client.get("/")  # the first pick is the resetting backend
        assert reset.requests == 1 and b2.count() == 0
    finally:
        reset.stop()


def test_retry_on_status_for_idempotent_methods_only(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    (b1, s1), (b2, s2) = start_backends(2)
    b1.status = 503
    app = LoadBalancer(pool_config([s1.url, s2.url], retries={"retry_on": ["503"]}))
    retried: list[str] = []
    app.metrics.retry = retried.append  # type: ignore[method-assign]
    lb = start_balancer(app)
    with httpx.Client(base_url=lb.url) as client:
        assert [client.get("/").status_code for _ in range(4)] == [200] * 4
        assert b1.count() == 2 and b2.count() == 4
        assert retried == ["web", "web"]
        statuses = sorted(client.post("/echo", content=b"x").status_code for _ in range(4))
        assert statuses == [200, 200, 503, 503]  # passed on as the backend sent it
        assert b1.count() == 4 and b2.count() == 6


def test_when_every_backend_fails_the_last_answer_stands(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(2)
    for backend, _ in backends:
        backend.status = 503
    retries = {"retry_on": ["503"], "attempts": 5, "budget_percent": 100}
    lb = start_balancer(pool_config([s.url for _, s in backends], retries=retries))
    response = httpx.get(f"{lb.url}/")
    assert response.status_code == 503 and response.json()["backend"] in ("b1", "b2")
    assert sum(b.count() for b, _ in backends) == 2  # each backend once, never the same twice


@pytest.mark.parametrize("percent", [0, 100])
def test_the_budget_caps_retries(start_backends, start_balancer, percent: int) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(2)
    for backend, _ in backends:
        backend.status = 503
    retries = {"retry_on": ["503"], "attempts": 2, "budget_percent": percent}
    lb = start_balancer(pool_config([s.url for _, s in backends], retries=retries))
    n = 40
    started = time.monotonic()
    with httpx.Client(base_url=lb.url) as client:
        assert all(client.get("/").status_code == 503 for _ in range(n))
    elapsed = time.monotonic() - started
    seen = sum(b.count() for b, _ in backends)
    if percent == 0:
        # Only the floor: 3 retries in each second the test touched.
        assert n < seen <= n + 3 * (math.ceil(elapsed) + 1)
    else:
        assert seen == 2 * n


def test_per_try_timeout_moves_on_to_another_backend(
    start_backends, start_balancer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    ((b2, s2),) = start_backends(1)
    hang = RawServer("hang").start()
    try:
        log = tmp_path / "access.log"
        retries = {"retry_on": ["timeout"], "per_try_timeout": 0.2}
        lb = start_balancer(logged(pool_config([hang.url, s2.url], retries=retries), log))
        started = time.monotonic()
        response = httpx.get(f"{lb.url}/", timeout=10)  # round robin: the hanging one first
        assert response.status_code == 200 and response.json()["backend"] == "b1"
        assert time.monotonic() - started < 1.5  # not the 30 s read timeout
        assert hang.requests == 1
        assert last_logged(log)["attempts"] == 2
    finally:
        hang.stop()


def test_timeouts_answer_504_and_nothing_hangs(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(2)
    urls = [s.url for _, s in backends]
    cases = [
        ({"timeouts": {"read": 0.2}, "retries": {"retry_on": ["timeout"]}}, "GET", 2),
        ({"timeouts": {"read": 0.2}, "retries": {"retry_on": ["timeout"]}}, "POST", 1),
        ({"retries": {"retry_on": ["timeout"], "per_try_timeout": 0.2, "attempts": 3}}, "GET", 2),
        ({"timeouts": {"total": 0.3}, "retries": {"retry_on": ["timeout"]}}, "GET", 1),
    ]
    for pool_keys, method, tries in cases:
        before = sum(b.count("/hang") for b, _ in backends)
        lb = start_balancer(pool_config(urls, **pool_keys))
        started = time.monotonic()
        response = httpx.request(method, f"{lb.url}/hang", timeout=10)
        elapsed = time.monotonic() - started
        assert response.status_code == 504, pool_keys
        assert response.json()["error"] == "timeout"
        assert elapsed < 1.5, (pool_keys, elapsed)
        assert sum(b.count("/hang") for b, _ in backends) - before == tries, pool_keys
        lb.stop()


def test_a_client_that_leaves_is_not_a_backend_failure(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    (b1, s1), (b2, s2) = start_backends(2)
    passive = {"max_failures": 1, "ejection_time": 30, "max_ejection_percent": 50}
    lb = start_balancer(pool_config([s1.url, s2.url], passive_health=passive))
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{lb.url}/hang", timeout=0.2)
    wait_until(b1.cancelled.is_set, 5)
    pool = lb.app.generation.pools["web"]
    wait_until(lambda: pool.backends[f"127.0.0.1:{s1.port}"].active_requests == 0, 5)
    assert all(b.state == "healthy" for b in pool.backends.values())

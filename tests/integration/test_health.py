"""SPEC 5 health through a real balancer: active and passive checks, panic mode, slow start."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
import pytest

from conftest import pool_config
from faults import RawServer
from lb.app import LoadBalancer
from servers import wait_until

FAST = {"interval": 0.05, "timeout": 0.05, "healthy_threshold": 2, "unhealthy_threshold": 2}


class HealthProbe:
    """Wraps a backend app and records the active checks it receives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.checks: list[tuple[str, dict[bytes, bytes]]] = []
        self.lock = threading.Lock()

    def count(self) -> int:
        with self.lock:
            return len(self.checks)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/health":
            with self.lock:
                self.checks.append((scope["method"], dict(scope["headers"])))
        await self.app(scope, receive, send)


def record(app: LoadBalancer, *names: str) -> list[tuple[Any, ...]]:
    """Record the app's metrics events `names` (called from the balancer's thread)."""
    events: list[tuple[Any, ...]] = []
    for name in names:

        def recorder(*args: Any, _name: str = name) -> None:
            events.append((_name, *args))

        setattr(app.metrics, name, recorder)
    return events


def states(lb: Any) -> dict[str, str]:
    document = httpx.get(f"{lb.url}/_lb/status").json()
    return {b["url"]: b["state"] for b in document["pools"]["web"]["backends"]}


def backend_of(lb: Any, url: str) -> dict[str, Any]:
    document = httpx.get(f"{lb.url}/_lb/status").json()
    return next(b for b in document["pools"]["web"]["backends"] if b["url"] == url)


def served_by(client: httpx.Client, n: int) -> set[str]:
    return {client.get("/").json()["backend"] for _ in range(n)}


# -- active checks ---------------------------------------------------------------------------


def test_failing_checks_take_a_backend_out_and_good_ones_bring_it_back(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    (b1, s1), (b2, s2) = start_backends(2)
    app = LoadBalancer(pool_config([s1.url, s2.url], health_check=FAST))
    events = record(app, "health_check")
    lb = start_balancer(app)
    b1.health_status = 500
    wait_until(lambda: states(lb)[s1.url] == "unhealthy", 5)
    with httpx.Client(base_url=lb.url) as client:
        assert served_by(client, 8) == {"b2"}
        b1.health_status = 200
        wait_until(lambda: states(lb)[s1.url] == "healthy", 5)
        assert served_by(client, 8) == {"b1", "b2"}
    results = {e[3] for e in events if e[2] == f"127.0.0.1:{s1.port}"}
    assert {"success", "failure"} <= results
    assert all(e[1] == "web" for e in events)


def test_a_stopped_backend_is_marked_unhealthy_and_gets_no_traffic(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    (b1, s1), (b2, s2) = start_backends(2)
    lb = start_balancer(pool_config([s1.url, s2.url], health_check=FAST))
    s1.stop()
    wait_until(lambda: states(lb)[s1.url] == "unhealthy", 5)
    before = backend_of(lb, s1.url)["requests_total"]
    with httpx.Client(base_url=lb.url) as client:
        assert served_by(client, 6) == {"b2"}
    assert backend_of(lb, s1.url)["requests_total"] == before


def test_a_hanging_backend_times_out_without_delaying_the_checks_of_the_others(
    start_server, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    from apps import Backend

    hang = RawServer("hang").start()
    try:
        probe = HealthProbe(Backend("b2"))
        good = start_server(probe)
        check = {**FAST, "interval": 0.1, "timeout": 0.1}
        lb = start_balancer(pool_config([hang.url, good.url], health_check=check))
        wait_until(lambda: states(lb)[hang.url] == "unhealthy", 5)
        # While the hanging backend holds its checks for their whole timeout, the other one is
        # still checked about every 100 ms.
        seen = probe.count()
        started = time.monotonic()
        wait_until(lambda: probe.count() >= seen + 5, 3)
        assert time.monotonic() - started < 2.0
        assert states(lb)[good.url] == "healthy"
    finally:
        hang.stop()


class SlowHealth:
    """A backend whose health checks take `delay` seconds; records each check's start and end
    and the most checks it ever had in flight at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.spans: list[tuple[float, float]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def count(self) -> int:
        with self.lock:
            return len(self.spans)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.monotonic()
        try:
            await asyncio.sleep(self.delay)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.spans.append((started, time.monotonic()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_checks_slower_than_the_interval_never_overlap_and_wait_interval_after_each(
    start_server, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    # SPEC 5: `timeout` may exceed `interval`; the next check starts `interval` after the previous
    # one ended. Each check here takes 0.4 s against an interval of 0.25 s.
    interval = 0.25
    slow = SlowHealth(0.4)
    server = start_server(slow)
    check = {"interval": interval, "timeout": 2.0, "jitter": 0}
    lb = start_balancer(pool_config([server.url], health_check=check))
    wait_until(lambda: slow.count() >= 5, 15)
    with slow.lock:
        spans = list(slow.spans)
        most = slow.max_in_flight
    assert most == 1
    # The backend sees a check end a little before lb does, so each gap measured here is at least
    # the interval (a small margin for the clocks' resolution); no upper bound that a loaded box
    # could break, only one that rules out checks left waiting for no reason.
    gaps = [nxt[0] - end for (_, end), nxt in zip(spans, spans[1:], strict=False)]
    assert all(interval - 0.01 <= gap < interval + 3.0 for gap in gaps), gaps
    assert states(lb)[server.url] == "healthy"


def test_check_method_path_host_and_expected_status(start_server, start_balancer) -> None:  # type: ignore[no-untyped-def]
    from apps import Backend

    backend = Backend("b1")
    probe = HealthProbe(backend)
    server = start_server(probe)
    check = {**FAST, "method": "HEAD", "host": "health.example", "expected_status": "200-204,418"}
    lb = start_balancer(pool_config([server.url], health_check=check))
    wait_until(lambda: probe.count() >= 2, 5)
    method, headers = probe.checks[0]
    assert method == "HEAD"
    assert headers[b"host"] == b"health.example"
    assert headers[b"user-agent"] == b"lb-health-check"
    backend.health_status = 418
    wait_until(lambda: probe.count() >= 6, 5)
    assert states(lb)[server.url] == "healthy"
    backend.health_status = 302
    wait_until(lambda: states(lb)[server.url] == "unhealthy", 5)


def test_transitions_are_logged_once_not_on_every_failed_check(
    start_backends, start_balancer, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "lb.health")
    (b1, s1), (b2, s2) = start_backends(2)
    lb = start_balancer(pool_config([s1.url, s2.url], health_check=FAST))
    b1.health_status = 503
    wait_until(lambda: states(lb)[s1.url] == "unhealthy", 5)
    pool = lb.app.generation.pools["web"]
    # Many more failed checks while it stays down...
    events = record(lb.app, "health_check")
    wait_until(lambda: sum(1 for e in events if e[3] == "failure") >= 6, 5)
    b1.health_status = 200
    wait_until(lambda: states(lb)[s1.url] == "healthy", 5)
    lines = [r.getMessage() for r in caplog.records if r.name == "lb.health"]
    backend_id = f"127.0.0.1:{s1.port}"
    down = [m for m in lines if backend_id in m and "is unhealthy" in m]
    up = [m for m in lines if backend_id in m and "is healthy" in m]
    assert len(down) == 1 and "last: status 503" in down[0]
    assert len(up) == 1
    assert not pool.panic


def test_checks_start_when_mounted_without_lifespan_and_stop_on_shutdown(
    start_server, start_backends
) -> None:  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.routing import Mount

    (b1, s1), (b2, s2) = start_backends(2)
    b1.health_status = 500
    app = LoadBalancer(pool_config([s1.url, s2.url], health_check=FAST))
    host = Starlette(routes=[Mount("/lb", app=app)])
    server = start_server(host, lifespan="off")
    assert httpx.get(f"{server.url}/lb/").status_code == 200  # starts the app lazily
    pool = app.generation.pools["web"]
    wait_until(lambda: pool.backends[f"127.0.0.1:{s1.port}"].state == "unhealthy", 5)
    checkers = list(app.services)
    assert checkers and all(c._tasks for c in checkers)  # type: ignore[attr-defined]
    # Nobody runs the mounted app's lifespan: the host is responsible for shutting it down.
    asyncio.run_coroutine_threadsafe(app.shutdown(), server.loop).result(5)
    assert all(not c._tasks for c in checkers)  # type: ignore[attr-defined]


def test_shutdown_cancels_the_checks(start_server, start_balancer) -> None:  # type: ignore[no-untyped-def]
    from apps import Backend

    probe = HealthProbe(Backend("b1"))
    server = start_server(probe)
    lb = start_balancer(pool_config([server.url], health_check=FAST))
    wait_until(lambda: probe.count() >= 3, 5)
    checkers = list(lb.app.services)
    lb.stop()
    assert lb.app.services == []
    assert all(not c._tasks for c in checkers)
    # A check lb wrote just before it stopped can still reach the backend's thread after
    # stop() returned (seen: 1 run in ~20): let such a straggler land, then count.
    time.sleep(0.1)
    after = probe.count()
    time.sleep(0.3)  # proving an absence takes a bounded wait: ~6 intervals
    assert probe.count() == after


# -- passive health --------------------------------------------------------------------------


def test_failing_requests_eject_a_backend_which_comes_back_after_the_ejection_time(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    (b1, s1), (b2, s2) = start_backends(2)
    passive = {"max_failures": 2, "ejection_time": 0.3, "max_ejection_percent": 50}
    app = LoadBalancer(pool_config([s1.url, s2.url], passive_health=passive))
    events = record(app, "ejection")
    lb = start_balancer(app)
    b1.status = 500
    with httpx.Client(base_url=lb.url) as client:
        statuses = [client.get("/").status_code for _ in range(4)]
        assert statuses.count(500) == 2  # round robin: b1 failed twice, then was ejected
        assert states(lb)[s1.url] == "unhealthy"
        assert served_by(client, 6) == {"b2"}
        b1.status = 200
        wait_until(lambda: states(lb)[s1.url] == "healthy", 3)
        assert served_by(client, 6) == {"b1", "b2"}
    assert events == [("ejection", "web", f"127.0.0.1:{s1.port}")]


def test_never_more_than_max_ejection_percent_is_ejected(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(2)
    for backend, _ in backends:
        backend.status = 502
    passive = {"max_failures": 1, "ejection_time": 30, "max_ejection_percent": 50}
    lb = start_balancer(pool_config([s.url for _, s in backends], passive_health=passive))
    with httpx.Client(base_url=lb.url) as client:
        for _ in range(10):
            assert client.get("/").status_code == 502
            assert list(states(lb).values()).count("unhealthy") <= 1
    assert list(states(lb).values()).count("unhealthy") == 1


def test_connections_reset_mid_response_count_as_failures(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((b1, s1),) = start_backends(1)
    reset = RawServer("reset").start()
    try:
        passive = {"max_failures": 2, "ejection_time": 30, "max_ejection_percent": 50}
        lb = start_balancer(pool_config([reset.url, s1.url], passive_health=passive))
        with httpx.Client(base_url=lb.url) as client:
            broken = 0
            for _ in range(6):
                try:
                    client.get("/")
                except httpx.HTTPError:
                    broken += 1
            assert broken == 2 and reset.requests == 2
            assert states(lb)[reset.url] == "unhealthy"
            assert served_by(client, 4) == {"b1"}
    finally:
        reset.stop()


# -- panic mode and readiness ------------------------------------------------------------------


def test_panic_mode_engages_when_no_backend_is_healthy_and_ends_when_one_is(
    start_backends, start_balancer, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "lb.health")
    backends = start_backends(2)
    app = LoadBalancer(pool_config([s.url for _, s in backends], health_check=FAST))
    events = record(app, "panic")
    lb = start_balancer(app)
    assert httpx.get(f"{lb.url}/_lb/readyz").status_code == 200
    for backend, _ in backends:
        backend.health_status = 500
    wait_until(lambda: set(states(lb).values()) == {"unhealthy"}, 5)
    with httpx.Client(base_url=lb.url) as client:
        # Traffic still flows, over all backends, rather than 503 for everybody...
        assert served_by(client, 6) == {"b1", "b2"}
        # ...but the balancer does not claim to be ready.
        ready = client.get("/_lb/readyz")
        assert ready.status_code == 503 and ready.json()["pools_without_backend"] == ["web"]
        backends[1][0].health_status = 200
        wait_until(lambda: states(lb)[backends[1][1].url] == "healthy", 5)
        assert served_by(client, 6) == {"b2"}
        assert client.get("/_lb/readyz").status_code == 200
    assert events == [("panic", "web", True), ("panic", "web", False)]
    lines = [r.getMessage() for r in caplog.records if "panic mode" in r.getMessage()]
    assert len(lines) == 2


def test_with_panic_off_no_healthy_backend_means_503_with_retry_after(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(2)
    check = {**FAST, "interval": 2, "timeout": 0.2, "unhealthy_threshold": 1}
    lb = start_balancer(
        pool_config([s.url for _, s in backends], health_check=check, panic_threshold=False)
    )
    for backend, _ in backends:
        backend.health_status = 500
    wait_until(lambda: set(states(lb).values()) == {"unhealthy"}, 8)
    response = httpx.get(f"{lb.url}/")
    assert response.status_code == 503
    assert response.json()["error"] == "no_backend"
    assert response.headers["retry-after"] == "2"  # the next check may bring one back
    assert sum(b.count() for b, _ in backends) == 0


def test_retry_after_counts_down_to_the_end_of_the_ejection(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((b1, s1),) = start_backends(1)
    b1.status = 500
    passive = {"max_failures": 1, "ejection_time": 5, "max_ejection_percent": 100}
    lb = start_balancer(pool_config([s1.url], passive_health=passive, panic_threshold=False))
    assert httpx.get(f"{lb.url}/").status_code == 500
    response = httpx.get(f"{lb.url}/")
    assert response.status_code == 503
    assert response.headers["retry-after"] in ("4", "5")


def test_slow_start_ramps_a_recovered_backend_up(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    (b1, s1), (b2, s2) = start_backends(2)
    lb = start_balancer(pool_config([s1.url, s2.url], health_check=FAST, slow_start=1.0))
    b1.health_status = 500
    wait_until(lambda: states(lb)[s1.url] == "unhealthy", 5)
    b1.health_status = 200
    wait_until(lambda: states(lb)[s1.url] == "healthy", 5)
    assert backend_of(lb, s1.url)["weight"] < 1
    wait_until(lambda: backend_of(lb, s1.url)["weight"] == 1, 5)

"""Panic mode in the pool, and the pool's health: ejection timers, Retry-After, transitions."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lb.config import BackendConfig, HealthCheckConfig, PassiveHealthConfig, PoolConfig
from lb.metrics import Metrics
from lb.pool import Pool
from lb.strategy import PickRequest


class Recorder(Metrics):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def panic(self, pool: str, active: bool) -> None:
        self.events.append(("panic", pool, active))

    def ejection(self, pool: str, backend: str) -> None:
        self.events.append(("ejection", pool, backend))


def make_pool(n: int = 3, **config: object) -> tuple[Pool, Recorder]:
    backends = tuple(BackendConfig(f"http://127.0.0.1:{9000 + i}", f"b{i}") for i in range(n))
    metrics = Recorder()
    pool = Pool(PoolConfig("web", backends, **config), metrics=metrics)  # type: ignore[arg-type]
    assert metrics.events == [("panic", "web", False)]
    metrics.events.clear()
    return pool, metrics


REQUEST = PickRequest({"headers": []}, "10.0.0.1")


def picks(pool: Pool, n: int = 12) -> set[str]:
    out = set()
    for _ in range(n):
        backend = pool.pick(REQUEST)
        if backend is not None:
            out.add(backend.id)
    return out


def test_no_panic_while_a_backend_is_usable() -> None:
    pool, metrics = make_pool()
    b = list(pool.backends.values())
    b[0].set_healthy(False)
    b[1].set_healthy(False)
    assert not pool.panic
    assert picks(pool) == {"b2"}
    assert metrics.events == []


def test_panic_when_none_is_usable_spreads_over_all_in_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "lb.health")
    pool, metrics = make_pool(4)
    b = list(pool.backends.values())
    b[3].set_admin_state("disabled")
    for backend in b[:3]:
        backend.set_healthy(False)
    assert pool.panic
    assert pool.usable() == ()  # readiness stays honest
    assert picks(pool) == {"b0", "b1", "b2"}  # never the disabled one
    b[1].set_ejected_until(1e12)  # more changes while in panic: logged once only
    b[2].set_weight(2)
    b[0].set_healthy(True)
    assert not pool.panic
    assert picks(pool) == {"b0"}
    assert metrics.events == [("panic", "web", True), ("panic", "web", False)]
    messages = [r.getMessage() for r in caplog.records if "panic" in r.getMessage()]
    assert len(messages) == 2
    assert "entered panic mode" in messages[0] and "left panic mode" in messages[1]
    assert "panic" not in repr(pool)


def test_panic_threshold_is_a_percentage_of_backends_in_service() -> None:
    pool, _ = make_pool(4, panic_threshold=50.0)
    b = list(pool.backends.values())
    b[0].set_healthy(False)
    assert not pool.panic
    b[1].set_healthy(False)  # 2 of 4 usable: 50% is not below 50%
    assert not pool.panic and picks(pool) == {"b2", "b3"}
    b[2].set_healthy(False)  # 25%
    assert pool.panic and picks(pool) == {"b0", "b1", "b2", "b3"}
    assert "panic" in repr(pool)


def test_panic_off_answers_no_backend() -> None:
    pool, metrics = make_pool(2, panic_threshold=None)
    for backend in pool.backends.values():
        backend.set_healthy(False)
    assert not pool.panic and pool.pick(REQUEST) is None and metrics.events == []


def test_no_panic_when_every_backend_is_draining_or_disabled() -> None:
    pool, _ = make_pool(2)
    b = list(pool.backends.values())
    b[0].set_admin_state("draining")
    b[1].set_admin_state("disabled")
    assert not pool.panic and pool.pick(REQUEST) is None


def test_exclude_and_has_untried() -> None:
    pool, _ = make_pool(2)
    b0, b1 = pool.backends.values()
    assert pool.has_untried((b0,)) and not pool.has_untried((b0, b1))
    assert pool.pick(REQUEST, (b0,)) is b1


def test_owns_is_false_once_a_newer_pool_took_the_backend() -> None:
    old, _ = make_pool(1)
    backend = old.backends["b0"]
    assert old.owns(backend)
    new = Pool(old.config, [backend])
    assert old.owns(backend) and not new.owns(backend)  # built is not live
    new.attach()
    assert new.owns(backend) and not old.owns(backend)


async def test_passive_ejection_returns_by_timer_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "lb.health")
    pool, metrics = make_pool(2, passive_health=PassiveHealthConfig(2, 0.05, 50.0))
    b0 = pool.backends["b0"]
    for _ in range(2):
        pool.start(b0)
        pool.done(b0, 0.01, False)
    assert b0.ejected and b0.state == "unhealthy"
    assert [b.id for b in pool.candidates()] == ["b1"]
    assert metrics.events == [("ejection", "web", "b0")]
    for _ in range(100):
        if not b0.ejected:
            break
        await asyncio.sleep(0.01)
    assert b0.usable and b0 in pool.candidates()
    messages = [r.getMessage() for r in caplog.records]
    assert any("ejected for 0.05s" in m for m in messages)
    assert any("back from ejection" in m for m in messages)


async def test_a_stopped_pool_health_ejects_nothing_and_start_adopts_ejections() -> None:
    pool, metrics = make_pool(2, passive_health=PassiveHealthConfig(1, 0.05, 50.0))
    b0 = pool.backends["b0"]
    pool.health.stop()
    pool.done(b0, 0.01, False)
    assert not b0.ejected
    b0.set_ejected_until(1.0)  # ejected by a previous generation, already due
    pool.health.start()
    for _ in range(100):
        if not b0.ejected:
            break
        await asyncio.sleep(0.01)
    assert not b0.ejected


async def test_success_resets_the_failure_count() -> None:
    pool, _ = make_pool(2, passive_health=PassiveHealthConfig(2, 10.0, 50.0))
    b0 = pool.backends["b0"]
    pool.done(b0, 0.01, False)
    pool.done(b0, 0.01, True)
    pool.done(b0, 0.01, False)
    assert not b0.ejected and b0.consecutive_failures == 1
    pool.health.stop()


def test_retry_after_is_the_time_to_the_first_return_or_next_check() -> None:
    pool, _ = make_pool(2)
    assert pool.health.retry_after() == 1
    now = 1000.0
    pool.health._clock = lambda: now
    b0, b1 = pool.backends.values()
    b0.ejected_until = now + 7.2
    b1.ejected_until = now + 30.0
    assert pool.health.retry_after() == 8
    b0.ejected_until = now + 0.1
    assert pool.health.retry_after() == 1
    checked, _ = make_pool(1, health_check=HealthCheckConfig(interval=5.0))
    assert checked.health.retry_after() == 5


async def test_active_transitions_log_once_and_start_the_slow_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "lb.health")
    pool, _ = make_pool(2, slow_start=60.0, health_check=HealthCheckConfig())
    b0 = pool.backends["b0"]
    pool.health.checked(b0, False, "status 500")
    pool.health.checked(b0, False, "status 500")  # no change: no second line
    assert b0.state == "unhealthy"
    pool.health.checked(b0, True, "status 200", 12.0)
    assert b0.state == "healthy" and b0.weight == pytest.approx(0.1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "unhealthy: 3 failed checks in a row, last: status 500" in lines[0]
    assert "healthy: 2 good checks in a row (unhealthy for 12.0s)" in lines[1]
    pool.health.stop()
    assert b0.weight == 1

"""Health shared by the workers of an instance (`lb.health.shared`): the document's merge, and two
"workers" in one process (each its own pool, leader and view of the document, as two processes
would have) of which only the leader checks, the other adopting its verdicts and ejections."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lb.backend import Backend
from lb.config import BackendConfig, HealthCheckConfig, PassiveHealthConfig, PoolConfig
from lb.health import HealthChecker
from lb.health.shared import SharedHealth, merge
from lb.instance import Leader
from lb.pool import Pool


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {condition}"
        await asyncio.sleep(0.01)


def test_fields_merge_one_by_one_so_an_ejection_keeps_the_leaders_verdict() -> None:
    key = ("web", "b0", "http://127.0.0.1:9000")
    entries = merge([], {key: {"healthy": False}}, pid=1)
    entries = merge(entries, {key: {"ejected_until": 12.5}}, pid=2)
    assert entries == [
        {
            "pool": "web",
            "id": "b0",
            "url": key[2],
            "healthy": False,
            "ejected_until": 12.5,
            "pid": 2,
        }
    ]
    other = ("web", "b1", "http://127.0.0.1:9001")
    entries = merge(entries, {other: {"healthy": True}}, pid=1)
    entries = merge(entries, {key: {"healthy": True}}, pid=1)
    assert [e["id"] for e in entries] == ["b1", "b0"]  # the last changed goes last (kept longest)


async def test_a_published_change_reaches_the_subscribers_of_another_reader(
    tmp_path: Path,
) -> None:
    writer, reader = SharedHealth(str(tmp_path)), SharedHealth(str(tmp_path))
    await writer.start()
    await reader.start()
    seen: list[list[dict[str, object]]] = []
    reader.subscribe(seen.append)
    assert not reader.refresh() and seen == []  # nothing written yet
    writer.publish("web", "b0", "http://a", healthy=False)
    writer.publish("web", "b0", "http://a", ejected_until=3.0)  # coalesced with the first
    await writer.stop()  # writes what is pending
    assert reader.refresh()
    assert not reader.refresh()  # unchanged: no second read
    assert len(seen) == 1 and seen[0][0]["healthy"] is False and seen[0][0]["ejected_until"] == 3.0
    assert "1 backends" in repr(reader)


class Worker:
    """One worker's pool, leader, view of the shared document and health checker."""

    def __init__(self, directory: str, config: PoolConfig, status: dict[str, int]) -> None:
        self.checks = 0

        def answer(request: httpx.Request) -> httpx.Response:
            self.checks += 1
            return httpx.Response(
                status[request.url.netloc.decode()], stream=httpx.ByteStream(b"ok")
            )

        self.pool = Pool(config)
        self.leader = Leader(directory, retry=0.02)
        self.shared = SharedHealth(directory)
        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        self.checker = HealthChecker(self.pool, client, leader=self.leader, shared=self.shared)

    async def start(self) -> Worker:
        await self.leader.start()
        await self.shared.start()
        await self.checker.start()
        return self

    async def stop(self) -> None:
        await self.checker.stop()
        await self.shared.stop()
        await self.leader.stop()

    def state(self, backend: str) -> str:
        return self.pool.backends[backend].state


def pool_config(**config: object) -> PoolConfig:
    backends = (
        BackendConfig("http://127.0.0.1:9000", "b0"),
        BackendConfig("http://127.0.0.1:9001", "b1"),
    )
    return PoolConfig("web", backends, **config)  # type: ignore[arg-type]


async def test_only_the_leader_checks_and_the_other_worker_adopts_its_verdicts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lb.health")
    check = HealthCheckConfig(
        interval=0.02, timeout=1.0, healthy_threshold=1, unhealthy_threshold=1, jitter=0.0
    )
    status = {"127.0.0.1:9000": 200, "127.0.0.1:9001": 200}
    first = await Worker(str(tmp_path), pool_config(health_check=check), status).start()
    second = await Worker(str(tmp_path), pool_config(health_check=check), status).start()
    await until(lambda: first.checks >= 10)
    assert second.checks == 0  # one checker per instance

    status["127.0.0.1:9000"] = 503
    await until(lambda: first.state("b0") == "unhealthy")
    await until(lambda: second.shared.refresh() and second.state("b0") == "unhealthy")
    assert second.state("b1") == "healthy"
    lines = [r.getMessage() for r in caplog.records if "is unhealthy" in r.getMessage()]
    assert lines == [
        "backend b0 in pool web is unhealthy: 1 failed checks in a row, last: status 503"
    ]

    # The leader goes: the other takes over from the shared state, without a flap.
    await first.stop()
    await until(lambda: second.checks >= 5)
    assert second.state("b0") == "unhealthy" and second.state("b1") == "healthy"
    assert sum("is healthy" in r.getMessage() for r in caplog.records) == 0
    status["127.0.0.1:9000"] = 200
    await until(lambda: second.state("b0") == "healthy")
    await second.stop()


async def test_an_ejection_in_one_worker_ejects_the_backend_in_the_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lb.health")
    passive = PassiveHealthConfig(max_failures=1, ejection_time=0.3, max_ejection_percent=50.0)
    status: dict[str, int] = {}
    first = await Worker(str(tmp_path), pool_config(passive_health=passive), status).start()
    second = await Worker(str(tmp_path), pool_config(passive_health=passive), status).start()
    b0 = first.pool.backends["b0"]
    first.pool.start(b0)
    first.pool.done(b0, 0.01, False)
    assert first.state("b0") == "unhealthy"
    await until(lambda: second.shared.refresh() and second.state("b0") == "unhealthy")
    assert [b.id for b in second.pool.candidates()] == ["b1"]
    # Both come back when the ejection ends; only the worker that ejected says so.
    await until(lambda: second.state("b0") == "healthy" and first.state("b0") == "healthy")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("ejected for" in m for m in messages) == 1
    assert sum("back from ejection" in m for m in messages) == 1
    await first.stop()
    await second.stop()


async def test_adopting_keeps_the_ejection_cap_and_ignores_verdicts_of_unchecked_pools() -> None:
    passive = PassiveHealthConfig(max_failures=1, ejection_time=10.0, max_ejection_percent=50.0)
    pool = Pool(pool_config(passive_health=passive))
    pool.health.start()
    b0, b1 = pool.backends["b0"], pool.backends["b1"]
    until = time.monotonic() + 10.0
    pool.health.adopt(b0, False, until)  # no active checks here: the verdict means nothing
    assert b0.healthy and b0.ejected
    pool.health.adopt(b1, None, until)  # another worker ejected b1 meanwhile: 50% of 2 is 1
    assert not b1.ejected and b1.usable
    pool.health.adopt(b0, None, until - 5.0)  # an older, shorter ejection changes nothing
    assert b0.ejected_until == until
    pool.health.stop()


async def test_a_backend_added_at_run_time_is_checked_by_the_leader_only(tmp_path: Path) -> None:
    check = HealthCheckConfig(
        interval=0.02, timeout=1.0, healthy_threshold=1, unhealthy_threshold=1, jitter=0.0
    )
    status = {"127.0.0.1:9000": 200, "127.0.0.1:9001": 200, "127.0.0.1:9002": 200}
    first = await Worker(str(tmp_path), pool_config(health_check=check), status).start()
    second = await Worker(str(tmp_path), pool_config(health_check=check), status).start()
    for worker in (first, second):  # the admin API or discovery adds it in every worker
        added = Backend(BackendConfig("http://127.0.0.1:9002", "b2"))
        added.healthy = False  # a backend added to a checked pool waits for its checks
        worker.pool.add(added)
    await until(lambda: first.state("b2") == "healthy")
    await until(lambda: second.shared.refresh() and second.state("b2") == "healthy")
    assert second.checks == 0
    await first.stop()
    await second.stop()

"""The redis store against a real redis-server: exact across processes, on_store_error, recovery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from conftest import pool_config
from lb.app import LoadBalancer
from lb.ratelimit import Limit, MemoryStore, RedisConnection, RedisStore, StoreUnavailable
from lb.ratelimit.redis import RETRY_INTERVAL, redact
from lb.redis_client import RedisClient
from servers import free_port, wait_until

pytestmark = pytest.mark.redis

SRC = str(Path(__file__).resolve().parents[2] / "src")


def redis_limited(urls: list[str], redis_url: str, **limit: Any) -> dict[str, Any]:
    config = pool_config(urls)
    config["rate_limit"] = {
        "rate": 0.01,  # no refill within a test
        "burst": 3,
        "store": "redis",
        "redis_url": redis_url,
        **limit,
    }
    return config


# -- the store on its own --------------------------------------------------------------------


async def test_concurrent_decisions_are_exact(redis_server) -> None:  # type: ignore[no-untyped-def]
    connection = RedisConnection(RedisClient(redis_server.url))
    await connection.redis.start()
    try:
        store = RedisStore(connection, Limit(0.001, 100), "test:")
        results = await asyncio.gather(*(store.decide("k") for _ in range(500)))
    finally:
        await connection.redis.stop()
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 100
    # Every allowed decision saw a different count: nothing interleaved inside a decision.
    assert sorted(r.remaining for r in allowed) == list(range(100))
    assert all(r.retry_after >= 999 for r in results if not r.allowed)


async def test_it_answers_as_the_memory_store_does(redis_server) -> None:  # type: ignore[no-untyped-def]
    limit = Limit(1, 5)
    connection = RedisConnection(RedisClient(redis_server.url))
    try:
        remote = RedisStore(connection, limit, "test:")
        local = MemoryStore(limit, 10, clock=lambda: 0.0)
        for _ in range(7):
            assert await remote.decide("k") == await local.decide("k")
    finally:
        await connection.redis.stop()


async def test_keys_expire_when_their_bucket_is_full_again(redis_server) -> None:  # type: ignore[no-untyped-def]
    connection = RedisConnection(RedisClient(redis_server.url))
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        store = RedisStore(connection, Limit(2, 10), "test:")
        await store.decide("k")
        await store.decide("k")
        ttl = await client.pttl("test:k")
        assert 0 < ttl <= 1001  # two requests at 2/s: full again within a second
    finally:
        await client.aclose()
        await connection.redis.stop()


async def test_a_flushed_script_is_sent_again(redis_server) -> None:  # type: ignore[no-untyped-def]
    connection = RedisConnection(RedisClient(redis_server.url))
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        store = RedisStore(connection, Limit(0.01, 3), "test:")
        assert (await store.decide("k")).remaining == 2
        await client.script_flush()
        assert (await store.decide("k")).remaining == 1  # EVALSHA: NOSCRIPT, then EVAL
        assert (await store.decide("k")).remaining == 0  # and EVALSHA works again
        assert not connection.redis.failing
    finally:
        await client.aclose()
        await connection.redis.stop()


async def test_an_error_reply_is_an_outage_too(redis_server, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="lb.redis")
    now = [0.0]
    connection = RedisConnection(RedisClient(redis_server.url, clock=lambda: now[0]))
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        store = RedisStore(connection, Limit(0.01, 3), "test:")
        assert (await store.decide("k")).allowed
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # read-only now
        with pytest.raises(StoreUnavailable, match="read only replica"):
            await store.decide("k")
        assert connection.redis.failing
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        now[0] += RETRY_INTERVAL
        assert (await store.decide("k")).remaining == 1
        assert not connection.redis.failing
    finally:
        await admin.aclose()
        await connection.redis.stop()
    logs = [r.getMessage() for r in caplog.records if r.name == "lb.redis"]
    assert len(logs) == 2 and "ReadOnlyError" in logs[0]


async def test_the_connection_is_shared_by_reference_count(redis_server) -> None:  # type: ignore[no-untyped-def]
    connection = RedisConnection(RedisClient(redis_server.url))
    store = RedisStore(connection, Limit(0.01, 10), "test:")
    await connection.redis.start()
    await connection.redis.start()  # a second generation during a reload
    await connection.redis.stop()
    assert (await store.decide("k")).allowed
    await connection.redis.stop()
    assert connection.redis._client is None
    assert (await store.decide("k")).remaining == 8  # connects again when used
    await connection.redis.stop()


async def test_after_a_failure_one_probe_at_a_time_tries_redis(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="lb.redis")
    now = [0.0]
    connection = RedisConnection(
        RedisClient(f"redis://127.0.0.1:{free_port()}/0", clock=lambda: now[0])
    )
    store = RedisStore(connection, Limit(1, 1), "test:")
    tried: list[int] = []
    real_run = connection._run

    async def counting_run(batch: Any) -> Any:
        tried.append(len(batch))
        return await real_run(batch)

    connection._run = counting_run  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreUnavailable):  # refused
            await store.decide("k")
        assert connection.redis.failing and tried == [1]
        for _ in range(3):  # inside the interval: answered without trying
            with pytest.raises(StoreUnavailable):
                await store.decide("k")
        assert tried == [1]
        now[0] += RETRY_INTERVAL
        results = await asyncio.gather(
            *(store.decide("k") for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert tried == [1, 1]  # one probe; the other four answered at once
    finally:
        await connection.redis.stop()
    assert len([r for r in caplog.records if r.name == "lb.redis"]) == 1


def test_timeouts_and_pool_size_in_the_url_win_over_the_defaults() -> None:
    defaults = RedisClient("redis://127.0.0.1:1/0").client().connection_pool
    assert defaults.connection_kwargs["socket_timeout"] == 0.25
    assert defaults.max_connections == 32
    url = "redis://127.0.0.1:1/0?socket_timeout=2&max_connections=7"
    tuned = RedisClient(url).client().connection_pool
    assert tuned.connection_kwargs["socket_timeout"] == 2.0
    assert tuned.connection_kwargs["socket_connect_timeout"] == 0.25
    assert tuned.max_connections == 7


def test_logs_never_show_the_password() -> None:
    assert redact("redis://:secret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("redis://user:secret@h/0") == "redis://user:***@h/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


# -- many balancers on one redis ---------------------------------------------------------------


@pytest.fixture
def start_lb_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], str]]:
    """`start_lb_process(config)` -> URL of an `lb serve` process; all are stopped at teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: dict[str, Any]) -> str:
        path = tmp_path / f"lb-{len(processes)}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lb",
                "serve",
                "-c",
                str(path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert process.poll() is None, "lb serve exited"
            try:
                return httpx.get(url + "/_lb/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=20)
        return url

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_two_balancer_processes_share_one_allowance_exactly(
    redis_server, start_backends, start_lb_process
) -> None:  # type: ignore[no-untyped-def]
    [(app, server)] = start_backends(1)
    config = redis_limited([server.url], redis_server.url, burst=20)
    urls = [start_lb_process(config), start_lb_process(config)]
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(15):
                status = client.get("/shared").status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=worker, args=(urls[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(statuses) == 60
    assert statuses.count(200) == 20 and statuses.count(429) == 40
    assert app.count("/shared") == 20
    # And the remaining count is one count: each balancer sees what the other spent.
    with httpx.Client() as client:
        headers = [client.get(url + "/shared").headers for url in urls]
    assert [h["ratelimit-remaining"] for h in headers] == ["0", "0"]


# -- redis away --------------------------------------------------------------------------------


def balancer_with_recorded_errors(config: dict[str, Any]) -> tuple[LoadBalancer, list[str]]:
    app = LoadBalancer(config)
    errors: list[str] = []
    app.metrics.store_error = errors.append  # type: ignore[method-assign]
    return app, errors


def outage_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lb.redis"]


def test_redis_away_with_allow_lets_requests_through_and_recovers(
    redis_server, start_backends, start_balancer, caplog
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="lb.redis")
    [(backend, server)] = start_backends(1)
    app, errors = balancer_with_recorded_errors(
        redis_limited([server.url], redis_server.url, on_store_error="allow", burst=2)
    )
    lb = start_balancer(app)
    with httpx.Client(base_url=lb.url) as client:
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
        redis_server.stop()
        during = [client.get("/") for _ in range(6)]
        assert [r.status_code for r in during] == [200] * 6
        assert all("ratelimit-limit" not in r.headers for r in during)
        assert errors == ["ratelimit"] * 6
        redis_server.start()
        wait_until(lambda: "ratelimit-limit" in client.get("/").headers, timeout=15)
        # Limiting again (the restarted redis kept nothing, so the client starts afresh).
        wait_until(lambda: client.get("/").status_code == 429, timeout=5, interval=0)
    logs = outage_logs(caplog)
    assert len(logs) == 2, logs  # one when the outage starts, one when it ends
    assert "unavailable" in logs[0] and "available again" in logs[1]


def test_redis_away_with_deny_answers_503_and_recovers(
    redis_server, start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    [(backend, server)] = start_backends(1)
    app, errors = balancer_with_recorded_errors(
        redis_limited([server.url], redis_server.url, on_store_error="deny")
    )
    lb = start_balancer(app)
    with httpx.Client(base_url=lb.url) as client:
        assert client.get("/d").status_code == 200
        redis_server.stop()
        during = [client.get("/d") for _ in range(4)]
        redis_server.start()
        wait_until(lambda: client.get("/d").status_code == 200, timeout=15)
    assert [r.status_code for r in during] == [503] * 4
    assert all(r.headers["retry-after"] == "1" for r in during)
    assert all(r.json()["error"] == "unavailable" for r in during)
    assert backend.count("/d") == 2  # the denied requests never reached it
    assert errors.count("ratelimit") >= 4


def test_a_hung_redis_times_out_quickly_and_recovers(
    redis_server, start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    [(backend, server)] = start_backends(1)
    app, errors = balancer_with_recorded_errors(
        redis_limited([server.url], redis_server.url, on_store_error="deny", burst=100)
    )
    lb = start_balancer(app)
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        assert client.get("/").status_code == 200
        redis_server.process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
        try:
            began = time.monotonic()
            statuses = [client.get("/").status_code for _ in range(5)]
            elapsed = time.monotonic() - began
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        wait_until(lambda: client.get("/").status_code == 200, timeout=15)
    assert statuses == [503] * 5
    # One short timeout, then answered at once until the next try: not five waits.
    assert elapsed < 2.5

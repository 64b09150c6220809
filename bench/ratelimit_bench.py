"""Rate-limit decisions per second: the memory store, the ASGI layer, and the redis store.

    python bench/ratelimit_bench.py [--decisions N] [--redis-url URL] [--concurrency 1,16,256]

Without --redis-url it starts a private redis-server on a free loopback port (and stops it).
Every run is bounded: a fixed number of decisions, each phase capped at --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lb.config import RateLimitConfig  # noqa: E402
from lb.metrics import Metrics  # noqa: E402
from lb.proxy.context import SCOPE_KEY, RequestContext  # noqa: E402
from lb.ratelimit import Limit, MemoryStore, RateLimit, RedisConnection, RedisStore  # noqa: E402

HIGH = Limit(1_000_000, 1_000_000)  # never rejects: measures the decision, not the 429 path


def report(name: str, count: int, seconds: float) -> None:
    print(
        f"{name:<48} {count / seconds:>12,.0f} decisions/s  ({seconds * 1e6 / count:.2f} us each)"
    )


def bench_memory(decisions: int, keys: int, max_keys: int) -> None:
    store = MemoryStore(HIGH, max_keys)
    names = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(keys)]
    began = time.perf_counter()
    for i in range(decisions):
        store.decide_now(names[i % keys])
    report(f"memory, {keys:,} keys (max_keys {max_keys:,})", decisions, time.perf_counter() - began)
    assert len(store) <= max_keys


async def bench_layer(decisions: int, limited: bool) -> None:
    """Per-request cost of the ASGI layer around an app that answers at once."""

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = RateLimitConfig(rate=1_000_000, burst=1_000_000)
    app: Any = RateLimit(inner, MemoryStore(HIGH, 100_000), config, Metrics()) if limited else inner

    async def send(message: Any) -> None:
        pass

    async def receive() -> Any:
        return {"type": "http.request"}

    scopes = []
    for i in range(1000):
        ctx = RequestContext(b"id", f"10.0.{i >> 8}.{i & 255}", False, "GET", b"/", None, 0.0)
        scopes.append({"type": "http", "headers": [], SCOPE_KEY: ctx})
    began = time.perf_counter()
    for i in range(decisions):
        await app(scopes[i % 1000], receive, send)
    name = "ASGI layer + memory store" if limited else "ASGI app alone (baseline)"
    report(name, decisions, time.perf_counter() - began)


async def bench_redis(url: str, decisions: int, concurrency: int, max_seconds: float) -> None:
    connection = RedisConnection(url)
    await connection.start()
    store = RedisStore(connection, HIGH, "bench:")
    done = 0
    deadline = time.perf_counter() + max_seconds

    async def worker(n: int) -> None:
        nonlocal done
        for i in range(n):
            if time.perf_counter() > deadline:
                return
            await store.decide(f"k{i % 1000}")
            done += 1

    per_task = max(1, decisions // concurrency)
    began = time.perf_counter()
    await asyncio.gather(*(worker(per_task) for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    await connection.stop()
    report(f"redis, {concurrency} concurrent (auto-pipelined)", done, seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found; pass --redis-url")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return f"redis://127.0.0.1:{port}/0", process
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise SystemExit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--redis-decisions", type=int, default=50_000)
    parser.add_argument("--redis-url")
    parser.add_argument("--concurrency", default="1,16,256")
    parser.add_argument("--max-seconds", type=float, default=20.0)
    args = parser.parse_args()

    bench_memory(args.decisions, 1_000, 100_000)
    bench_memory(args.decisions, args.decisions, 10_000)  # every key new: eviction on each
    asyncio.run(bench_layer(args.decisions, limited=False))
    asyncio.run(bench_layer(args.decisions, limited=True))

    process = None
    url = args.redis_url
    if url is None:
        url, process = start_redis()
    try:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            decisions = args.redis_decisions // 10 if concurrency == 1 else args.redis_decisions
            asyncio.run(bench_redis(url, decisions, concurrency, args.max_seconds))
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()

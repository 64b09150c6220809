"""Micro-benchmark of `pick()`: ns per pick for every built-in strategy, 3 and 100 backends.

    python bench/strategy_bench.py [--picks N] [--repeat R] [--app]

Each case picks for a rotating set of requests from distinct client IPs (so hashing strategies
hash a fresh key each time, as they do per request), against backends with mixed weights and some
requests in flight, and reports the best of R runs of N picks. The last rows add the pool around
the strategy: the usable-tuple cache, and a sticky cookie lookup. Bounded: about 10 s in all.

`--app` also times one whole request through the balancer's ASGI app in this process, with an
httpx.MockTransport standing in for the backend: no sockets and no HTTP parsing, so a lower bound
of the per-request cost, the denominator for "a pick costs under 5% of a request".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lb.backend import Backend  # noqa: E402
from lb.config import BackendConfig, PoolConfig, StickyConfig  # noqa: E402
from lb.pool import Pool  # noqa: E402
from lb.strategy import BUILTINS, PickRequest, create_strategy  # noqa: E402

SEEDED = {"random", "power_of_two_choices", "least_latency"}
SIZES = (3, 100)


def make_backends(count: int, weights: bool) -> tuple[Backend, ...]:
    out = []
    for i in range(count):
        weight = 1 + i % 3 if weights else 1
        backend = Backend(BackendConfig(f"http://10.0.{i // 256}.{i % 256}:80", f"b{i}", weight))
        backend.active_requests = i % 4
        out.append(backend)
    return tuple(out)


def make_requests(count: int, cookie: bytes | None = None) -> list[PickRequest]:
    headers = [(b"host", b"example.com"), (b"user-agent", b"bench")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    scope = {"type": "http", "headers": headers, "path": "/", "raw_path": b"/", "query_string": b""}
    return [PickRequest(scope, f"192.168.{i // 256}.{i % 256}") for i in range(count)]


def timed(pick: Callable[[PickRequest], object], requests: list[PickRequest], picks: int) -> float:
    """Nanoseconds per pick over `picks` picks; the request objects are rebuilt per round so
    each pick parses its key and cookies afresh, as a real request does."""
    count = len(requests)
    rounds = max(1, picks // count)
    elapsed = 0
    for _ in range(rounds):
        fresh = [PickRequest(r.scope, r.client_ip, r.hash_key) for r in requests]
        start = time.perf_counter_ns()
        for request in fresh:
            pick(request)
        elapsed += time.perf_counter_ns() - start
    return elapsed / (rounds * count)


def bench_strategy(name: str, size: int, weights: bool, picks: int, repeat: int) -> float:
    options: dict[str, object] = {"seed": 1} if name in SEEDED else {}
    strategy = create_strategy(name, options)
    backends = make_backends(size, weights)
    on_done = getattr(strategy, "on_done", None)
    if on_done is not None:  # give least_latency a latency history
        for i, backend in enumerate(backends):
            on_done(backend, 0.001 * (1 + i % 7), True)
    requests = make_requests(1000)

    def pick(request: PickRequest) -> object:
        return strategy.pick(backends, request)

    return min(timed(pick, requests, picks) for _ in range(repeat))


def bench_pool(size: int, sticky: bool, picks: int, repeat: int) -> float:
    config = PoolConfig(
        name="web",
        backends=tuple(
            BackendConfig(f"http://10.0.{i // 256}.{i % 256}:80", f"b{i}") for i in range(size)
        ),
        sticky=StickyConfig() if sticky else None,
    )
    pool = Pool(config)
    cookie = None
    if pool.sticky is not None:
        cookie = b"session=abc; lb_sticky=" + pool.sticky.value("b1").encode()
    requests = make_requests(1000, cookie)

    def pick(request: PickRequest) -> object:
        backend = pool.pick(request)
        assert backend is not None
        return pool.sticky_cookie(request, backend)

    return min(timed(pick, requests, picks) for _ in range(repeat))


def bench_app(strategy: str, requests: int, repeat: int) -> float:
    """Nanoseconds per GET through `LoadBalancer` (routing, headers, proxy, pool, strategy)."""
    import httpx

    from lb.app import LoadBalancer

    body = b"hello from a backend\n"

    def backend(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(len(body))}, content=body)

    urls = [f"http://127.0.0.1:{9001 + i}" for i in range(3)]
    config = {"pools": {"web": {"strategy": strategy, "backends": urls}}}
    app = LoadBalancer({**config, "logging": {"access_log": False}})
    for proxy in app.generation.proxies.values():
        proxy.transport = httpx.MockTransport(backend)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"example.com"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }

    async def run() -> float:
        async def send(message: object) -> None:
            pass

        async def one() -> None:
            sent = False

            async def receive() -> dict[str, object]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                await asyncio.Event().wait()  # like a server: nothing more until disconnect
                raise AssertionError("unreachable")

            await app(dict(scope), receive, send)

        await app.startup()
        for _ in range(1000):
            await one()
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter_ns()
            for _ in range(requests):
                await one()
            best = min(best, (time.perf_counter_ns() - start) / requests)
        await app.shutdown()
        return best

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--picks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--app", action="store_true", help="also time a request through the app")
    args = parser.parse_args()
    header = f"{'strategy':<34}" + "".join(f"{f'{n} backends':>14}" for n in SIZES)
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, Callable[[int], float]]] = []
    for name in BUILTINS:
        for weights in (False, True):
            label = name + (" (weights 1-3)" if weights else "")
            rows.append(
                (
                    label,
                    lambda n, s=name, w=weights: bench_strategy(s, n, w, args.picks, args.repeat),
                )
            )
    rows.append(("pool.pick, round_robin", lambda n: bench_pool(n, False, args.picks, args.repeat)))
    rows.append(
        ("pool.pick, sticky cookie hit", lambda n: bench_pool(n, True, args.picks, args.repeat))
    )
    for label, run in rows:
        print(f"{label:<34}" + "".join(f"{run(n):>11.0f} ns" for n in SIZES), flush=True)
    if args.app:
        print()
        for name in ("round_robin", "least_latency", "consistent_hash"):
            cost = bench_app(name, 5000, args.repeat)
            print(f"request through the app, {name}: {cost / 1000:.1f} µs (5%: {cost / 20:.0f} ns)")


if __name__ == "__main__":
    main()

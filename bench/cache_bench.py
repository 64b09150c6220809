"""Cache-hit throughput next to the proxied miss (SPEC section 7; issue 6's benchmark).

    python bench/cache_bench.py [--seconds 2] [--concurrency 8] [--http]

Default mode drives the balancer's ASGI app in-process with a bounded concurrent load (no HTTP
parsing on lb's side, so the figures show what lb itself spends per request); the backend is a
real uvicorn server in a subprocess, redis a real redis-server on a free port. Scenarios:

    proxy       a route with `cache: false`: the plain proxy
    miss        the cache layer in front of an uncacheable response (upstream every time)
    hit-memory  a stored response, memory store
    hit-redis   a stored response, redis store (skipped without redis-server)

`--http` adds the same through a real lb server (uvicorn + httptools in a subprocess) loaded by
wrk, when wrk is installed. Exits 1 unless a memory hit is at least 3x faster than a proxied miss.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run from a checkout without installing: the package is in ../src (this file's subprocesses run it
# too, so they find it the same way).
_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

BODY = b"x" * 1024
REQUIRED_SPEEDUP = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


# -- processes ----------------------------------------------------------------------------------


async def backend_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers every path with 1 KiB; `.../hit` is cacheable for an hour, the rest is not."""
    if scope["type"] != "http":
        return
    cacheable = scope["path"].endswith("/hit")
    cc = b"max-age=3600" if cacheable else b"no-store"
    headers = [(b"content-length", b"1024"), (b"cache-control", cc)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def serve_backend(port: int) -> None:
    import uvicorn

    uvicorn.run(
        backend_app, host="127.0.0.1", port=port, log_level="error", access_log=False,
        http="httptools", loop="uvloop" if _has("uvloop") else "asyncio", lifespan="off",
    )  # fmt: skip


def serve_lb(config_path: str, port: int) -> None:
    import uvicorn

    from lb import create_app
    from lb.server import uvicorn_options

    options = uvicorn_options(host="127.0.0.1", port=port)
    options["log_level"] = "error"
    uvicorn.run(create_app(config_path), **options)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.DEVNULL)


def lb_config(backend: str, store: str, redis_url: str | None = None) -> dict[str, Any]:
    cache: dict[str, Any] = {"store": store}
    if redis_url:
        cache["redis_url"] = redis_url
    return {
        "pools": {"web": {"backends": [backend]}},
        "routes": [{"path_prefix": "/proxy", "pool": "web", "cache": False}, {"pool": "web"}],
        "cache": cache,
        "logging": {"access_log": False},
    }


# -- in-process load ------------------------------------------------------------------------------


async def request(app: Any, path: str) -> tuple[int, bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"bench.local"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
    }  # fmt: skip
    received = False
    status = 0
    x_cache = b""

    async def receive() -> Any:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.get_running_loop().create_future()  # no disconnect; cancelled at the end

    async def send(message: Any) -> None:
        nonlocal status, x_cache
        if message["type"] == "http.response.start":
            status = message["status"]
            x_cache = dict(message["headers"]).get(b"x-cache", b"")

    await app(scope, receive, send)
    return status, x_cache


async def load(app: Any, path: str, seconds: float, concurrency: int, expect: bytes) -> float:
    """Requests per second over `seconds` with `concurrency` clients in a closed loop."""
    status, x_cache = await request(app, path)  # warm: connections, and the entry for hits
    status, x_cache = await request(app, path)
    if status != 200 or x_cache != expect:
        raise RuntimeError(f"{path}: expected 200 {expect!r}, got {status} {x_cache!r}")
    deadline = time.perf_counter() + seconds

    async def client() -> int:
        done = 0
        while time.perf_counter() < deadline:
            await request(app, path)
            done += 1
        return done

    start = time.perf_counter()
    counts = await asyncio.gather(*(client() for _ in range(concurrency)))
    return sum(counts) / (time.perf_counter() - start)


async def in_process(
    backend: str, redis_url: str | None, seconds: float, concurrency: int
) -> dict[str, float]:
    from lb import create_app

    results: dict[str, float] = {}
    memory = create_app(lb_config(backend, "memory"))
    await memory.startup()
    try:
        results["proxy"] = await load(memory, "/proxy/x", seconds, concurrency, b"")
        results["miss"] = await load(memory, "/miss", seconds, concurrency, b"MISS")
        results["hit-memory"] = await load(memory, "/hit", seconds, concurrency, b"HIT")
    finally:
        await memory.shutdown()
    if redis_url:
        shared = create_app(lb_config(backend, "redis", redis_url))
        await shared.startup()
        try:
            results["hit-redis"] = await load(shared, "/hit", seconds, concurrency, b"HIT")
        finally:
            await shared.shutdown()
    return results


# -- through a real server, with wrk --------------------------------------------------------------


def with_wrk(
    backend: str, redis_url: str | None, seconds: float, concurrency: int
) -> dict[str, float]:
    import yaml

    scenarios = [("proxy", "memory", "/proxy/x"), ("miss", "memory", "/miss")]
    scenarios.append(("hit-memory", "memory", "/hit"))
    if redis_url:
        scenarios.append(("hit-redis", "redis", "/hit"))
    results: dict[str, float] = {}
    for name, store, target in scenarios:
        # A fresh server per scenario: wrk drops its connections mid-request when it stops.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(lb_config(backend, store, redis_url)))
            port = free_port()
            server = spawn("--serve-lb", str(path), str(port))
            try:
                wait_for_port(port)
                results[f"http {name}"] = wrk(
                    f"http://127.0.0.1:{port}{target}", seconds, concurrency
                )
            finally:
                server.terminate()
                server.wait(10)
    return results


def wrk(url: str, seconds: float, concurrency: int) -> float:
    subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=False)  # store the entry
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, int(seconds))}s", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output: {out}")
    return float(match.group(1))


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per scenario (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients (default 8)")
    parser.add_argument("--http", action="store_true", help="also through a real server (wrk)")
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-lb", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        serve_backend(args.backend)
        return 0
    if args.serve_lb:
        serve_lb(args.serve_lb[0], int(args.serve_lb[1]))
        return 0

    port = free_port()
    processes = [spawn("--backend", str(port))]
    redis_url = None
    redis_binary = shutil.which("redis-server")
    if redis_binary:
        redis_port = free_port()
        processes.append(
            subprocess.Popen(
                [
                    redis_binary,
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        )
        wait_for_port(redis_port)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        wait_for_port(port)
        backend = f"http://127.0.0.1:{port}"
        results = asyncio.run(in_process(backend, redis_url, args.seconds, args.concurrency))
        if args.http and shutil.which("wrk"):
            results.update(with_wrk(backend, redis_url, args.seconds, args.concurrency))
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)

    print(f"{'scenario':<18} {'req/s':>10} {'µs/req':>9} {'vs miss':>8}")
    for name, rate in results.items():
        miss = results["http miss" if name.startswith("http ") else "miss"]
        if rate and miss:
            print(f"{name:<18} {rate:>10.0f} {1e6 / rate:>9.1f} {rate / miss:>7.1f}x")
        else:
            print(f"{name:<18} {'failed':>10}")
    speedup = results["hit-memory"] / results["miss"]
    verdict = "ok" if speedup >= REQUIRED_SPEEDUP else "TOO SLOW"
    print(f"memory hit vs proxied miss: {speedup:.1f}x (required {REQUIRED_SPEEDUP:g}x) {verdict}")
    return 0 if speedup >= REQUIRED_SPEEDUP else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""Requests/s and client CPU per request through httpx's default transport and lb's Transport.

    python bench/transport_bench.py [--requests 20000] [--seconds 10] [--concurrency 50]
                                    [--loop uvloop|asyncio] [--backend raw|uvicorn]

The backend runs in a child process on 127.0.0.1 (a raw asyncio+httptools server answering a
fixed ~100-byte body, or uvicorn with a bare ASGI app), so `time.process_time()` in this process
counts the client side only: the client stack plus the event loop, i.e. an upper bound for the
transport's own cost; row (d) reuses one Request to leave out httpx.Request construction, and row
(e) uses `Transport.send_raw`, the proxy's path, with no httpx objects at all. Each
measurement stops after --requests or --seconds, whichever is first, after a short warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httptools
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from lb.transport import Timeouts, Transport, origin_of  # noqa: E402

BODY = b"x" * 100
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: bench\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


# -- the backend (child process) ----------------------------------------------------------------


class _RawServer(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(RESPONSE)


async def _asgi_app(scope: dict[str, object], receive: object, send: object) -> None:
    assert callable(send)
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def serve(port: int, kind: str) -> None:
    if kind == "uvicorn":
        import uvicorn

        uvicorn.run(_asgi_app, host="127.0.0.1", port=port, log_level="error", access_log=False)
        return
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_RawServer, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


# -- the client (this process) ------------------------------------------------------------------


async def measure(
    send: Callable[[], Awaitable[None]], concurrency: int, requests: int, seconds: float
) -> tuple[int, float, float, float]:
    """(requests, wall seconds, user and system CPU seconds) for `requests` or `seconds`."""
    for _ in range(min(200, requests)):  # warm-up: connections, caches
        await send()
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while done < requests and time.monotonic() < deadline:
            done += 1
            await send()

    cpu, wall = os.times(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, end = time.perf_counter() - wall, os.times()
    return done, wall, end.user - cpu.user, end.system - cpu.system


Row = tuple[str, int, int, float, float, float]


async def run(args: argparse.Namespace, address: str) -> list[Row]:
    rows = []
    url = httpx.URL(address)  # parsed once, as a proxy would keep one per backend
    default = httpx.AsyncClient(trust_env=False)
    ours = Transport()
    client = httpx.AsyncClient(transport=ours, trust_env=False)
    direct = Transport()

    async def via_default() -> None:
        response = await default.get(url)
        assert response.status_code == 200 and len(response.content) == len(BODY)

    async def via_client() -> None:
        response = await client.send(client.build_request("GET", url), stream=True)
        body = b"".join([chunk async for chunk in response.aiter_raw()])
        await response.aclose()
        assert response.status_code == 200 and len(body) == len(BODY)

    async def via_transport() -> None:
        request = httpx.Request("GET", url, extensions={"timeout": TIMEOUTS})
        response = await direct.handle_async_request(request)
        body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        await response.aclose()
        assert response.status_code == 200 and len(body) == len(BODY)

    # The transport reads a Request without changing it, so one can be sent many times:
    # what remains is the transport, httpx.Response and the event loop.
    reused = httpx.Request("GET", url, extensions={"timeout": TIMEOUTS})

    async def via_transport_reused() -> None:
        response = await direct.handle_async_request(reused)
        body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        await response.aclose()
        assert response.status_code == 200 and len(body) == len(BODY)

    # What the proxy does: no httpx objects at all.
    origin = origin_of(url)
    headers = [(b"host", url.netloc)]
    timeouts = Timeouts.of(TIMEOUTS)

    async def via_send_raw() -> None:
        response = await direct.send_raw(origin, b"GET", b"/", headers, b"", timeouts)
        body = b"".join([chunk async for chunk in response])
        await response.aclose()
        assert response.status == 200 and len(body) == len(BODY)

    cases = [
        ("(a) httpx default transport, AsyncClient.get", via_default),
        ("(b) Transport via AsyncClient.send + aiter_raw", via_client),
        ("(c) Transport.handle_async_request directly", via_transport),
        ("(d) = (c), one httpx.Request reused", via_transport_reused),
        ("(e) Transport.send_raw (the proxy's path)", via_send_raw),
    ]
    for concurrency in (1, args.concurrency):
        for name, send in cases:
            done, wall, user, system = await measure(send, concurrency, args.requests, args.seconds)
            rows.append(
                (name, concurrency, done, done / wall, user / done * 1e6, system / done * 1e6)
            )
    await default.aclose()
    await client.aclose()
    await direct.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per measurement")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--backend", choices=["raw", "uvicorn"], default="raw")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.backend)
        return

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--backend", args.backend],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("backend did not start") from None
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/"
        if args.loop == "uvloop":
            import uvloop

            rows = uvloop.run(run(args, url))
        else:
            rows = asyncio.run(run(args, url))
    finally:
        child.terminate()
        child.wait(10)

    print(
        f"\nbackend: {args.backend} (child process), client loop: {args.loop}, "
        f"Python {sys.version.split()[0]}, httpx {httpx.__version__}"
    )
    print("client CPU per request, in µs: user + system (kernel: socket calls, epoll)\n")
    print(f"| {'client':<48} | conc | requests |  req/s | user | sys | total |")
    print(f"| {'-' * 48} | ---: | -------: | -----: | ---: | --: | ----: |")
    for name, conc, done, rps, user, system in rows:
        print(
            f"| {name:<48} | {conc:>4} | {done:>8} | {rps:>6.0f} | {user:>4.0f} | {system:>3.0f} "
            f"| {user + system:>5.0f} |"
        )


if __name__ == "__main__":
    main()

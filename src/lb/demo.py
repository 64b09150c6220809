"""`lb demo`: three demo backends on loopback and the balancer in front of them, in one process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

import uvicorn

from lb.app import LoadBalancer
from lb.logsetup import log_config
from lb.server import uvicorn_options
from lb.types import ASGIApp, Receive, Scope, Send


def demo_backend(name: str) -> ASGIApp:
    """A tiny ASGI backend that says who it is; /health answers 200."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            body = b"ok\n"
        else:
            body = json.dumps({"backend": name, "path": scope["path"]}).encode() + b"\n"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"server", f"demo-{name}".encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def demo_config(backend_urls: list[str]) -> dict[str, Any]:
    return {
        "pools": {
            "demo": {
                "strategy": "round_robin",
                "backends": [
                    {"url": url, "id": f"demo-{i + 1}"} for i, url in enumerate(backend_urls)
                ],
                "health_check": {"path": "/health", "interval": "2s", "timeout": "1s"},
            }
        },
        "logging": {"access_log": False},
    }


async def _serve(host: str, port: int) -> None:
    backends = []
    for i in range(3):
        backend_port = _free_port("127.0.0.1")
        config = uvicorn.Config(
            demo_backend(str(i + 1)), host="127.0.0.1", port=backend_port, log_level="warning"
        )
        backends.append(uvicorn.Server(config))
    urls = [f"http://127.0.0.1:{b.config.port}" for b in backends]
    balancer = LoadBalancer(demo_config(urls))
    options = uvicorn_options(host=host, port=port)
    options.pop("workers")
    options["log_level"] = "warning"
    options["log_config"] = log_config(balancer.config.logging)
    server = uvicorn.Server(uvicorn.Config(balancer, **options))
    # Backends run without their own signal handling: Ctrl-C reaches the balancer's server, and
    # when it stops, the backends are told to stop too.
    tasks = [asyncio.create_task(b._serve()) for b in backends]
    while not all(b.started for b in backends):
        if any(t.done() for t in tasks):
            for t in tasks:
                t.result()
        await asyncio.sleep(0.01)
    base = f"http://{host}:{port}"
    print(f"lb demo: proxy     {base}/", flush=True)
    print(f"         dashboard {base}/_lb/dashboard", flush=True)
    print(f"         metrics   {base}/_lb/metrics", flush=True)
    print(f"         status    {base}/_lb/status", flush=True)
    print(f"         backends  {' '.join(urls)}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        await server.serve()
    finally:
        for b in backends:
            b.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)


def run_demo(host: str = "127.0.0.1", port: int = 8080) -> int:
    os.environ.setdefault("LB_DEMO", "1")
    try:
        asyncio.run(_serve(host, port))
    except KeyboardInterrupt:
        pass
    return 0

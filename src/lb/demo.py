"""`lb demo`: three demo backends on loopback and the balancer in front of them, in one process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from typing import Any

import uvicorn

from lb.announce import announce, http_url
from lb.app import LoadBalancer
from lb.logsetup import log_config
from lb.serving import uvicorn_options
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
    # The backends each run on a thread of their own, through uvicorn's public `Server.run`: off
    # the main thread it leaves signals alone, so Ctrl-C reaches the balancer's server, and when
    # that stops, the backends are told to stop too. No Server header of uvicorn's: each backend
    # names itself in one.
    backends = [
        uvicorn.Server(
            uvicorn.Config(
                demo_backend(str(i + 1)),
                host="127.0.0.1",
                port=_free_port("127.0.0.1"),
                log_level="warning",
                server_header=False,
            )
        )
        for i in range(3)
    ]
    threads = [threading.Thread(target=b.run, name=f"demo-{i + 1}") for i, b in enumerate(backends)]
    for thread in threads:
        thread.start()
    try:
        while not all(b.started for b in backends):
            if not all(t.is_alive() for t in threads):
                raise SystemExit("lb demo: a demo backend could not start")
            await asyncio.sleep(0.01)
        urls = [f"http://127.0.0.1:{b.config.port}" for b in backends]
        balancer = LoadBalancer(demo_config(urls))
        options = uvicorn_options(host=host, port=port)
        options.pop("workers")
        options["log_level"] = "warning"
        options["log_config"] = log_config(balancer.config.logging)
        server = uvicorn.Server(uvicorn.Config(balancer, **options))
        base = http_url(host, port)
        announce(balancer.config, [base], mark=True)
        print(f"lb demo: proxy     {base}/", flush=True)
        print(f"         dashboard {base}/_lb/dashboard", flush=True)
        print(f"         metrics   {base}/_lb/metrics", flush=True)
        print(f"         status    {base}/_lb/status", flush=True)
        print(f"         backends  {' '.join(urls)}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await server.serve()
    finally:
        for b in backends:
            b.should_exit = True
        for thread in threads:
            await asyncio.to_thread(thread.join)


def run_demo(host: str = "127.0.0.1", port: int = 8080) -> int:
    os.environ.setdefault("LB_DEMO", "1")
    try:
        asyncio.run(_serve(host, port))
    except KeyboardInterrupt:
        pass
    return 0

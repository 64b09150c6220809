"""`admin.listen`: the admin API, metrics and dashboard on a socket of their own.

Started and stopped with the runtime (`Runtime.start`, run by `LoadBalancer.startup`), so it
exists however lb runs: under
`lb serve`, under gunicorn and bare uvicorn, and mounted in a host app (from its lifespan, or its
first request when the host runs none). It runs lb's HTTP protocol on the app's event loop and
serves the live generation's admin app, so it shares everything with the traffic port. With
several workers each binds the address with SO_REUSEPORT and the kernel spreads connections over
them, as it does for the traffic port: admin changes reach every worker either way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol

from uvicorn import Config as UvicornConfig
from uvicorn import Server as UvicornServer

from lb.announce import http_url
from lb.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("lb.admin")

DRAIN_TIMEOUT = 5.0  # seconds open admin requests get at shutdown


class Live(Protocol):
    """What the admin socket serves of a generation (`lb.generation.Generation`)."""

    @property
    def admin(self) -> ASGIApp: ...


class Served(Protocol):
    """What the admin socket reads of the runtime (`lb.runtime.Runtime`): the live generation,
    and what lb's server asks of the app it runs."""

    @property
    def generation(self) -> Live: ...

    def limits(self) -> tuple[int, int, float, float]: ...

    def full_errors(self) -> bool: ...

    def rejected(
        self, peer: str, method: str, target: bytes, status: int, detail: str, request_id: bytes
    ) -> None: ...


class AdminEndpoint:
    """The ASGI app of the admin socket: every request goes to the live generation's admin app
    (whose guard applies `admin.allow` and the token); other paths get its 404."""

    def __init__(self, runtime: Served) -> None:
        self._runtime = runtime

    def lb_limits(self) -> tuple[int, int, float, float]:
        return self._runtime.limits()

    def lb_full_errors(self) -> bool:
        return self._runtime.full_errors()

    # No lb_proxy_protocol and no TLS: the admin socket is for operators on the host (or a
    # network in admin.allow), not behind the edge's load balancer.

    def lb_rejected(
        self, peer: str, method: str, target: bytes, status: int, detail: str, request_id: bytes
    ) -> None:
        self._runtime.rejected(peer, method, target, status, detail, request_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the app's own lifespan runs this listener
            return
        await self._runtime.generation.admin(scope, receive, send)


class AdminListener:
    """A `Service`: listens on `address` while the runtime runs."""

    def __init__(self, runtime: Served, address: tuple[str, int]) -> None:
        self.address = address
        self._config = UvicornConfig(
            AdminEndpoint(runtime),
            http="lb.server:HttpProtocol",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            proxy_headers=False,
        )
        # A Server's state (connections, tasks) that no Server runs: this listener is the one
        # place protocols are made (`start`) and shut down (`stop`).
        self._state = UvicornServer(self._config).server_state
        self._server: asyncio.base_events.Server | None = None

    def __repr__(self) -> str:
        host, port = self.address
        return (
            f"<AdminListener {http_url(host, port)} {len(self._state.connections)} connection(s)>"
        )

    async def start(self) -> None:
        config = self._config
        if not config.loaded:
            config.load()
        state = self._state
        sock = _bind(*self.address)

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}
            )

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, sock=sock, backlog=config.backlog)
        logger.info("admin API listening on %s", http_url(*self.address))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                while self._state.tasks:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            for task in list(self._state.tasks):
                task.cancel()
        await server.wait_closed()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"admin.listen {http_url(host, port)}: {exc.strerror}") from None
    return sock

"""The ASGI application: `create_app(config)`, and `app` for `uvicorn lb.app:app`.

`LoadBalancer` is the entry of every request and the owner of its `lb.runtime.Runtime` (everything
with a lifetime: the upstream transport and client, the backends, the background services). It
starts the runtime on ASGI lifespan startup, or on the first request when a host app mounts it
without running its lifespan, and stops it on shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import httpx

from lb.accesslog import AccessLog
from lb.config import Config, ConfigError, default_config_path, load_config
from lb.control.host import ConfigSource
from lb.control.runtime import Control
from lb.generation import Generation
from lb.logsetup import capture_uncaught
from lb.metrics import Metrics
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.errors import send_error
from lb.proxy.headers import is_trusted, new_request_id, resolve_client, valid_request_id
from lb.proxy.routing import request_host
from lb.runtime import Runtime
from lb.tls import ServerTLS
from lb.transport import Transport
from lb.types import Message, Receive, Scope, Send, Service

__all__ = ["ConfigSource", "LazyApp", "LoadBalancer", "Service", "app", "create_app"]


class LoadBalancer:
    """The balancer as one ASGI callable. Two instances share nothing.

    What lives as long as the app (transport, client, metrics, logs, services, backends) is its
    `runtime`; the config it serves now is `runtime.generation`, which a reload replaces.
    """

    def __init__(self, config: ConfigSource) -> None:
        self.runtime = Runtime(load_config(config))
        self._starting: asyncio.Future[None] | None = None
        # Fixed at start, as the listener's TLS is: whether TLS comes before or after the PROXY
        # header was decided when the server started.
        self._proxy_protocol = self.config.server.proxy_protocol

    # The runtime's parts, under the names the app has always offered (tests, library users).
    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def generation(self) -> Generation:
        return self.runtime.generation

    @property
    def transport(self) -> Transport:
        return self.runtime.transport

    @property
    def client(self) -> httpx.AsyncClient:
        return self.runtime.client

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    @property
    def access_log(self) -> AccessLog:
        return self.runtime.access_log

    @property
    def control(self) -> Control:
        return self.runtime.control

    @property
    def services(self) -> list[Service]:
        return self.runtime.services

    def __repr__(self) -> str:
        return f"<LoadBalancer {self.config.summary()}>"

    def lb_server_tls(self, tls: ServerTLS) -> None:
        """The server's TLS context (from `lb.tls.uvicorn_context`), for reloads to renew."""
        self.runtime.server_tls = tls

    @property
    def server_tls(self) -> ServerTLS | None:
        return self.runtime.server_tls

    def lb_limits(self) -> tuple[int, int, float, float]:
        """What `lb.server` enforces before the app sees a request (`Runtime.limits`)."""
        return self.runtime.limits()

    def lb_full_errors(self) -> bool:
        """Whether error bodies carry the cause (`server.error_detail: full`), for `lb.server`."""
        return self.runtime.full_errors()

    def lb_proxy_protocol(self) -> Callable[[str], bool] | None:
        """With `server.proxy_protocol`: which peers may open a connection with a PROXY header
        (`trusted_proxies`); lb's protocol closes a connection from any other. Else None."""
        if not self._proxy_protocol:
            return None
        config = self.config  # trusted_proxies as reloaded; proxy_protocol itself needs a restart
        return lambda peer: (
            bool(config.trusted_proxies) and is_trusted(peer, config.trusted_proxies)
        )

    def lb_rejected(
        self, peer: str, method: str, target: bytes, status: int, detail: str, request_id: bytes
    ) -> None:
        """A request `lb.server` refused before it reached the app (`Runtime.rejected`)."""
        self.runtime.rejected(peer, method, target, status, detail, request_id)

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        if self.runtime.started:
            return
        if self._starting is not None:
            return await asyncio.shield(self._starting)
        self._starting = asyncio.get_running_loop().create_future()
        try:
            await self.runtime.start()
            self._starting.set_result(None)
        except BaseException as exc:
            self._starting.set_exception(exc)
            self._starting.exception()  # mark retrieved; the caller sees `exc` raised here
            self._starting = None
            raise

    async def shutdown(self) -> None:
        await self.runtime.stop()
        self._starting = None

    async def reload(self, source: ConfigSource | None = None) -> dict[str, Any]:
        """Make the config file (or `source`) live without a restart, as `POST /_lb/reload` does
        (but in this process only). Returns what changed; raises `lb.control.reload.ReloadError`
        with the problems, the running config untouched."""
        return await self.control.reload(source)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            return await self._lifespan(receive, send)
        runtime = self.runtime
        if not runtime.started:
            await self.startup()
        control = runtime.control
        if control.counter is not None and control.counter[0] > control.seen_seq:
            # Another worker changed something (an admin change, a reload) that this one has
            # not applied yet: do it before serving, so the answer reflects it.
            await control.catch_up()
        gen = runtime.generation  # one generation for the whole request, even across a reload
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        root_path = scope.get("root_path")
        if root_path:
            # Mounted: proxy the path below the mount point.
            root = root_path.encode("utf-8")
            if raw_path.startswith(root):
                raw_path = raw_path[len(root) :] or b"/"
        if gen.is_admin_path(raw_path):
            await gen.admin(scope, receive, send)
            return

        headers = scope["headers"]
        request_id = host = xff = traceparent = user_agent = None
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"user-agent":
                user_agent = value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"x-forwarded-for":
                xff = value if xff is None else xff + b"," + value
            elif name == b"traceparent":
                traceparent = value
        if request_id is None or not valid_request_id(request_id):
            request_id = new_request_id()
        peer = scope["client"][0] if scope.get("client") else ""
        ip, peer_trusted = resolve_client(peer, xff, gen.config.trusted_proxies)
        query = scope.get("query_string")
        target = raw_path + b"?" + query if query else raw_path
        router = gen.router
        route = router.match(
            request_host(((b"host", host),)) if host and router.by_host else "", raw_path, scope
        )
        ctx = RequestContext(
            request_id,
            ip,
            peer_trusted,
            scope.get("method", "GET"),
            target,
            route,
            time.perf_counter(),
            gen.full_errors,
        )
        ctx.host = host
        ctx.user_agent = user_agent
        scope[SCOPE_KEY] = ctx

        try:
            if kind == "websocket":
                if route is None:
                    ctx.status = 404
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    await gen.websocket_handlers[route](scope, receive, send)
            elif route is None:
                await send_error(send, ctx, "no_route", "no route matches this request")
            else:
                # Whichever layer answers records ctx.status and ctx.bytes_sent (the proxy, the
                # cache, send_error): no wrapper around `send` on every request.
                await route.handler(scope, receive, send)
        finally:
            end = time.perf_counter()
            runtime.metrics.request(
                ctx.pool or "",
                ctx.backend,
                ctx.method,
                ctx.status,
                end - ctx.start,
                timed=kind == "http",
            )
            runtime.access_log.write(ctx, end, traceparent)


def create_app(config: ConfigSource) -> LoadBalancer:
    """An ASGI app for `config`: a file path, a mapping (the parsed YAML) or a `Config`.

    Raises `ConfigError` listing every problem when the config is invalid.
    """
    return LoadBalancer(config)


def _freeze_startup_objects() -> None:
    """Move every object alive now (modules, config, pools: the process's furniture) out of the
    cyclic collector's reach. Left in, each full collection walks them all, hundreds of
    thousands, tens of milliseconds with requests waiting: the worst of lb's tail latency."""
    gc.collect()
    gc.freeze()


class LazyApp:
    """`lb.app:app`: reads `$LB_CONFIG` (else ./config.yaml) at startup, never at import.

    As the server's entry point it owns the process: it tunes its garbage collector once
    started (`_freeze_startup_objects`) and, with `logging.format: json`, logs uncaught
    exceptions and warnings as JSON lines; an app from `create_app` leaves both to its host.
    """

    def __init__(self) -> None:
        self._app: LoadBalancer | None = None
        self._server_tls: ServerTLS | None = None

    def _load(self) -> LoadBalancer:
        if self._app is None:
            self._app = LoadBalancer(default_config_path())
            if self._server_tls is not None:
                self._app.lb_server_tls(self._server_tls)
        return self._app

    def lb_server_tls(self, tls: ServerTLS) -> None:
        # The server makes its context before the app reads its config.
        self._server_tls = tls
        if self._app is not None:
            self._app.lb_server_tls(tls)

    def loaded(self) -> LoadBalancer | None:
        """The app once loaded: lb's protocol calls it directly, one layer fewer per request."""
        return self._app

    def lb_limits(self) -> tuple[int, int, float, float]:
        if self._app is None:
            from lb.edgerules import (
                HEADER_TIMEOUT,
                MAX_HEADER_BYTES,
                MAX_TARGET_BYTES,
                SEND_TIMEOUT,
            )

            return MAX_HEADER_BYTES, MAX_TARGET_BYTES, HEADER_TIMEOUT, SEND_TIMEOUT
        return self._app.lb_limits()

    def lb_full_errors(self) -> bool:
        return self._app is not None and self._app.lb_full_errors()

    def lb_proxy_protocol(self) -> Callable[[str], bool] | None:
        return self._app.lb_proxy_protocol() if self._app is not None else None

    def lb_rejected(
        self, peer: str, method: str, target: bytes, status: int, detail: str, request_id: bytes
    ) -> None:
        if self._app is not None:
            self._app.lb_rejected(peer, method, target, status, detail, request_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._app is None:
            message = await receive()
            try:
                app = self._load()
            except ConfigError as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            if app.config.logging.format == "json":
                # Owning the process (each worker's), it owns what reaches stderr, too.
                capture_uncaught()
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return message
                return await receive()

            async def started(message: Message) -> None:
                if message["type"] == "lifespan.startup.complete":
                    _freeze_startup_objects()
                await send(message)

            await app(scope, replay, started)
            return
        await self._load()(scope, receive, send)


app = LazyApp()

"""WebSocket proxying: open the same upgrade to a backend with the websockets library, then relay
messages both ways until either side closes, passing the close code on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from lb.pool import Pool
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.errors import refuse_websocket
from lb.proxy.headers import HOP_BY_HOP
from lb.strategy import PickRequest
from lb.types import Receive, Scope, Send

logger = logging.getLogger("lb.websocket")

# Headers the websockets client writes itself for the upstream handshake.
_HANDSHAKE = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"x-request-id",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)
# Codes a peer may not put in a close frame: they only describe what happened locally.
_RESERVED_CLOSE = frozenset({1005, 1006, 1015})


async def _reject(
    send: Send, scope: Scope, ctx: RequestContext, status: int, code: str, cause: str
) -> None:
    await refuse_websocket(send, scope, ctx, code, cause, status=status)


async def proxy_websocket(scope: Scope, receive: Receive, send: Send, pool: Pool) -> None:
    ctx: RequestContext = scope[SCOPE_KEY]
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    request = PickRequest(scope, ctx.client_ip, pool.config.hash_key)
    backend = pool.pick(request)
    if backend is None:
        return await _reject(
            send, scope, ctx, 503, "no_backend", f"no usable backend in pool {pool.name}"
        )
    ctx.backend = backend.id
    ctx.attempts = 1
    headers: list[tuple[str, str]] = []
    subprotocols: list[Subprotocol] = []
    client_host = backend.authority.decode()
    xff = None
    for name, value in scope["headers"]:
        if name == b"sec-websocket-protocol":
            subprotocols.extend(Subprotocol(p.strip()) for p in value.decode("latin-1").split(","))
        elif name == b"host":
            client_host = value.decode("latin-1")
        elif name == b"x-forwarded-for":
            xff = value.decode("latin-1")
        if name in HOP_BY_HOP or name in _HANDSHAKE:
            continue
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    peer = scope["client"][0] if scope.get("client") else ""
    headers.append(("X-Forwarded-For", f"{xff}, {peer}" if xff else peer))
    headers.append(("X-Forwarded-Proto", "wss" if scope.get("scheme") == "wss" else "ws"))
    headers.append(("X-Forwarded-Host", client_host))
    headers.append(("X-Request-ID", ctx.request_id.decode()))
    route = ctx.route
    target = (ctx.target if route is None else route.upstream_path(ctx.target)).decode("latin-1")
    host = client_host if pool.config.preserve_host else backend.authority.decode()
    scheme = "wss" if backend.scheme == "https" else "ws"
    timeouts = pool.config.timeouts
    tls: dict[str, Any] = {}
    if scheme == "wss":
        # As for HTTP: the pool's TLS settings, and the backend's name (not the client's Host)
        # as SNI and the name verified.
        name = pool.tls.server_hostname(backend.host) if pool.tls else backend.host
        tls = {"ssl": pool.tls.context if pool.tls else True, "server_hostname": name}
    start = time.perf_counter()
    pool.start(backend)
    ok = False
    handshake: float | None = None
    try:
        try:
            upstream = await connect(
                f"{scheme}://{host}{target}",
                # Connect to the backend, whatever the Host header names.
                host=backend.host,
                port=backend.port,
                additional_headers=headers,
                subprotocols=subprotocols or None,
                user_agent_header=None,
                compression=None,
                proxy=None,
                open_timeout=timeouts.connect + timeouts.read,
                ping_interval=None,
                max_size=None,
                max_queue=64,
                **tls,
            )
        except InvalidStatus as exc:
            ctx.error = f"backend refused the upgrade with {exc.response.status_code}"
            return await _reject(send, scope, ctx, 502, "bad_gateway", ctx.error)
        except InvalidURI:
            ctx.error = "invalid Host for the upstream handshake"
            return await _reject(send, scope, ctx, 400, "bad_request", ctx.error)
        except (OSError, TimeoutError, Exception) as exc:
            ctx.error = f"{type(exc).__name__} ({exc})"
            logger.warning(
                "websocket upstream error: pool=%s backend=%s cause=%s",
                pool.name,
                backend.id,
                ctx.error,
            )
            status, code = (
                (504, "timeout") if isinstance(exc, TimeoutError) else (502, "bad_gateway")
            )
            return await _reject(send, scope, ctx, status, code, ctx.error)
        handshake = time.perf_counter() - start  # the session's length is no latency
        accept: dict[str, Any] = {
            "type": "websocket.accept",
            "headers": [(b"x-request-id", ctx.request_id)],
        }
        set_cookie = pool.sticky_cookie(request, backend)
        if set_cookie is not None:
            accept["headers"].append((b"set-cookie", set_cookie))
        if upstream.subprotocol:
            accept["subprotocol"] = upstream.subprotocol
        await send(accept)
        ctx.status = 101
        ok = await _relay(receive, send, upstream, ctx)
    finally:
        pool.done(backend, time.perf_counter() - start, ok, response_time=handshake)


async def _relay(
    receive: Receive, send: Send, upstream: ClientConnection, ctx: RequestContext
) -> bool:
    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                await upstream.send(data)
            elif kind == "websocket.disconnect":
                code = message.get("code", 1000)
                if code in _RESERVED_CLOSE:
                    code = 1000
                await upstream.close(code, message.get("reason") or "")
                return

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                ctx.bytes_sent += len(data)
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        rcvd = upstream.close_code
        code = 1011 if rcvd is None or rcvd in _RESERVED_CLOSE else rcvd
        with contextlib.suppress(Exception):
            await send(
                {"type": "websocket.close", "code": code, "reason": upstream.close_reason or ""}
            )

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                ctx.error = f"{type(task.exception()).__name__}"
        # Whichever side closed first, let the other direction finish its close handshake.
        await asyncio.wait(tasks, timeout=5)
        return ctx.error is None
    finally:
        for task in tasks:
            task.cancel()
        await upstream.close()

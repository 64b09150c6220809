"""The admin API under `admin.path_prefix`: probes, status, and the metrics path (`metrics.path`).

Everything but `healthz` and `readyz` is guarded: the client must come from `admin.allow` (403
otherwise) and, when a token is set, carry `Authorization: Bearer TOKEN` (401 otherwise). Admin
requests are never proxied, rate limited or cached.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from lb.cache import Cache, StoreError
from lb.config import Config
from lb.control.api import control_routes
from lb.control.reload import log_purge
from lb.control.workers import Applied, WorkerInfo
from lb.dashboard import DASHBOARD, dashboard_routes, login_page
from lb.metrics import CONTENT_TYPE, Metrics
from lb.proxy.errors import admin_error, admin_request_id, date_header, json_response, log_cause
from lb.proxy.headers import resolve_client
from lb.transport import Origin, origin_of
from lb.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from lb.control.runtime import Control
    from lb.pool import Pool


class Served(Protocol):
    """What the admin app reads of a generation (`lb.generation.Generation`)."""

    @property
    def config(self) -> Config: ...

    @property
    def pools(self) -> Mapping[str, Pool]: ...

    @property
    def cache(self) -> Cache | None: ...


class AdminView(Protocol):
    """What the admin app reads of the runtime: the live generation, metrics, control."""

    @property
    def generation(self) -> Served: ...

    metrics: Metrics
    control: Control

    def load(self, origin: Origin) -> tuple[int, int]:
        """(open upstream connections, requests waiting for one) to `origin` (the transport's)."""


def status_document(
    gen: Served,
    totals: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
    load: Callable[[Origin], tuple[int, int]] | None = None,
    workers: Sequence[WorkerInfo] = (),
) -> dict[str, Any]:
    """SPEC section 8's status JSON for `gen`, with `workers` (pid, started, last_seen) beside
    the pools when given.

    `totals` (multiprocess mode) holds requests_total, failures_total and active_requests summed
    over every worker; without it, or for a backend it lacks, this worker's own counters are used.
    State, weight, latency and `load` (a backend's upstream connections and the requests waiting
    for one) are always this worker's view.
    """
    pools: dict[str, Any] = {}
    for name, pool in gen.pools.items():
        backends = []
        for backend in pool.backends.values():
            p50, p95, p99 = backend.latency.percentiles(0.50, 0.95, 0.99)
            summed = totals.get((name, backend.id)) if totals is not None else None
            requests, failures, active = (
                backend.requests_total,
                backend.failures_total,
                backend.active_requests,
            )
            if summed:
                requests = int(summed.get("requests_total", requests))
                failures = int(summed.get("failures_total", failures))
                active = int(summed.get("active_requests", active))
            connections, pending = load(origin_of(backend.url)) if load else (0, 0)
            backends.append(
                {
                    "id": backend.id,
                    "url": backend.url,
                    "origin": backend.origin,
                    "state": backend.state,
                    "weight": backend.weight,
                    "active_requests": active,
                    "requests_total": requests,
                    "failures_total": failures,
                    "connections": connections,
                    "pending": pending,
                    "latency_ms": {
                        "p50": round(p50 * 1000, 3),
                        "p95": round(p95 * 1000, 3),
                        "p99": round(p99 * 1000, 3),
                    },
                }
            )
        limits = pool.config.limits
        pools[name] = {
            "strategy": pool.config.strategy,
            "limits": None if limits is None else dataclasses.asdict(limits),
            "backends": backends,
        }
    document: dict[str, Any] = {"pools": pools}
    if workers:
        document["workers"] = [worker.to_json() for worker in workers]
    return document


def purge_target(query: bytes) -> bytes | None:
    """The target of `DELETE .../cache?path=TARGET`: everything after `path=`, taken as sent when
    it starts with "/" (so `?path=/x?y=1&z=2` works unencoded), else percent-decoded once."""
    if not query.startswith(b"path="):
        return None
    value = query[5:]
    if not value.startswith(b"/"):
        value = unquote_to_bytes(value)
    return value if value.startswith(b"/") else None


def build_admin(app: AdminView, gen: Served) -> ASGIApp:
    prefix = gen.config.admin.path_prefix

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        empty = [name for name, pool in gen.pools.items() if not pool.usable()]
        if empty:
            return json_response({"status": "unavailable", "pools_without_backend": empty}, 503)
        return json_response({"status": "ready"})

    async def status(request: Request) -> Response:
        # Every worker's counts reach the shared files before they are summed (SPEC 9).
        await app.control.flush_workers()
        totals = await app.metrics.backend_totals()
        workers = app.control.workers()
        return json_response(status_document(app.generation, totals, app.load, workers))

    async def metrics(request: Request) -> Response:
        await app.control.flush_workers()
        body = await app.metrics.render()
        return Response(body, headers={"content-type": CONTENT_TYPE, "cache-control": "no-store"})

    async def purge_cache(request: Request) -> Response:
        cache = app.generation.cache
        if cache is None:
            return admin_error(request.scope, 404, "not_found", "the cache is off")
        query: bytes = request.scope.get("query_string", b"")
        target = purge_target(query)
        if query and target is None:
            detail = "expected ?path=/target (path and query as sent)"
            return admin_error(request.scope, 400, "bad_request", detail)
        try:
            removed = await cache.purge(target)
        except StoreError as exc:
            # The store's error names its address: the log gets it, the answer does not.
            scope = request.scope
            cause = f"cache purge: {exc}"
            log_cause(503, "unavailable", cause, admin_request_id(scope), None)
            return admin_error(scope, 503, "unavailable", "the cache store cannot be reached")
        path = None if target is None else target.decode("latin-1")
        client = request.client.host if request.client else "?"
        log_purge(f"DELETE {request.url.path} from {client}", path, removed)
        if cache.config.store == "memory":
            # Each worker (and instance) holds its own entries: they purge theirs too.
            data = {"path": path}
            applied = await app.control.broadcast("cache_purge", data, instances=True)
        else:
            # One store for every worker: purged for all of them already.
            count = len(app.control.workers())
            applied = Applied(count, count)
        return json_response({"purged": removed, "path": path, "applied": applied.to_json()})

    routes = [
        Route(f"{prefix}/healthz", healthz, methods=["GET", "HEAD"]),
        Route(f"{prefix}/readyz", readyz, methods=["GET", "HEAD"]),
        Route(f"{prefix}/status", status, methods=["GET"]),
        Route(f"{prefix}/cache", purge_cache, methods=["DELETE"]),
        Route(gen.config.metrics.path, metrics, methods=["GET", "HEAD"]),
        *control_routes(app.control, prefix),
        *dashboard_routes(prefix),
    ]
    router = Router(routes, default=_not_found)
    open_paths = {f"{prefix}/healthz".encode(), f"{prefix}/readyz".encode()}
    # A browser cannot send a bearer header when it opens a page: the dashboard also takes the
    # token once as ?token= (its script then keeps it and sends the header itself).
    page_paths = {f"{prefix}{DASHBOARD}".encode()}
    return AdminGuard(router, gen, open_paths, page_paths)


class AdminGuard:
    """Pure-ASGI access check in front of the admin router."""

    def __init__(
        self,
        app: ASGIApp,
        gen: Served,
        open_paths: set[bytes],
        page_paths: frozenset[bytes] | set[bytes] = frozenset(),
    ) -> None:
        self.app = app
        self.gen = gen
        self.open_paths = open_paths
        self.page_paths = page_paths
        token = gen.config.admin.token
        self.token = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        path = scope["path"].encode()
        root = scope.get("root_path", "").encode()
        if root and path.startswith(root):
            path = path[len(root) :]
        send = _dated(send)
        if path not in self.open_paths:
            denial = self._deny(scope, path in self.page_paths)
            if denial is not None:
                return await denial(scope, receive, send)
        # With "app" in the scope, Starlette's routing raises 405 instead of answering in plain
        # text, so that it is answered as every other admin error.
        scope.setdefault("app", self)
        try:
            await self.app(scope, receive, send)
        except HTTPException as exc:
            if exc.status_code != 405:
                raise
            allowed = (exc.headers or {}).get("Allow", "")
            detail = f"method {scope['method']} not allowed here; allowed: {allowed}"
            response = admin_error(scope, 405, "method_not_allowed", detail, headers=exc.headers)
            await response(scope, receive, send)

    def _deny(self, scope: Scope, page: bool = False) -> Response | None:
        config = self.gen.config
        peer = scope["client"][0] if scope.get("client") else ""
        xff: bytes | None = None
        proxied = False
        given = b""
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                xff = value if xff is None else xff + b"," + value
                proxied = True
            elif name == b"x-real-ip" or name == b"forwarded":
                proxied = True
            elif name == b"authorization" and not given:
                given = value
        address, _ = resolve_client(peer, xff, config.trusted_proxies)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is None or not any(ip in net for net in config.admin.allow):
            return admin_error(scope, 403, "forbidden", "admin not allowed from this address")
        if self.token is None:
            if proxied:
                # A TLS terminator or proxy on this host makes every request come from an
                # allowed address: without a token, only a direct client may be believed.
                detail = "the admin API asks no token, so it refuses requests sent through a proxy"
                return admin_error(scope, 403, "forbidden", detail)
            return None
        if not given and page:
            given = _query_token(scope)
        if not hmac.compare_digest(given, self.token):
            if page:
                return login_page(wrong=bool(given))
            detail = "missing or invalid bearer token"
            bearer = {"www-authenticate": "Bearer"}
            return admin_error(scope, 401, "unauthorized", detail, headers=bearer)
        return None


def _dated(send: Send) -> Send:
    """`send` that gives every admin response its Date (starlette's responses carry none) and,
    when it has none, `Cache-Control: no-store`: the admin's answers (its 404, 405 and redirects
    too) describe live state that no cache may keep."""

    async def send_dated(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), date_header()]
            if not any(name.lower() == b"cache-control" for name, _ in headers):
                headers.append((b"cache-control", b"no-store"))
            message["headers"] = headers
        await send(message)

    return send_dated


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    response = admin_error(scope, 404, "not_found", "no admin endpoint at this path")
    await response(scope, receive, send)


def _query_token(scope: Scope) -> bytes:
    """`?token=T` of a page request, as the `Bearer T` header value it stands for."""
    query: bytes = scope.get("query_string", b"")
    for value in parse_qs(query.decode("latin-1")).get("token", []):
        return b"Bearer " + value.encode("utf-8")
    return b""

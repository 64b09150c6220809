"""The per-request record every layer reads and fills in; the access log is written from it.

Who writes which field (everyone else only reads it):

    request_id, client_ip, peer_trusted, method, target, route, start, full_errors, pool,
    host, user_agent
                    lb.app, once, when the request arrives (lb.app.lb_rejected for the requests
                    lb.server refuses before the app)
    backend, attempts
                    the layer that picks a backend: lb.proxy (each try), lb.websocket
    bytes_received, upstream
                    lb.proxy (the request body it read, the time to the backend's response head)
    status, bytes_sent
                    the layer that answers the client, as it sends: lb.proxy (a backend's
                    response), lb.cache.layer (a hit, a 304, or a response it took over: it then
                    resets the proxy's count), lb.websocket (101 and the relayed bytes),
                    lb.errors (every answer lb makes itself); lb.app only for a WebSocket with no
                    route (closed with 1008); lb.compress (bytes_sent only: the coded size of a
                    response it encoded, after the proxy counted the backend's bytes)
    error           the layer that gave up, with its reason: lb.proxy, lb.websocket, lb.errors
                    (the code, when nothing said why before)
    cache           lb.cache.layer (HIT, MISS, STALE, BYPASS, ...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lb.proxy.routing import Route

SCOPE_KEY = "lb.context"


class RequestContext:
    """Lives in `scope[SCOPE_KEY]` for one request: never on a shared object."""

    __slots__ = (
        "request_id",
        "client_ip",
        "peer_trusted",
        "method",
        "target",
        "route",
        "start",
        "status",
        "bytes_sent",
        "pool",
        "backend",
        "attempts",
        "cache",
        "error",
        "host",
        "user_agent",
        "bytes_received",
        "upstream",
        "full_errors",
    )

    def __init__(
        self,
        request_id: bytes,
        client_ip: str,
        peer_trusted: bool,
        method: str,
        target: bytes,
        route: Route | None,
        start: float,
        full_errors: bool = False,
    ) -> None:
        self.request_id = request_id
        self.client_ip = client_ip
        self.peer_trusted = peer_trusted
        self.method = method
        self.target = target  # raw path + query as the client sent them (below any mount point)
        self.route = route
        self.start = start
        # Set by whichever layer answers (proxy, cache, send_error), as it sends the response.
        self.status = 0
        self.bytes_sent = 0
        self.pool: str | None = route.pool if route is not None else None
        self.backend: str | None = None
        self.attempts = 0
        self.cache: str | None = None
        self.error: str | None = None  # why the balancer answered itself or aborted
        self.host: bytes | None = None  # as the client sent it (app)
        self.user_agent: bytes | None = None  # (app)
        self.bytes_received = 0  # request body bytes read from the client (proxy)
        self.upstream: float | None = None  # seconds until the backend's response head (proxy)
        # server.error_detail: full (error bodies carry the cause, not the fixed sentence).
        self.full_errors = full_errors

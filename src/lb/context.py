"""The per-request record every layer reads and fills in; the access log is written from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lb.routing import Route

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
        "trace_id",
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
        self.trace_id: str | None = None
        self.host: bytes | None = None  # as the client sent it (app)
        self.user_agent: bytes | None = None  # (app)
        self.bytes_received = 0  # request body bytes read from the client (proxy)
        self.upstream: float | None = None  # seconds until the backend's response head (proxy)
        # server.error_detail: full (error bodies carry the cause, not the fixed sentence).
        self.full_errors = full_errors

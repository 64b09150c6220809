"""Responses the balancer makes itself: status, JSON body `{"error", "detail", "request_id"}`.

The body's `detail` is a fixed sentence per code (SPEC 3): an error body goes to anyone on the
internet, so it never names a backend, an address, a port, an exception or an errno. The cause
goes to the `lb.errors` log with the request id and the backend; `server.error_detail: full`
puts it in the body too, for debugging.

The one builder of lb's error responses: `error_body` and `error_headers` make the body and head,
`send_error` answers a proxied request (or a WebSocket handshake), `refuse_websocket` a handshake
whatever the server supports, and `admin_error` the admin app's refusals (401, 403, 404, 405, ...);
`lb.server` writes the same body and head for the requests it refuses before the app sees them.
`send_redirect` is the one answer lb makes that is no error: a route's `redirect` (SPEC 12).
"""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse, Response

from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.headers import new_request_id, valid_request_id
from lb.types import Scope, Send

logger = logging.getLogger("lb.errors")

STATUS = {
    "no_route": 404,
    "bad_request": 400,
    "forbidden": 403,
    "payload_too_large": 413,
    "rate_limited": 429,
    "bad_gateway": 502,
    "no_backend": 503,
    "unavailable": 503,
    "timeout": 504,
}

DETAIL = {
    "no_route": "no route matches this request",
    "no_backend": "no backend is available to answer this request",
    "bad_gateway": "the backend did not send a valid answer",
    "timeout": "the backend did not answer in time",
    "rate_limited": "too many requests; retry after the time in Retry-After",
    "unavailable": "the service is unavailable; retry after the time in Retry-After",
    "bad_request": "the request is malformed, too large or too slow",
    "payload_too_large": "the request body is too large",
    "forbidden": "this request is not allowed",
}


def public_detail(code: str, cause: str, full: bool) -> str:
    """What the body says: the fixed sentence of `code`, or the cause with `error_detail: full`."""
    return cause if full else DETAIL[code]


def error_body(code: str, detail: str, request_id: bytes) -> bytes:
    return json.dumps(
        {"error": code, "detail": detail, "request_id": request_id.decode("ascii")},
        separators=(",", ":"),
    ).encode()


def date_header() -> tuple[bytes, bytes]:
    """`Date: now`. lb serves without uvicorn's Date (a backend's own must pass through once), so
    what lb answers itself carries its own, as an origin server with a clock must (RFC 9110 6.6.1).
    """
    return b"date", email.utils.formatdate(usegmt=True).encode("ascii")


def error_headers(
    body: bytes,
    request_id: bytes,
    retry_after: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> list[tuple[bytes, bytes]]:
    out = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id),
        # An error is about this one request: no cache may answer another with it.
        (b"cache-control", b"no-store"),
        date_header(),
    ]
    if retry_after is not None:
        out.append((b"retry-after", str(retry_after).encode()))
    if headers:
        out.extend(headers)
    return out


def log_cause(status: int, code: str, cause: str, request_id: bytes, backend: str | None) -> None:
    """One log line per error lb answers, with what the body no longer says. A 5xx is lb's or a
    backend's trouble (warning); a 4xx is the client's, already in the access log (debug)."""
    level = logging.WARNING if status >= 500 else logging.DEBUG
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "answered %d %s: request_id=%s backend=%s cause=%s",
            status,
            code,
            request_id.decode("ascii", "replace"),
            backend or "-",
            cause,
        )


async def send_error(
    send: Send,
    ctx: RequestContext,
    code: str,
    cause: str,
    *,
    status: int | None = None,
    retry_after: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    kind: str = "http",
) -> None:
    """Answer the request with error `code`; `cause` goes to the log (and to the body only with
    `server.error_detail: full`). `kind` "websocket.http" answers a WebSocket handshake."""
    body = error_body(code, public_detail(code, cause, ctx.full_errors), ctx.request_id)
    out = error_headers(body, ctx.request_id, retry_after, headers)
    ctx.error = ctx.error or code
    ctx.status = status or STATUS[code]
    log_cause(ctx.status, code, cause, ctx.request_id, ctx.backend)
    await send({"type": f"{kind}.response.start", "status": ctx.status, "headers": out})
    ctx.bytes_sent = len(body)
    await send({"type": f"{kind}.response.body", "body": body})


# A permanent redirect without freshness is kept by browsers for good: an hour bounds a mistake.
# A temporary one is about now.
_REDIRECT_CACHE = {301: b"max-age=3600", 308: b"max-age=3600", 302: b"no-store", 307: b"no-store"}


async def send_redirect(
    send: Send, ctx: RequestContext, status: int, location: bytes, kind: str = "http"
) -> None:
    """Answer with `status` and `location` (a route's `redirect`), a one-line text body."""
    body = b"Redirecting to " + location + b"\n"
    headers = [
        (b"location", location),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-request-id", ctx.request_id),
        (b"cache-control", _REDIRECT_CACHE.get(status, b"no-store")),
        date_header(),
    ]
    ctx.status = status
    await send({"type": f"{kind}.response.start", "status": status, "headers": headers})
    ctx.bytes_sent = len(body)
    await send({"type": f"{kind}.response.body", "body": body})


def context_of(scope: Scope) -> RequestContext:
    ctx: RequestContext = scope[SCOPE_KEY]
    return ctx


async def refuse_websocket(
    send: Send,
    scope: Scope,
    ctx: RequestContext,
    code: str,
    cause: str,
    *,
    status: int,
    retry_after: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Refuse a WebSocket handshake: with lb's error response where the server can send one
    (the ASGI `websocket.http.response` extension), else by closing before accepting with 1013,
    "try again later" (the cause logged either way)."""
    ctx.error = code
    if "websocket.http.response" in scope.get("extensions", {}):
        await send_error(
            send,
            ctx,
            code,
            cause,
            status=status,
            retry_after=retry_after,
            headers=headers,
            kind="websocket.http",
        )
        return
    ctx.status = status
    log_cause(status, code, cause, ctx.request_id, ctx.backend)
    await send({"type": "websocket.close", "code": 1013})


def admin_error(
    scope: Scope,
    status: int,
    code: str,
    detail: str,
    *,
    problems: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An admin endpoint's error: lb's JSON body in operators' words (no cause of a failure
    inside: that goes to the log), plus `problems` when given, never cached.

    Admin requests have no request context: the id is the client's `X-Request-ID` when valid,
    else a new one, as for proxied requests."""
    request_id = admin_request_id(scope).decode("ascii")
    data: dict[str, Any] = {"error": code, "detail": detail, "request_id": request_id}
    if problems is not None:
        data["problems"] = problems
    return json_response(data, status, {"x-request-id": request_id, **(headers or {})})


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON answer of the admin app: never cached."""
    return JSONResponse(data, status, headers={"cache-control": "no-store", **(headers or {})})


def admin_request_id(scope: Scope) -> bytes:
    """The id of an admin request: the client's `X-Request-ID` when valid, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and valid_request_id(value):
            return bytes(value)
    return new_request_id()

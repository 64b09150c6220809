"""Responses the balancer makes itself: status, JSON body `{"error", "detail", "request_id"}`.

The one builder of them: `error_body` and `error_headers` make the body and head, `send_error`
answers a proxied request, `refuse_websocket` a WebSocket handshake, and `admin_error` the admin
app's refusals (403, 404, 405, ...); `lb.server` writes the same body for the requests it refuses
before the app sees them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse, Response

from lb.context import SCOPE_KEY, RequestContext
from lb.headers import new_request_id, valid_request_id
from lb.types import Scope, Send

STATUS = {
    "no_route": 404,
    "bad_request": 400,
    "rate_limited": 429,
    "bad_gateway": 502,
    "no_backend": 503,
    "unavailable": 503,
    "timeout": 504,
}


def error_body(code: str, detail: str, request_id: bytes) -> bytes:
    return json.dumps(
        {"error": code, "detail": detail, "request_id": request_id.decode("ascii")},
        separators=(",", ":"),
    ).encode()


def error_headers(
    body: bytes,
    request_id: bytes,
    *,
    retry_after: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> list[tuple[bytes, bytes]]:
    """The head of an error response with `body`: JSON, never cached, with the request id."""
    out = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id),
        (b"cache-control", b"no-store"),
    ]
    if retry_after is not None:
        out.append((b"retry-after", str(retry_after).encode()))
    if headers:
        out.extend(headers)
    return out


async def send_error(
    send: Send,
    ctx: RequestContext,
    code: str,
    detail: str,
    *,
    status: int | None = None,
    retry_after: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(code, detail, ctx.request_id)
    out = error_headers(body, ctx.request_id, retry_after=retry_after, headers=headers)
    ctx.error = ctx.error or code
    ctx.status = status or STATUS[code]
    await send({"type": "http.response.start", "status": ctx.status, "headers": out})
    ctx.bytes_sent = len(body)
    await send({"type": "http.response.body", "body": body})


def context_of(scope: Scope) -> RequestContext:
    ctx: RequestContext = scope[SCOPE_KEY]
    return ctx


async def refuse_websocket(
    send: Send,
    scope: Scope,
    ctx: RequestContext,
    code: str,
    detail: str,
    *,
    status: int | None = None,
    retry_after: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Refuse a WebSocket handshake: with lb's error response where the server can send one
    (the ASGI `websocket.http.response` extension), else by closing before accepting with 1013,
    "try again later"."""
    ctx.error = code
    ctx.status = status or STATUS[code]
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1013})
        return
    body = error_body(code, detail, ctx.request_id)
    out = error_headers(body, ctx.request_id, retry_after=retry_after, headers=headers)
    await send({"type": "websocket.http.response.start", "status": ctx.status, "headers": out})
    await send({"type": "websocket.http.response.body", "body": body})


def admin_error(
    scope: Scope,
    status: int,
    code: str,
    detail: str,
    *,
    problems: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error of the admin app, as a Starlette response: lb's body, plus `problems` when given.

    Admin requests have no request context: the id is the client's `X-Request-ID` when valid,
    else a new one, as for proxied requests."""
    request_id = _admin_request_id(scope).decode("ascii")
    data: dict[str, Any] = {"error": code, "detail": detail, "request_id": request_id}
    if problems is not None:
        data["problems"] = problems
    return json_response(data, status, {"x-request-id": request_id, **(headers or {})})


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON answer of the admin app: never cached."""
    return JSONResponse(data, status, headers={"cache-control": "no-store", **(headers or {})})


def _admin_request_id(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and valid_request_id(value):
            return bytes(value)
    return new_request_id()

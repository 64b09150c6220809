"""Responses the balancer makes itself: status, JSON body `{"error", "detail", "request_id"}`."""

from __future__ import annotations

import json
from typing import Any

from lb.context import SCOPE_KEY, RequestContext

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


def error_body(code: str, detail: str, request_id: bytes) -> bytes:
    return json.dumps(
        {"error": code, "detail": detail, "request_id": request_id.decode("ascii")},
        separators=(",", ":"),
    ).encode()


async def send_error(
    send: Any,
    ctx: RequestContext,
    code: str,
    detail: str,
    *,
    status: int | None = None,
    retry_after: int | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(code, detail, ctx.request_id)
    out = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", ctx.request_id),
        (b"cache-control", b"no-store"),
    ]
    if retry_after is not None:
        out.append((b"retry-after", str(retry_after).encode()))
    if headers:
        out.extend(headers)
    ctx.error = ctx.error or code
    ctx.status = status or STATUS[code]
    await send({"type": "http.response.start", "status": ctx.status, "headers": out})
    ctx.bytes_sent = len(body)
    await send({"type": "http.response.body", "body": body})


def context_of(scope: Any) -> RequestContext:
    ctx: RequestContext = scope[SCOPE_KEY]
    return ctx

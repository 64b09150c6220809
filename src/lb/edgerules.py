"""The edge rules of SPEC section 3 that lb's server (`lb.server`) applies to a request head before
any ASGI code runs, without I/O: the limits, the Host checks, absolute-form targets, and the
response that refuses a request.
"""

from __future__ import annotations

import re

import httptools

from lb.exceptions import LBError
from lb.proxy.errors import error_body, error_headers, public_detail

MAX_HEADER_BYTES = 32 * 1024
MAX_TARGET_BYTES = 8 * 1024
HEADER_TIMEOUT = 10.0
SEND_TIMEOUT = 60.0
MAX_LOGGED_TARGET = 1024  # of a refused request's target, in its access-log line

# uri-host [":" port] (RFC 3986 reg-name or IP-literal), or empty (RFC 9112 3.2).
_HOST = re.compile(rb"[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]*")

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class Reject(LBError):
    """Raised from a parser callback: llhttp stops and lb's server answers `status` (it never
    leaves `data_received`)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_host(value: bytes, seen: bool) -> None:
    """RFC 9112 3.2: 400 for a second Host or an invalid one. Forwarded as they came, two Hosts
    would let lb route by one while the backend reads the other."""
    if seen:
        raise Reject(400, "more than one Host header")
    if _HOST.fullmatch(value) is None:
        raise Reject(400, "invalid Host header")


def origin_form(url: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The target to forward: an absolute-form one (RFC 9112 3.2.2, `GET http://h/x`) becomes
    its path and query, its authority the only Host (in `headers`, changed in place)."""
    if url.startswith(b"/") or b"://" not in url[:12]:
        return url
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        # An absolute-form target llhttp let through but cannot split (e.g. "http://h%0d%0a/").
        raise Reject(400, "invalid request target") from None
    authority = parsed.host or b""
    if b":" in authority:  # an IPv6 literal: llhttp hands it over without its brackets
        authority = b"[" + authority + b"]"
    if parsed.port:
        authority += b":%d" % parsed.port
    headers[:] = [(n, v) for n, v in headers if n != b"host"]
    headers.append((b"host", authority))
    target = parsed.path or b"/"
    if parsed.query:
        target += b"?" + parsed.query
    return target


def refusal(status: int, detail: str, request_id: bytes, full_errors: bool) -> bytes:
    """The whole response refusing a request: lb's JSON error body, which says only a fixed
    sentence (SPEC 3) unless `full_errors`, and the connection closed."""
    text = public_detail("bad_request", detail, full_errors)
    body = error_body("bad_request", text, request_id)
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
    for name, value in error_headers(body, request_id):
        head += b"%s: %s\r\n" % (name, value)
    return head + b"connection: close\r\n\r\n" + body

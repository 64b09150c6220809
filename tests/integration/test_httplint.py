"""Every kind of response lb makes itself passes httplint (a maintained HTTP message linter).

A real `lb serve` over real sockets: its errors (404, 502, 503, 504, 429, and the 400, 408, 414
and 431 of its own HTTP protocol), the cache's hits, 304s, ranges (206, 416) and only-if-cached
misses, a route's redirects (301, 302), the admin API's answers (JSON, errors, 404, 405, a
redirect), the metrics and the dashboard. A backend's own response relayed as is is not lb's
to lint.

Notes that stay, on purpose (`STATUS_NOTES`): httplint's notes on what a status code means,
not on how the message is made: `STATUS_BAD_REQUEST` (warning) on a 400 and
`STATUS_URI_TOO_LONG` (rated bad: "the server won't accept a URI this long") on the 414 the SPEC
requires for a target over 8 KiB. No other warning is allowed.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from httplint import HttpResponseLinter
from httplint.note import Note, levels

from lb.proxy.errors import DETAIL
from servers import RawResponse, raw_request, wait_until

TOKEN = "lint-token"
STATUS_NOTES = frozenset({"STATUS_BAD_REQUEST", "STATUS_URI_TOO_LONG"})


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connections are refused


def get(port: int, target: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += list(headers)
    if body or method in ("POST", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def lint(response: RawResponse) -> list[Note]:
    """httplint's notes on `response` (and their subnotes), as lb sent it."""
    version, _, rest = response.status_line.partition(" ")
    status, _, phrase = rest.partition(" ")
    linter = HttpResponseLinter()
    linter.process_response_topline(version.encode(), status.encode(), phrase.encode())
    linter.process_headers(
        [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    )
    linter.feed_content(response.body)
    linter.finish_content(True)
    notes: list[Note] = []
    pending = list(linter.notes)
    while pending:
        note = pending.pop()
        notes.append(note)
        pending.extend(note.subnotes)
    return notes


@pytest.fixture
def responses(start_backends, lb_process) -> dict[str, RawResponse]:  # type: ignore[no-untyped-def]
    """One of each kind of response lb makes, from a real `lb serve`."""
    (cached, cache_server), (slow, slow_server) = start_backends(2)
    slow.release.clear()
    dead = refused_port()
    config: dict[str, Any] = {
        "pools": {
            "cache": {"backends": [cache_server.url]},
            "dead": {"backends": [f"http://127.0.0.1:{dead}"]},
            "empty": {"backends": [{"url": "http://127.0.0.1:9", "weight": 0}]},
            "slow": {"backends": [slow_server.url], "timeouts": {"read": "200ms"}},
        },
        "routes": [
            {"path_prefix": "/cache", "pool": "cache"},
            {"path_prefix": "/dead", "pool": "dead"},
            {"path_prefix": "/empty", "pool": "empty"},
            {"path_prefix": "/slow", "pool": "slow", "strip_prefix": True},
            {"path_prefix": "/limited", "pool": "cache", "rate_limit": {"rate": 0.01, "burst": 1}},
            {"path_prefix": "/moved", "redirect": {"to": "https://{host}{path}"}},
            {"path_prefix": "/found", "redirect": {"to": "/elsewhere", "status": 302}},
        ],
        "cache": {"store": "memory"},
        "admin": {"token": TOKEN},
        "trusted_proxies": ["127.0.0.1/32"],
        "logging": {"access_log": False},
        "server": {"header_timeout": "1s"},
    }
    lb = lb_process(config)
    port = lb.port
    auth = f"Authorization: Bearer {TOKEN}"
    out: dict[str, RawResponse] = {}

    def ask(name: str, request: bytes) -> RawResponse:
        out[name] = raw_request(port, request)
        return out[name]

    ask("404 no_route", get(port, "/elsewhere"))
    ask("301 redirect", get(port, "/moved/x?y=1"))
    ask("302 redirect", get(port, "/found"))
    ask("502 bad_gateway", get(port, "/dead"))
    ask("503 no_backend", get(port, "/empty"))
    ask("504 timeout", get(port, "/slow/hang"))
    slow.release.set()
    raw_request(port, get(port, "/limited/x"))
    ask("429 rate_limited", get(port, "/limited/x"))
    ask("400 bad_request", get(port, "/x", "Host: second.example"))
    ask("414 bad_request", get(port, "/" + "a" * 9000))
    ask("431 bad_request", get(port, "/x", "X-Big: " + "b" * 33_000))
    unfinished = get(port, "/x").removesuffix(b"\r\n")  # the head never ends: 408 after 1 s
    ask("408 bad_request", unfinished)
    # The cache: a hit, and a 304 made from the stored response.
    stored = "/cache/page?h=Cache-Control:max-age=300&h=ETag:%22v1%22"
    raw_request(port, get(port, stored))
    wait_until(lambda: raw_request(port, get(port, stored)).header("x-cache") == "HIT", 10)
    ask("200 cache hit", get(port, stored))
    ask("304 from the cache", get(port, stored, 'If-None-Match: "v1"'))
    ask("206 range from the cache", get(port, stored, "Range: bytes=0-3"))
    ask("416 range from the cache", get(port, stored, "Range: bytes=100000-"))
    ask("504 only-if-cached", get(port, "/cache/never-stored", "Cache-Control: only-if-cached"))
    # The admin API.
    ask("200 healthz", get(port, "/_lb/healthz"))
    ask("503 readyz (a pool without backends)", get(port, "/_lb/readyz"))
    ask("200 status", get(port, "/_lb/status", auth))
    backend = f"/_lb/pools/cache/backends/{cache_server.url[7:]}"
    patch = json.dumps({"weight": 2}).encode()
    ask("200 PATCH backend", get(port, backend, auth, method="PATCH", body=patch))
    backend = f"/_lb/pools/cache/backends/{cache_server.url[7:]}"
    ask("400 PATCH bad body", get(port, backend, auth, method="PATCH", body=b"{"))
    ask("404 PATCH no backend", get(port, "/_lb/pools/cache/backends/x", auth, method="PATCH"))
    ask("200 reload", get(port, "/_lb/reload", auth, method="POST"))
    ask("401 admin", get(port, "/_lb/status"))
    ask("403 admin", get(port, "/_lb/status", "X-Forwarded-For: 203.0.113.9"))
    ask("404 admin", get(port, "/_lb/nothing-here", auth))
    ask("405 admin", get(port, "/_lb/status", auth, method="DELETE"))
    ask("307 admin trailing slash", get(port, "/_lb/status/", auth))
    ask("200 metrics", get(port, "/_lb/metrics", auth))
    ask("200 dashboard", get(port, "/_lb/dashboard", auth))
    ask("401 dashboard login", get(port, "/_lb/dashboard"))
    return out


def test_every_response_lb_makes_passes_httplint(responses: dict[str, RawResponse]) -> None:
    report = []
    for name, response in responses.items():
        assert response.status == int(name.split()[0]), (name, response.status, response.body)
        for note in lint(response):
            kind = type(note).__name__
            if note.level in (levels.BAD, levels.WARN) and kind not in STATUS_NOTES:
                report.append(f"{name}: {note.level.value} {kind}: {note.summary}")
    assert not report, "\n".join(report)


def test_every_error_body_says_its_fixed_sentence(responses: dict[str, RawResponse]) -> None:
    # SPEC 3: whichever layer made it (proxy, cache, rate limit, lb's HTTP protocol).
    errors = 0
    for name, response in responses.items():
        if response.header("content-type") != "application/json" or response.status < 400:
            continue
        body = response.json()
        # The admin's errors speak to operators, in their own words (with a request id too).
        admin = "admin" in name or "PATCH" in name
        if "request_id" in body and not admin:
            errors += 1
            assert body["detail"] == DETAIL[body["error"]], name
    assert errors == 10

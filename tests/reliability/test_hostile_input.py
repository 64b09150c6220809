"""Hostile clients: smuggling, absolute-form targets, spoofed forwarding headers, CR/LF
injection. Each attack goes through a real balancer to a raw backend that counts exactly what
reaches it (tests/rawbackend.py), so "nothing got through" is measured, not assumed."""

from __future__ import annotations

import json
import re
import socket

import httptools
import httpx
import pytest

from conftest import pool_config
from rawbackend import counting
from servers import raw_request, wait_until

REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


@pytest.fixture
def counted(start_balancer, raw_backend):  # type: ignore[no-untyped-def]
    backend = raw_backend(counting)
    lb = start_balancer(pool_config([backend.url]))
    return backend, lb


def exchange(port: int, data: bytes, idle: float = 0.3) -> list[tuple[int, bytes]]:
    """Send `data` on one connection; every response read (status, body) until the balancer
    closes the connection, or stays quiet for `idle` seconds after a response (5 s before the
    first)."""
    responses: list[tuple[int, bytes]] = []
    body = bytearray()

    class Callbacks:
        def on_message_begin(self) -> None:
            body.clear()

        def on_body(self, data: bytes) -> None:
            body.extend(data)

        def on_message_complete(self) -> None:
            if parser.get_status_code() >= 200:  # not an interim 100 Continue
                responses.append((parser.get_status_code(), bytes(body)))

    parser = httptools.HttpResponseParser(Callbacks())
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(data)
        while True:
            sock.settimeout(idle if responses else 5)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            parser.feed_data(chunk)
    return responses


# -- request smuggling ---------------------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLING = {
    "cl-te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two-content-lengths": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    b"Content-Length: 40\r\n\r\n" + SMUGGLED,
    "content-length-list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 40\r\n\r\n"
    + SMUGGLED,
    "content-length-plus": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +40\r\n\r\n"
    + SMUGGLED,
    "content-length-negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
    + SMUGGLED,
    "content-length-overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 18446744073709551617\r\n\r\n" + SMUGGLED,
    "chunked-then-identity": b"POST /echo HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "xchunked": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "te-space-before-colon": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
    b"Content-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-twice": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-vertical-tab": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n"
    b"Content-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "obs-folded-te": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
    b" chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "obs-folded-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n 40\r\n\r\n" + SMUGGLED,
    "chunk-size-overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"10000000000000001\r\nA\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-size-bad-char": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4g\r\nAAAA\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-data-overrun": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nAAAA\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-bare-lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\nAAAA\n0\n\n" + SMUGGLED,
    "chunk-extension-lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;x\nAAAA\r\n0\r\n\r\n" + SMUGGLED,
    "header-bare-lf": b"POST /echo HTTP/1.1\r\nHost: x\nContent-Length: 40\r\n\r\n" + SMUGGLED,
    "te-in-http10": b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "nul-in-te": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x00\r\n"
    b"Content-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    # Valid framing whose body looks like a request: it must arrive as a body, once.
    "request-shaped-body": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    % len(SMUGGLED)
    + SMUGGLED,
    "request-shaped-chunk": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n" % len(SMUGGLED)
    + SMUGGLED
    + b"\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("attack", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_never_reaches_the_backend_as_two_requests(counted, attack: bytes) -> None:  # type: ignore[no-untyped-def]
    backend, lb = counted
    responses = exchange(lb.port, attack)
    forwarded = [r for r in responses if r[0] == 200]
    rejected = [r for r in responses if r[0] == 400]
    assert len(forwarded) + len(rejected) == len(responses), responses
    # The connection that carried the attack, then others, reuse lb's backend connection: a
    # request hidden in a body would surface there as an extra request or a stolen answer.
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        after = [client.get("/after").text for _ in range(3)]
    assert all(text.endswith(" /after") for text in after), after
    urls = [r["url"] for r in backend.requests]
    assert b"/smuggled" not in urls
    assert urls.count(b"/echo") == len(forwarded) <= 1
    assert urls.count(b"/after") == 3
    if rejected:
        assert not forwarded  # once lb has said 400 it has forwarded nothing


def test_request_shaped_bodies_arrive_as_bodies(counted) -> None:  # type: ignore[no-untyped-def]
    backend, lb = counted
    for name in ("request-shaped-body", "request-shaped-chunk"):
        responses = exchange(lb.port, SMUGGLING[name])
        assert [status for status, _ in responses] == [200], name
    assert [r["body"] for r in backend.requests] == [SMUGGLED, SMUGGLED]


def test_pipelined_requests_are_answered_in_order_each_once(counted) -> None:  # type: ignore[no-untyped-def]
    backend, lb = counted
    data = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    responses = exchange(lb.port, data)
    assert [body.split(b" ")[-1] for _, body in responses] == [b"/p%d" % i for i in range(5)]
    assert [r["url"] for r in backend.requests] == [b"/p%d" % i for i in range(5)]


# -- absolute-form and other targets that name a host ------------------------------------------


@pytest.fixture
def decoy(raw_backend):  # type: ignore[no-untyped-def]
    """A listening port that is not a backend: nothing may ever connect to it."""
    return raw_backend(counting)


def test_targets_naming_another_host_never_reach_it(counted, decoy) -> None:  # type: ignore[no-untyped-def]
    backend, lb = counted
    here = b"127.0.0.1:%d" % decoy.port
    attacks = [
        b"GET http://%s/x HTTP/1.1\r\nHost: %s\r\n\r\n" % (here, here),
        b"GET https://%s/x HTTP/1.1\r\n\r\n" % here,
        b"GET http://%s HTTP/1.1\r\n\r\n" % here,
        b"GET http://user:pw@%s/x HTTP/1.1\r\n\r\n" % here,
        b"GET http://localhost:%d/x HTTP/1.1\r\n\r\n" % decoy.port,
        b"GET http://[::1]:%d/x HTTP/1.1\r\n\r\n" % decoy.port,
        b"GET ws://%s/x HTTP/1.1\r\n\r\n" % here,
        b"GET //%s/x HTTP/1.1\r\nHost: %s\r\n\r\n" % (here, here),
        b"GET /x HTTP/1.1\r\nHost: %s\r\nX-Forwarded-Host: %s\r\n\r\n" % (here, here),
        b"GET /x HTTP/1.1\r\nHost: %s\r\nForwarded: host=%s\r\n\r\n" % (here, here),
        b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (here, here),
        b"OPTIONS * HTTP/1.1\r\nHost: %s\r\n\r\n" % here,
    ]
    for attack in attacks:
        responses = exchange(lb.port, attack)
        assert len(responses) == 1, attack
        assert responses[0][0] in (200, 400), (attack, responses)
    assert decoy.connections == 0
    # What was forwarded went to the configured backend, with a valid Host.
    hosts = [dict(r["headers"])[b"host"] for r in backend.requests]
    assert b"[::1]:%d" % decoy.port in hosts  # IPv6 authority keeps its brackets
    assert all(b"@" not in host and b"\r" not in host for host in hosts)


# -- spoofed forwarding headers ------------------------------------------------------------------

SPOOFS = [
    {"x-forwarded-for": "203.0.113.1"},
    {"x-forwarded-for": "203.0.113.2, 10.0.0.1"},
    {"x-forwarded-for": "10.0.0.7"},
    {"x-real-ip": "203.0.113.3"},
    {"forwarded": "for=203.0.113.4"},
    {"x-forwarded-for": b"garbage, caf\xe9"},
    {"x-forwarded-for": "::1"},
]


def limited_config(urls: list[str], log: str, trusted: list[str]) -> dict[str, object]:
    config = pool_config(urls)
    config["trusted_proxies"] = trusted
    config["rate_limit"] = {"rate": 0.001, "burst": 3, "key": "client_ip"}
    config["logging"] = {"access_log": True, "file": log}
    return config


def read_log(path: str, lines: int) -> list[dict[str, object]]:
    def ready() -> list[dict[str, object]] | None:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return records if len(records) >= lines else None

    return wait_until(ready)  # type: ignore[no-any-return]


def test_spoofed_forwarding_headers_change_neither_rate_limit_key_nor_logged_ip(
    start_backends, start_balancer, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    log = str(tmp_path / "access.log")
    # Trusted proxies are configured, but the peer (127.0.0.1) is not one of them.
    lb = start_balancer(limited_config([server.url], log, ["10.0.0.0/8"]))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        statuses = [client.get("/echo", headers=h).status_code for h in SPOOFS]
    assert statuses == [200] * 3 + [429] * (len(SPOOFS) - 3)
    records = read_log(log, len(SPOOFS))
    assert {r["client_ip"] for r in records} == {"127.0.0.1"}
    (store,) = lb.app.generation.rate_limits.stores.values()
    assert len(store) == 1


def test_forwarding_headers_from_a_trusted_proxy_are_believed(
    start_backends, start_balancer, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The control: the same test sees the header when the peer is trusted."""
    ((backend, server),) = start_backends(1)
    log = str(tmp_path / "access.log")
    lb = start_balancer(limited_config([server.url], log, ["127.0.0.0/8"]))
    chains = [f"203.0.113.{i}" for i in range(1, 7)]
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        statuses = [client.get("/echo", headers={"x-forwarded-for": c}).status_code for c in chains]
        # A client behind the trusted proxy prepending its own guesses: the rightmost untrusted
        # hop (what the proxy saw) is the key, so it is still limited after its burst.
        spoofed = [
            client.get("/echo", headers={"x-forwarded-for": f"198.51.100.{i}, 192.0.2.9"})
            for i in range(5)
        ]
    assert statuses == [200] * 6
    assert [r.status_code for r in spoofed] == [200] * 3 + [429] * 2
    records = read_log(log, 11)
    assert [r["client_ip"] for r in records] == chains + ["192.0.2.9"] * 5


def test_distinct_peers_get_distinct_buckets(start_backends, start_balancer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Peers are told apart by address (loopback has a /8 of them): the key is the peer."""
    ((backend, server),) = start_backends(1)
    lb = start_balancer(limited_config([server.url], str(tmp_path / "log"), []))
    for last in (2, 3, 4):
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{last}")
        with httpx.Client(base_url=lb.url, transport=transport, timeout=10) as client:
            statuses = [client.get("/echo").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
    records = read_log(str(tmp_path / "log"), 12)
    assert [r["client_ip"] for r in records] == [f"127.0.0.{i}" for i in (2, 3, 4) for _ in "1234"]


# -- CR/LF injection -----------------------------------------------------------------------------

INJECTIONS = {
    "bare-cr-in-value": b"X-A: a\rX-Injected: 1\r\n",
    "bare-lf-in-value": b"X-A: a\nX-Injected: 1\r\n",
    "obs-fold": b"X-A: a\r\n X-Injected: 1\r\n",
    "nul-in-value": b"X-A: a\x00X-Injected: 1\r\n",
    "cr-in-name": b"X-A\r: 1\r\n",
    "space-in-name": b"X-A X-Injected: 1\r\n",
    "request-id-with-cr": b"X-Request-ID: abc\rX-Injected: 1\r\n",
    "host-with-lf": b"Host: a\nX-Injected: 1\r\n",
}


@pytest.mark.parametrize("header", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_cr_lf_injection_in_a_request_header_is_refused(counted, header: bytes) -> None:  # type: ignore[no-untyped-def]
    backend, lb = counted
    response = raw_request(
        lb.port, b"GET /x HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n", check_closed=True
    )
    assert response.status == 400 and response.closed
    assert backend.requests == []


def test_nothing_forwarded_or_echoed_carries_cr_lf(counted) -> None:  # type: ignore[no-untyped-def]
    """Values that are legal but odd (obs-text, encoded CR/LF, long or invalid request IDs) pass
    or are replaced; no header lb writes, either way, ever holds a control character."""
    backend, lb = counted
    requests = [
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9 \xff\r\n\r\n",
        b"GET /%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-Request-ID: %0d%0aX-Injected\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + b"a" * 129 + b"\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-Request-ID: caf\xe9\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\tb\r\n\r\n",
        b"GET http://h%0d%0aX-Injected:1/x HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
    ]
    echoed = []
    for data in requests:
        response = raw_request(lb.port, data)
        assert response.status in (200, 400), data
        echoed.append(response.header("x-request-id"))
    for request in backend.requests:
        names = [name for name, _ in request["headers"]]
        assert b"x-injected" not in names
        for name, value in request["headers"]:
            assert not set(value) & {0, 10, 13}, (name, value)
        (request_id,) = [v for n, v in request["headers"] if n == b"x-request-id"]
        assert REQUEST_ID.fullmatch(request_id)
    assert b"caf\xe9 \xff" in [dict(r["headers"]).get(b"x-a") for r in backend.requests]
    assert all(rid is not None and REQUEST_ID.fullmatch(rid.encode()) for rid in echoed)


def test_backend_response_header_with_cr_is_not_passed_on(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    from rawbackend import answer_each

    reply = b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: injected=1\r\nContent-Length: 0\r\n\r\n"
    backend = raw_backend(answer_each(lambda conn, n: reply))
    lb = start_balancer(pool_config([backend.url]))
    response = raw_request(lb.port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 502
    assert response.header("set-cookie") is None


# -- Host ----------------------------------------------------------------------------------------

BAD_HOSTS = {
    "two-hosts": b"Host: a.example\r\nHost: b.example\r\n",
    "two-hosts-differing-case": b"Host: a.example\r\nhOST: b.example\r\n",
    "space-in-host": b"Host: a.example b.example\r\n",
    "slash-in-host": b"Host: a.example/x\r\n",
    "at-in-host": b"Host: user@a.example\r\n",
    "obs-text-in-host": b"Host: caf\xe9.example\r\n",
}


@pytest.mark.parametrize("host", BAD_HOSTS.values(), ids=BAD_HOSTS.keys())
def test_a_second_or_invalid_host_is_refused(counted, host: bytes) -> None:  # type: ignore[no-untyped-def]
    """RFC 9112 3.2: two Hosts would let lb route by one while the backend reads the other."""
    backend, lb = counted
    response = raw_request(lb.port, b"GET /x HTTP/1.1\r\n" + host + b"\r\n", check_closed=True)
    assert response.status == 400 and response.closed
    assert backend.requests == []


def test_connection_cannot_strip_host_or_content_length(counted) -> None:  # type: ignore[no-untyped-def]
    backend, lb = counted
    response = raw_request(
        lb.port,
        b"POST /x HTTP/1.1\r\nHost: shop.example\r\nConnection: host, content-length, x-a\r\n"
        b"X-A: 1\r\nContent-Length: 5\r\n\r\nhello",
    )
    assert response.status == 200
    (request,) = backend.requests
    headers = dict(request["headers"])
    assert headers[b"host"] == b"shop.example"
    assert headers[b"content-length"] == b"5" and request["body"] == b"hello"
    assert b"x-a" not in headers


def test_an_empty_host_is_replaced_by_the_backend_authority(counted) -> None:  # type: ignore[no-untyped-def]
    backend, lb = counted
    assert raw_request(lb.port, b"GET /x HTTP/1.1\r\nHost:\r\n\r\n").status == 200
    (request,) = backend.requests
    hosts = [v for n, v in request["headers"] if n == b"host"]
    assert hosts == [b"127.0.0.1:%d" % backend.port]


# -- the access log ------------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_every_request_is_one_log_line_whatever_its_target(
    start_balancer, raw_backend, tmp_path, log_format: str
) -> None:  # type: ignore[no-untyped-def]
    """Quotes, backslashes and encoded CR/LF in a target stay inside one line; requests refused
    at the edge (400, 414, 431) are logged too, with their status and cause."""
    backend = raw_backend(counting)
    log = tmp_path / "access.log"
    config = pool_config([backend.url])
    config["logging"] = {"access_log": True, "format": log_format, "file": str(log)}
    lb = start_balancer(config)
    accepted = [b'/x"y', b"/x\\y", b"/x%0d%0aInjected:%201", b"/x'y", b"/x?a=%22b%20c%22"]
    refused = [
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ]
    for target in accepted:
        response = raw_request(lb.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response.status == 200
    statuses = [raw_request(lb.port, data).status for data in refused]
    assert statuses == [400, 400, 414, 431, 400]

    total = len(accepted) + len(refused)
    lines = wait_until(lambda: (t := log.read_text().splitlines()) and len(t) >= total and t)
    assert len(lines) == total
    if log_format == "json":
        records = [json.loads(line) for line in lines]
        assert [r["path"].encode("latin-1") for r in records[: len(accepted)]] == accepted
        assert [r["status"] for r in records[len(accepted) :]] == statuses
        assert all(r["error"] for r in records[len(accepted) :])
        assert all(REQUEST_ID.fullmatch(r["request_id"].encode()) for r in records)
    else:
        assert all(line.startswith("time=") and "\n" not in line for line in lines)

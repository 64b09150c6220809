"""PROXY protocol v1 and v2 on lb's listener (SPEC section 11), with a real client writing the
header bytes on raw sockets: the address it carries is the client IP everywhere, and any other
connection (no header, a malformed one, an untrusted peer, a header trickled in) is closed."""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import pool_config
from lb.config import ServerTLSConfig
from lb.control.supervisor import TLSAfterProxyConfig
from lb.server import uvicorn_options
from pki import CA
from servers import read_response, wait_until
from unit.test_proxyproto import v2

REQUEST = b"GET /pp HTTP/1.1\r\nHost: lb\r\n\r\n"
V1 = b"PROXY TCP4 198.51.100.9 10.0.0.1 40000 80\r\n"


def config(backend_url: str, **server: Any) -> dict[str, Any]:
    cfg = pool_config([backend_url])
    cfg["server"] = {"proxy_protocol": True, "header_timeout": "1s", **server}
    cfg["trusted_proxies"] = ["127.0.0.1/32"]
    return cfg


def send(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), 5)
    sock.sendall(data)
    return sock


def closed_without_answer(sock: socket.socket, within: float = 5.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


@pytest.fixture
def setup(start_backends: Any, start_balancer: Any, tmp_path: Path) -> Any:
    def start(**server: Any) -> Any:
        app, backend = start_backends(1)[0]
        cfg = config(backend.url, **server)
        cfg["logging"] = {"file": str(tmp_path / "access.log")}
        cfg["rate_limit"] = {"rate": 0.01, "burst": 1}
        return app, start_balancer(cfg)

    return start


def forwarded_for(app: Any) -> str:
    return dict(app.seen[-1]["headers"])["x-forwarded-for"]


def test_v1_and_v2_give_the_client_address_everywhere(setup: Any, tmp_path: Path) -> None:
    app, lb = setup()
    with send(lb.port, V1 + REQUEST) as sock:
        assert read_response(sock).status == 200
        assert forwarded_for(app) == "198.51.100.9"
        # Keep-alive: the header opened the connection, not each request.
        sock.sendall(REQUEST)
        assert read_response(sock).status == 429  # the rate limit keys on that client too
    with send(lb.port, v2(src="203.0.113.7") + REQUEST) as sock:
        assert read_response(sock).status == 200  # another client: its own budget
        assert forwarded_for(app) == "203.0.113.7"
    with send(lb.port, v2(family=2, src="2001:db8::7", dst="2001:db8::1") + REQUEST) as sock:
        assert read_response(sock).status == 200
        assert forwarded_for(app) == "2001:db8::7"
    log = tmp_path / "access.log"
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 4)
    ips = [json.loads(line)["client_ip"] for line in log.read_text().splitlines()]
    assert ips[:4] == ["198.51.100.9", "198.51.100.9", "203.0.113.7", "2001:db8::7"]


def test_local_and_unknown_keep_the_peer(setup: Any) -> None:
    app, lb = setup()
    with send(lb.port, v2(command=0, family=0, transport=0) + REQUEST) as sock:
        assert read_response(sock).status == 200
        assert forwarded_for(app) == "127.0.0.1"


def test_header_sent_in_pieces(setup: Any) -> None:
    app, lb = setup()
    sock = send(lb.port, V1[:5])
    for piece in (V1[5:20], V1[20:], REQUEST):
        time.sleep(0.05)
        sock.sendall(piece)
    assert read_response(sock).status == 200
    assert forwarded_for(app) == "198.51.100.9"
    sock.close()


@pytest.mark.parametrize(
    "data",
    [
        REQUEST,  # no header
        b"PROXY TCP4 198.51.100.9 10.0.0.1 40000\r\n" + REQUEST,
        b"PROXY " + b"9" * 200 + b"\r\n",
        v2(version=1) + REQUEST,
        v2(transport=2) + REQUEST,
    ],
)
def test_malformed_or_missing_header_is_closed(setup: Any, data: bytes) -> None:
    app, lb = setup()
    assert closed_without_answer(send(lb.port, data))
    assert app.seen == []


def test_untrusted_peer_is_closed(start_backends: Any, start_balancer: Any) -> None:
    app, backend = start_backends(1)[0]
    cfg = config(backend.url)
    cfg["trusted_proxies"] = ["10.0.0.0/8"]
    lb = start_balancer(cfg)
    assert closed_without_answer(send(lb.port, V1 + REQUEST))
    assert app.seen == []


def test_slowloris_header_is_bounded_by_header_timeout(setup: Any) -> None:
    app, lb = setup()
    sock = send(lb.port, b"PROXY TCP4 198.")
    start = time.monotonic()
    sock.settimeout(0.2)
    closed = False
    while time.monotonic() - start < 5 and not closed:
        try:
            sock.sendall(b"5")  # a byte now and then, never the whole line
            closed = sock.recv(1) == b""
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
    sock.close()
    assert closed
    assert time.monotonic() - start < 4  # header_timeout is 1s


async def forwarded_for_echo(scope: Any, receive: Any, send: Any) -> None:
    """A WebSocket backend that answers each message with the X-Forwarded-For it was given."""
    await receive()
    await send({"type": "websocket.accept"})
    xff = dict(scope["headers"]).get(b"x-forwarded-for", b"").decode()
    while (await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": xff})


def test_websocket_gets_the_client_address(start_server: Any, start_balancer: Any) -> None:
    from websockets.sync.client import connect

    backend = start_server(forwarded_for_echo, lifespan="off")
    lb = start_balancer(config(backend.url))
    sock = send(lb.port, V1)
    with connect(f"ws://127.0.0.1:{lb.port}/ws", sock=sock) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "198.51.100.9"


def test_tls_after_the_proxy_header(ca: CA, start_backends: Any, start_balancer: Any) -> None:
    app, backend = start_backends(1)[0]
    cert, key = ca.issue()
    tls = ServerTLSConfig(str(cert), str(key), None)
    options = uvicorn_options(host="", port=0, tls=tls, proxy_protocol=True)
    ssl_options = {k: v for k, v in options.items() if k.startswith("ssl_")}
    lb = start_balancer(config(backend.url), config_class=TLSAfterProxyConfig, **ssl_options)
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    raw = send(lb.port, v2(src="192.0.2.44"))
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(REQUEST)
        assert read_response(sock).status == 200  # type: ignore[arg-type]
    headers = dict(app.seen[-1]["headers"])
    assert headers["x-forwarded-for"] == "192.0.2.44"
    assert headers["x-forwarded-proto"] == "https"


@pytest.mark.parametrize(("workers", "tls"), [(1, False), (1, True), (2, True)])
def test_lb_serve(ca: CA, start_backends: Any, lb_process: Any, workers: int, tls: bool) -> None:
    """`lb serve` (uvloop; uvicorn's supervisor with two workers): v1 and v2, then TLS if on."""
    app, backend = start_backends(1)[0]
    cert, key = ca.issue()
    server = {"tls": {"cert_file": str(cert), "key_file": str(key)}} if tls else {}
    lb = lb_process(config(backend.url, **server), workers=workers, https=tls, wait=False)
    context = ssl.create_default_context(cafile=str(ca.cert_file))

    def status(header: bytes) -> int:
        try:
            sock = send(lb.port, header)
        except OSError:
            return 0
        if tls:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        with sock:
            sock.sendall(REQUEST)
            return read_response(sock).status  # type: ignore[arg-type, no-any-return]

    wait_until(lambda: lb.process.poll() is None and status(V1) == 200, 20)
    assert forwarded_for(app) == "198.51.100.9"
    assert status(v2(src="192.0.2.45")) == 200
    assert forwarded_for(app) == "192.0.2.45"
    # Without the header: closed.
    with pytest.raises((ssl.SSLError, OSError, AssertionError)):
        status(b"")

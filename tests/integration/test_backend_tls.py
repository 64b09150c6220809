"""TLS to backends per pool (SPEC section 11): a private CA, a client certificate, the name sent
and verified, or no verification; health checks and WebSockets use the same settings, and a
certificate the pool does not accept is a plain 502 with the cause in the log."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps import Backend
from conftest import pool_config
from lb.tls import ClientTLS
from lb.transport import Transport, origin_of
from pki import CA
from servers import wait_until

FAST = {"path": "/health", "interval": "100ms", "timeout": "1s", "unhealthy_threshold": 1}


@pytest.fixture
def tls_backend(ca: CA, start_server: Any):  # type: ignore[no-untyped-def]
    """`tls_backend(names=..., client_ca=None)` -> (app, https url) served with a cert from `ca`."""

    def start(names: tuple[str, ...] = ("127.0.0.1",), client_ca: Path | None = None) -> Any:
        cert, key = ca.issue(names[0], names=names)
        options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        if client_ca is not None:
            options.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
        app = Backend("tls")
        server = start_server(app, **options)
        return app, server.url.replace("http://", "https://")

    return start


def test_private_ca(ca: CA, tls_backend: Any, start_balancer: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, "lb")
    app, url = tls_backend()
    lb = start_balancer(pool_config([url], tls={"ca_file": str(ca.cert_file)}))
    assert httpx.get(lb.url + "/x").status_code == 200
    assert app.seen[-1]["path"] == "/x"
    # The system's CAs do not know this one: a plain 502, the cause in the log.
    other = start_balancer(pool_config([url]))
    response = httpx.get(other.url + "/y")
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"
    assert "CERTIFICATE_VERIFY_FAILED" not in response.text  # the cause is for the log
    causes = [r.getMessage() for r in caplog.records if "upstream error" in r.getMessage()]
    assert any("CERTIFICATE_VERIFY_FAILED" in cause for cause in causes), causes


def test_client_certificate(ca: CA, tls_backend: Any, start_balancer: Any) -> None:
    _, url = tls_backend(client_ca=ca.cert_file)
    cert, key = ca.issue("lb", names=("lb",), client=True)
    tls = {"ca_file": str(ca.cert_file), "cert_file": str(cert), "key_file": str(key)}
    lb = start_balancer(pool_config([url], tls=tls))
    assert httpx.get(lb.url + "/").status_code == 200
    without = start_balancer(pool_config([url], tls={"ca_file": str(ca.cert_file)}))
    assert httpx.get(without.url + "/").status_code == 502


def test_server_name(ca: CA, tls_backend: Any, start_balancer: Any) -> None:
    _, url = tls_backend(names=("backend.internal",))
    tls = {"ca_file": str(ca.cert_file), "server_name": "backend.internal"}
    lb = start_balancer(pool_config([url], tls=tls))
    assert httpx.get(lb.url + "/").status_code == 200
    # Verified against the address in the URL, the certificate does not match.
    unnamed = start_balancer(pool_config([url], tls={"ca_file": str(ca.cert_file)}))
    assert httpx.get(unnamed.url + "/").status_code == 502


def test_verify_false_warns(
    tmp_path: Path, tls_backend: Any, start_balancer: Any, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, "lb.tls")
    _, url = tls_backend()  # signed by a CA this pool does not know
    lb = start_balancer(pool_config([url], tls={"verify": False}))
    assert httpx.get(lb.url + "/").status_code == 200
    assert any("tls.verify is false" in r.getMessage() for r in caplog.records)


def test_health_checks_use_the_pool_tls(ca: CA, tls_backend: Any, start_balancer: Any) -> None:
    _, url = tls_backend(client_ca=ca.cert_file)
    cert, key = ca.issue("lb", names=("lb",), client=True)
    tls = {"ca_file": str(ca.cert_file), "cert_file": str(cert), "key_file": str(key)}
    lb = start_balancer(pool_config([url], tls=tls, health_check=FAST))

    def checks(result: str) -> float:
        text = httpx.get(lb.url + "/_lb/metrics").text
        lines = [ln for ln in text.splitlines() if ln.startswith("lb_health_checks_total{")]
        return sum(float(ln.split()[-1]) for ln in lines if f'result="{result}"' in ln)

    wait_until(lambda: checks("success") >= 3)
    assert checks("error") == 0
    assert httpx.get(lb.url + "/").status_code == 200


def test_websocket_to_a_tls_backend(ca: CA, tls_backend: Any, start_balancer: Any) -> None:
    from websockets.sync.client import connect

    _, url = tls_backend(client_ca=ca.cert_file)
    cert, key = ca.issue("lb", names=("lb",), client=True)
    tls = {"ca_file": str(ca.cert_file), "cert_file": str(cert), "key_file": str(key)}
    lb = start_balancer(pool_config([url], tls=tls))
    with connect(f"ws://127.0.0.1:{lb.port}/ws") as ws:
        ws.send("hello")
        assert ws.recv(timeout=5).endswith(":hello")


async def test_changed_settings_retire_open_connections(
    ca: CA, tmp_path: Path, tls_backend: Any
) -> None:
    _, url = tls_backend()
    origin = origin_of(url)
    transport = Transport()
    try:
        transport.set_tls(origin, ClientTLS(ca_file=str(ca.cert_file)))
        response = await transport.handle_async_request(httpx.Request("GET", url + "/"))
        await response.aread()
        assert response.status_code == 200
        # Renewed files, same settings: the idle connection is still used.
        transport.set_tls(origin, ClientTLS(ca_file=str(ca.cert_file)))
        assert "idle: 1" in repr(transport)
        # Another CA: the connection verified under the old one is not reused.
        stranger = CA(tmp_path, "stranger")
        transport.set_tls(origin, ClientTLS(ca_file=str(stranger.cert_file)))
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(httpx.Request("GET", url + "/"))
    finally:
        await transport.aclose()

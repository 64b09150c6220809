"""TLS termination (SPEC section 11): lb serves HTTPS with certificates from a private CA,
requires client certificates when asked, and renews its certificate on reload without dropping
the connections it has."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import pool_config
from lb.config import ServerTLSConfig
from lb.server import uvicorn_options
from pki import CA, serial_of, serial_of_file
from programs import program
from servers import read_response, wait_until


def tls_options(cert: Path, key: Path, client_ca: Path | None = None) -> dict[str, Any]:
    """The uvicorn options `lb serve` adds for `server.tls`."""
    tls = ServerTLSConfig(str(cert), str(key), str(client_ca) if client_ca else None)
    options = uvicorn_options(host="127.0.0.1", port=0, tls=tls)
    return {k: v for k, v in options.items() if k.startswith("ssl_")}


def client_context(ca: CA, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    if cert is not None:
        context.load_cert_chain(*map(str, cert))
    return context


def tls_connect(port: int, context: ssl.SSLContext, alpn: list[str] | None = None) -> ssl.SSLSocket:
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), 5)
    return context.wrap_socket(raw, server_hostname="localhost")


def get(sock: ssl.SSLSocket, path: str = "/", method: str = "GET") -> Any:
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return read_response(sock)  # type: ignore[arg-type]


@pytest.fixture
def backend(start_backends):  # type: ignore[no-untyped-def]
    app, server = start_backends(1)[0]
    return app, server


def test_https_listener(ca: CA, backend: Any, start_balancer: Any) -> None:
    app, server = backend
    cert, key = ca.issue()
    lb = start_balancer(pool_config([server.url]), **tls_options(cert, key))
    url = f"https://localhost:{lb.port}/hello"
    with httpx.Client(verify=client_context(ca)) as client:
        response = client.get(url)
    assert response.status_code == 200
    headers = dict(app.seen[-1]["headers"])
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    # Modern defaults: TLS 1.2 or later, ALPN http/1.1 even to a client that prefers h2.
    with tls_connect(lb.port, client_context(ca), ["h2", "http/1.1"]) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert get(sock).status == 200
    old = client_context(ca)
    with warnings.catch_warnings():  # a TLS 1.1 client is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        tls_connect(lb.port, old).close()
    # Plain HTTP on the TLS port is refused, not served.
    with socket.create_connection(("127.0.0.1", lb.port), 5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.settimeout(5)
        assert not plain.recv(1024).startswith(b"HTTP/1.1 200")


def test_client_certificates(ca: CA, tmp_path: Path, backend: Any, start_balancer: Any) -> None:
    _, server = backend
    cert, key = ca.issue()
    lb = start_balancer(pool_config([server.url]), **tls_options(cert, key, ca.cert_file))
    url = f"https://localhost:{lb.port}/"
    good = ca.issue("client", names=("client",), client=True)
    with httpx.Client(verify=client_context(ca, good)) as client:
        assert client.get(url).status_code == 200
    stranger = CA(tmp_path, "stranger").issue("client", names=("client",), client=True)
    for context in (client_context(ca), client_context(ca, stranger)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            # TLS 1.3 reports a refused certificate on the first read, not in the handshake.
            with tls_connect(lb.port, context) as sock:
                get(sock)


def test_renewed_certificate_on_reload_keeps_open_connections(
    ca: CA, backend: Any, start_balancer: Any, config_file: Any
) -> None:
    _, server = backend
    cert, key = ca.issue(stem="lb")
    path = config_file(pool_config([server.url]))
    lb = start_balancer(path, **tls_options(cert, key))
    context = client_context(ca)
    kept = tls_connect(lb.port, context)
    first = serial_of(kept.getpeercert(True) or b"")
    assert first == serial_of_file(cert)
    assert get(kept).status == 200

    renewed_cert, _ = ca.issue(stem="lb")  # the same files, rewritten by the renewal
    assert serial_of_file(renewed_cert) != first
    with httpx.Client(verify=client_context(ca)) as client:
        answer = client.post(f"https://localhost:{lb.port}/_lb/reload").json()
    assert answer["certificates_renewed"] == [str(cert)]

    with tls_connect(lb.port, client_context(ca)) as fresh:
        assert serial_of(fresh.getpeercert(True) or b"") == serial_of_file(renewed_cert)
        assert get(fresh).status == 200
    # The connection opened before the renewal still serves requests, on its certificate.
    assert get(kept).status == 200
    assert serial_of(kept.getpeercert(True) or b"") == first
    kept.close()


def test_broken_renewal_keeps_the_running_certificate(
    ca: CA, backend: Any, start_balancer: Any, config_file: Any
) -> None:
    _, server = backend
    cert, key = ca.issue(stem="lb")
    running = serial_of_file(cert)
    path = config_file(pool_config([server.url]))
    lb = start_balancer(path, **tls_options(cert, key))
    ca.issue(stem="other")[1].replace(key)  # a renewal caught half-way: new key, old cert
    with httpx.Client(verify=client_context(ca)) as client:
        answer = client.post(f"https://localhost:{lb.port}/_lb/reload")
        assert answer.status_code == 400, answer.text
        assert "does not match" in answer.text
    with tls_connect(lb.port, client_context(ca)) as sock:
        assert serial_of(sock.getpeercert(True) or b"") == running
        assert get(sock).status == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_lb_serve_tls_sighup_and_curl(ca: CA, backend: Any, lb_process: Any, workers: int) -> None:
    _, server = backend
    cert, key = ca.issue(stem="lb")
    config = pool_config([server.url])
    config["server"] = {"tls": {"cert_file": str(cert), "key_file": str(key)}}
    lb = lb_process(config, workers=workers, https=True)
    curl = [program("curl"), "-sS", "--cacert", str(ca.cert_file), "-o", "/dev/null"]
    url = f"https://localhost:{lb.port}/"
    done = subprocess.run([*curl, "-w", "%{http_code} %{http_version}", url], capture_output=True)
    assert done.stdout.decode() == "200 1.1", done.stderr
    renewed, _ = ca.issue(stem="lb")
    lb.process.send_signal(signal.SIGHUP)

    def serial() -> int:
        with tls_connect(lb.port, client_context(ca)) as sock:
            return serial_of(sock.getpeercert(True) or b"")

    # Every worker renews: new connections (spread over the workers) all see the new one.
    wait_until(lambda: all(serial() == serial_of_file(renewed) for _ in range(8)))


def test_lb_serve_ssl_flags_override_config(ca: CA, backend: Any, lb_process: Any) -> None:
    _, server = backend
    cert, key = ca.issue(stem="flags")
    lb = lb_process(
        pool_config([server.url]),
        args=("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)),
        https=True,
    )
    with httpx.Client(verify=client_context(ca)) as client:
        assert client.get(f"https://localhost:{lb.port}/").status_code == 200


def test_gunicorn_certfile(ca: CA, backend: Any, lb_process: Any) -> None:
    _, server = backend
    cert, key = ca.issue(stem="gunicorn")
    lb = lb_process(
        pool_config([server.url]),
        gunicorn=True,
        args=("--certfile", str(cert), "--keyfile", str(key)),
        https=True,
    )
    with tls_connect(lb.port, client_context(ca), ["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert get(sock).status == 200


def test_lb_serve_refuses_ssl_files_that_do_not_load(
    ca: CA, tmp_path: Path, config_file: Any, capsys: Any
) -> None:
    from lb.cli import main

    path = config_file(pool_config(["http://127.0.0.1:1"]))
    cert, _ = ca.issue()
    _, other_key = ca.issue()
    missing = str(tmp_path / "missing.pem")
    for args, expected in [
        (["--ssl-certfile", missing], "missing.pem: cannot read it"),
        (["--ssl-certfile", str(cert), "--ssl-keyfile", str(other_key)], "does not match"),
        (["--ssl-keyfile", str(other_key)], "--ssl-keyfile: needs --ssl-certfile"),
    ]:
        assert main(["serve", "-c", path, *args]) == 2
        assert expected in capsys.readouterr().err

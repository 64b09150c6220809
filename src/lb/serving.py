"""The uvicorn settings `lb serve` (and gunicorn's worker, the demo) run lb with: lb's own HTTP
protocol (`lb.server.HttpProtocol`), no Server/Date/proxy headers, lb's TLS context.
"""

from __future__ import annotations

from typing import Any

from lb.config import ServerTLSConfig
from lb.tls import uvicorn_context


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def uvicorn_options(
    *,
    host: str,
    port: int,
    workers: int = 1,
    graceful_timeout: float = 30.0,
    keepalive_timeout: float = 5.0,
    log_level: str = "info",
    tls: ServerTLSConfig | None = None,
    proxy_protocol: bool = False,
) -> dict[str, Any]:
    """uvicorn.Config keyword arguments for lb: its protocol, no Server/Date/proxy headers, and
    TLS with lb's context (`lb.tls.uvicorn_context`) when `tls` is given."""
    options = {
        "host": host,
        "port": port,
        "workers": workers if workers > 1 else None,
        "http": "lb.server:HttpProtocol",
        "loop": "uvloop" if _has_uvloop() else "asyncio",
        "lifespan": "on",
        "server_header": False,
        "date_header": False,
        "proxy_headers": False,
        "access_log": False,
        "timeout_graceful_shutdown": graceful_timeout,
        "timeout_keep_alive": keepalive_timeout,
        "log_level": log_level,
    }
    if tls is not None:
        options.update(
            ssl_certfile=tls.cert_file,
            ssl_keyfile=tls.key_file,
            ssl_ca_certs=tls.client_ca_file,
            ssl_context_factory=uvicorn_context,
        )
        if proxy_protocol:
            # The PROXY header comes before the TLS handshake: see lb.control.supervisor.
            options["tls_after_proxy"] = True
    return options

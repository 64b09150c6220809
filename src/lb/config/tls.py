"""Validation of `server.tls` and a pool's `tls`: the files are read and loaded, as lb will, so
that a wrong path, a key that does not match its certificate or a file that is not PEM fails
`lb check` with the key and the file named, not the first handshake."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from lb.config.fields import Problems, Section, describe, to_bool, to_str
from lb.config.model import PoolConfig, PoolTLSConfig, ServerTLSConfig
from lb.tls import ClientTLS, ServerTLS, TLSError


def read_server_tls(value: Any, path: str, problems: Problems) -> ServerTLSConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping with cert_file and key_file, got {describe(value)}")
        return None
    s = Section(value, path, problems, tuple(ServerTLSConfig.__dataclass_fields__))
    cert_file = s.require("cert_file", to_str)
    key_file = s.read_optional("key_file", None, to_str)
    client_ca_file = s.read_optional("client_ca_file", None, to_str)
    if cert_file is None or not s.valid("cert_file", "key_file", "client_ca_file"):
        return None
    try:
        ServerTLS(cert_file, key_file, client_ca_file)
    except TLSError as exc:
        problems.add(path, str(exc))
        return None
    return ServerTLSConfig(cert_file, key_file, client_ca_file)


def read_pool_tls(value: Any, path: str, problems: Problems) -> PoolTLSConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping, got {describe(value)}")
        return None
    d = PoolTLSConfig()
    s = Section(value, path, problems, tuple(PoolTLSConfig.__dataclass_fields__))
    config = PoolTLSConfig(
        ca_file=s.read_optional("ca_file", None, to_str),
        verify=s.read("verify", d.verify, to_bool),
        cert_file=s.read_optional("cert_file", None, to_str),
        key_file=s.read_optional("key_file", None, to_str),
        server_name=s.read_optional("server_name", None, to_str),
    )
    if config.key_file is not None and config.cert_file is None:
        s.error("key_file", "needs cert_file (the client certificate it belongs to)")
    if not s.valid(*PoolTLSConfig.__dataclass_fields__):
        return None
    try:
        client_tls(config)
    except TLSError as exc:
        problems.add(path, str(exc))
        return None
    return config


def client_tls(config: PoolTLSConfig) -> ClientTLS:
    """The context a pool's `tls` describes (raises TLSError)."""
    return ClientTLS(
        ca_file=config.ca_file,
        verify=config.verify,
        cert_file=config.cert_file,
        key_file=config.key_file,
        server_name=config.server_name,
    )


def check_shared_origins(pools: Mapping[str, PoolConfig], problems: Problems) -> None:
    """Connections to a backend are pooled by scheme, host and port, whatever pool asks: two
    pools that name the same https backend must agree on how to reach it."""
    seen: dict[str, tuple[str, PoolTLSConfig | None]] = {}
    for name, pool in pools.items():
        for backend in pool.backends:
            if not backend.url.startswith("https://"):
                continue
            parts = urlsplit(backend.url)
            origin = f"{parts.hostname}:{parts.port or 443}"
            first = seen.setdefault(origin, (name, pool.tls))
            if first[1] != pool.tls:
                problems.add(
                    f"pools.{name}.tls",
                    f"differs from pools.{first[0]}.tls, which reaches the same backend {origin}",
                )
                return

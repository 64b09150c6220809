"""Validation of the smaller top-level sections: cache, admin, metrics, logging, server and
discovery."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Literal

from lb.config.fields import (
    Invalid,
    Problems,
    Section,
    describe,
    read_networks,
    section_or_flag,
    to_bool,
    to_choice,
    to_duration,
    to_int,
    to_list,
    to_size,
    to_str,
    to_url_path,
)
from lb.config.model import (
    AdminConfig,
    CacheConfig,
    DiscoveryConfig,
    LoggingConfig,
    MetricsConfig,
    ServerConfig,
)
from lb.config.routes import STORES, redis_url
from lb.config.tls import read_server_tls

ERROR_DETAILS: tuple[Literal["minimal", "full"], ...] = ("minimal", "full")

_LEVELS: tuple[Literal["debug", "info", "warning", "error", "critical"], ...] = (
    "debug",
    "info",
    "warning",
    "error",
    "critical",
)
_FORMATS: tuple[Literal["json", "text"], ...] = ("json", "text")


def _mapping(value: Any, path: str, problems: Problems) -> Mapping[Any, Any] | None:
    """A section that is always on: absent or null means all defaults."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    problems.add(path, f"expected a mapping, got {describe(value)}")
    return None


def read_cache(value: Any, problems: Problems, environ: Mapping[str, str]) -> CacheConfig | None:
    data = section_or_flag(value, "cache", problems)
    if data is None:
        return None
    d = CacheConfig()
    s = Section(data, "cache", problems, tuple(CacheConfig.__dataclass_fields__))
    store = s.read("store", d.store, to_choice(STORES))
    config = CacheConfig(
        store=store,
        redis_url=redis_url(s, store, environ),
        max_entries=s.read("max_entries", d.max_entries, to_int(1)),
        max_bytes=s.read("max_bytes", d.max_bytes, to_size(1)),
        max_entry_bytes=s.read("max_entry_bytes", d.max_entry_bytes, to_size(1)),
        default_ttl=s.read("default_ttl", d.default_ttl, to_duration(positive=False)),
        targeted_fields=_targeted_fields(s, d.targeted_fields),
        heuristic=s.read("heuristic", d.heuristic, to_bool),
        store_set_cookie=s.read("store_set_cookie", d.store_set_cookie, to_bool),
    )
    # Checked on the resolved values, so a default on one side still counts.
    if config.max_entry_bytes > config.max_bytes and s.valid("max_entry_bytes", "max_bytes"):
        s.error("max_entry_bytes", "must not exceed max_bytes")
    return config


_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a token (RFC 9110 §5.1)


def _to_field_name(value: Any) -> str:
    text = to_str(value)
    if _FIELD_NAME.fullmatch(text) is None:
        raise Invalid(f"expected a header field name, got {describe(value)}")
    if text.lower() == "cache-control":
        raise Invalid("Cache-Control is always read after the targeted fields; leave it out")
    return text.lower()


def _targeted_fields(s: Section, default: tuple[str, ...]) -> tuple[str, ...]:
    """`targeted_fields`: a list of field names; [] or null turns targeted fields off."""
    if not s.has("targeted_fields"):
        return default
    value = s.raw("targeted_fields")
    if value is None:
        return ()
    names = to_list(value, s.key_path("targeted_fields"), s.problems, _to_field_name)
    return default if names is None else tuple(dict.fromkeys(names))


def _to_admin_prefix(value: Any) -> str:
    text = to_url_path(value)
    # Admin routes are matched as PREFIX/..., so a trailing "/" would double it.
    if text.endswith("/") or "?" in text or "#" in text:
        raise Invalid(f"expected a path like '/_lb' (no trailing '/', '?' or '#'), got {text!r}")
    return text


def to_listen(value: Any) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT`, the host an IP address: where a socket binds, never a name."""
    text = to_str(value).strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    hint = "expected HOST:PORT with an IP address, e.g. '127.0.0.1:9901' or '[::1]:9901'"
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(f"{hint}, got {describe(value)}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise Invalid(f"{hint}, got {describe(value)}") from None
    return host, int(port)


def read_admin(value: Any, problems: Problems) -> AdminConfig:
    d = AdminConfig()
    data = _mapping(value, "admin", problems)
    if data is None:
        return d
    s = Section(data, "admin", problems, ("path_prefix", "token", "allow", "listen"))
    token: str | None = d.token
    if s.has("token") and s.raw("token") not in (None, ""):  # empty: `${LB_ADMIN_TOKEN}` unset
        token = s.read("token", None, to_str)
    return AdminConfig(
        path_prefix=s.read("path_prefix", d.path_prefix, _to_admin_prefix),
        token=token,
        allow=read_networks(s, "allow", d.allow),
        listen=s.read_optional("listen", d.listen, to_listen),
    )


def read_metrics(value: Any, problems: Problems) -> MetricsConfig:
    d = MetricsConfig()
    data = _mapping(value, "metrics", problems)
    if data is None:
        return d
    s = Section(data, "metrics", problems, ("path",))
    return MetricsConfig(path=s.read("path", d.path, to_url_path))


def read_logging(value: Any, problems: Problems) -> LoggingConfig:
    d = LoggingConfig()
    data = _mapping(value, "logging", problems)
    if data is None:
        return d
    s = Section(data, "logging", problems, tuple(LoggingConfig.__dataclass_fields__))
    log_format = s.read("format", d.format, to_choice(_FORMATS, lower=True))
    level = s.read("level", d.level, to_choice(_LEVELS, lower=True))
    return LoggingConfig(
        access_log=s.read("access_log", d.access_log, to_bool),
        format=log_format,
        level=level,
        # Empty, like null, means stdout, so `file: ${LB_ACCESS_LOG}` works with the variable unset.
        file=None if s.raw("file") == "" else s.read_optional("file", d.file, to_str),
        error_file=(
            None
            if s.raw("error_file") == ""
            else s.read_optional("error_file", d.error_file, to_str)
        ),
    )


def read_server(value: Any, problems: Problems) -> ServerConfig:
    d = ServerConfig()
    data = _mapping(value, "server", problems)
    if data is None:
        return d
    s = Section(data, "server", problems, tuple(ServerConfig.__dataclass_fields__))
    return ServerConfig(
        graceful_timeout=s.read(
            "graceful_timeout", d.graceful_timeout, to_duration(positive=False)
        ),
        max_header_bytes=s.read("max_header_bytes", d.max_header_bytes, to_size(1)),
        max_target_bytes=s.read("max_target_bytes", d.max_target_bytes, to_size(1)),
        keepalive_timeout=s.read(
            "keepalive_timeout", d.keepalive_timeout, to_duration(positive=True)
        ),
        header_timeout=s.read("header_timeout", d.header_timeout, to_duration(positive=True)),
        send_timeout=s.read("send_timeout", d.send_timeout, to_duration(positive=True)),
        watch_config=s.read("watch_config", d.watch_config, to_bool),
        max_body_bytes=s.read_optional("max_body_bytes", d.max_body_bytes, to_size(0)),
        tls=read_server_tls(s.raw("tls"), s.key_path("tls"), problems),
        proxy_protocol=s.read("proxy_protocol", d.proxy_protocol, to_bool),
        error_detail=s.read("error_detail", d.error_detail, to_choice(ERROR_DETAILS)),
    )


def to_resolver(value: Any) -> str:
    """`10.0.0.2`, `10.0.0.2:5353`, `::1` or `[::1]:5353`: a resolver is an address, never a
    name (which would need a resolver first)."""
    text = to_str(value)
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.removeprefix(":") if rest.startswith(":") else "x"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        message = f"expected an IP address with an optional :port, got {describe(value)}"
        raise Invalid(message) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Invalid(f"invalid port in {describe(value)}")
    return text


def read_discovery(value: Any, problems: Problems) -> DiscoveryConfig:
    d = DiscoveryConfig()
    data = _mapping(value, "discovery", problems)
    if data is None:
        return d
    s = Section(data, "discovery", problems, tuple(DiscoveryConfig.__dataclass_fields__))
    resolvers: tuple[str, ...] | None = d.resolvers
    if s.has("resolvers"):
        resolvers = to_list(s.raw("resolvers"), s.key_path("resolvers"), problems, to_resolver)
    return DiscoveryConfig(
        interval=s.read("interval", d.interval, to_duration(positive=True)),
        resolvers=resolvers or (),
        timeout=s.read("timeout", d.timeout, to_duration(positive=True)),
    )

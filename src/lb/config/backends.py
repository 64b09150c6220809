"""Validation of a pool's `backends` list: URLs normalised to `scheme://host:port`, unique ids,
and the entries that discover backends through DNS (`discover: dns | srv`)."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Literal

from lb.config.fields import (
    Invalid,
    Problems,
    Section,
    child,
    describe,
    item,
    to_choice,
    to_int,
    to_str,
)
from lb.config.model import BackendConfig, DiscoverConfig, Origin

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES: tuple[Literal["http", "https"], ...] = ("http", "https")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# Ids appear in admin URLs, metrics labels and logs: no whitespace, no slash.
_BACKEND_ID = re.compile(r"[^\s/]{1,128}")


def normalise_host(host: str) -> str:
    """A lower-case DNS name or IPv4 address, or a bracketed, compressed IPv6 address."""
    if host.startswith("[") and host.endswith("]"):
        address, _, zone = host[1:-1].partition("%")
        try:
            ipv6 = ipaddress.IPv6Address(address)
        except ValueError:
            raise Invalid(f"invalid IPv6 address {host!r}") from None
        return f"[{ipv6.compressed}{'%' + zone if zone else ''}]"
    name = host.lower()
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise Invalid(f"invalid host name {host!r}")
    if all(label.isdigit() for label in labels):  # looks like IPv4, so it must be one
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise Invalid(f"invalid IPv4 address {host!r}") from None
    return name


def to_backend_url(value: Any) -> tuple[str, str]:
    """`http://Host:9001/` -> (`http://host:9001`, `host:9001`): the URL and the default id."""
    if not isinstance(value, str):
        raise Invalid(f"expected an http(s) URL string, got {describe(value)}")
    text = value.strip()
    # urlsplit silently drops tabs and newlines inside a URL; an operator should see them.
    if any(not c.isprintable() or c.isspace() for c in text):
        raise Invalid(f"URL must not contain spaces or control characters: {describe(value)}")
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:  # e.g. an unbalanced "[" in the authority
        raise Invalid(f"not a valid URL: {describe(value)}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise Invalid("not an http(s) URL")
    if not parts.netloc:
        raise Invalid("URL has no host")
    if "@" in parts.netloc:
        raise Invalid("URL must not contain user info (user:password@)")
    if parts.path not in ("", "/"):
        raise Invalid(f"URL must not have a path, got {parts.path!r} (use routes to map paths)")
    if parts.query or text.endswith("?"):
        raise Invalid("URL must not have a query string")
    if parts.fragment or "#" in text:
        raise Invalid("URL must not have a fragment")
    host_port = parts.netloc
    # rpartition on ":" would cut an IPv6 address, so split after its closing bracket.
    split_at = host_port.rfind(":") if host_port.rfind(":") > host_port.rfind("]") else -1
    host = host_port if split_at < 0 else host_port[:split_at]
    port_text = "" if split_at < 0 else host_port[split_at + 1 :]
    if not host:
        raise Invalid("URL has no host")
    if ":" in host and not host.startswith("["):
        raise Invalid(f"IPv6 address {host!r} must be in brackets, e.g. http://[::1]:8080")
    host = normalise_host(host)
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise Invalid(f"invalid port {port_text!r}")
        port = int(port_text)
    else:
        port = _DEFAULT_PORTS[scheme]
    return f"{scheme}://{host}:{port}", f"{host}:{port}"


def _to_id(value: Any) -> str:
    # YAML reads `id: 1` as an int; an id is a label, so take its text.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _BACKEND_ID.fullmatch(value):
        return value
    raise Invalid(
        f"expected a non-empty string without spaces or '/' (at most 128 characters), "
        f"got {describe(value)}"
    )


def read_backend(
    value: Any, path: str, problems: Problems, origin: Origin = "config"
) -> tuple[BackendConfig | None, bool]:
    """The backend and whether its id was given explicitly; None when invalid (recorded). The admin
    API's `POST .../backends` reads its body with this too, so both say the same about a backend."""
    if isinstance(value, str):
        try:
            url, default_id = to_backend_url(value)
        except Invalid as exc:
            # Reported under `.url` as for the long form, so the path reads the same either way.
            problems.add(child(path, "url"), str(exc))
            return None, False
        return BackendConfig(url=url, id=default_id, origin=origin), False
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a URL or a mapping with 'url', got {describe(value)}")
        return None, False
    s = Section(value, path, problems, ("url", "weight", "id"))
    parsed = s.require("url", to_backend_url)
    weight = s.read("weight", 1, to_int(0))
    backend_id = s.read("id", None, _to_id)
    if parsed is None:
        return None, False
    url, default_id = parsed
    config = BackendConfig(url=url, id=backend_id or default_id, weight=weight, origin=origin)
    return config, s.has("id")


def _read_discover(
    value: Mapping[Any, Any], path: str, problems: Problems
) -> DiscoverConfig | None:
    """`{url: http://web:8000, discover: dns}` or `{srv: _http._tcp.web, discover: srv}`."""
    kind = value.get("discover")
    if kind == "srv":
        s = Section(value, path, problems, ("srv", "discover", "scheme", "weight"))
        name = s.require("srv", _to_srv_name)
        scheme = s.read("scheme", _SCHEMES[0], to_choice(_SCHEMES, lower=True))
        weight = s.read("weight", 1, to_int(0))
        if name is None:
            return None
        return DiscoverConfig("srv", name, 0, scheme, weight)
    s = Section(value, path, problems, ("url", "discover", "weight"))
    if kind != "dns":
        s.error("discover", f"expected dns or srv, got {describe(kind)}")
        return None
    parsed = s.require("url", to_backend_url)
    weight = s.read("weight", 1, to_int(0))
    if parsed is None:
        return None
    url = urllib.parse.urlsplit(parsed[0])
    port = url.port or _DEFAULT_PORTS[url.scheme]
    return DiscoverConfig("dns", url.hostname or "", port, _SCHEMES[url.scheme == "https"], weight)


def _to_srv_name(value: Any) -> str:
    name = normalise_host(to_str(value))
    if name.startswith("["):
        raise Invalid(f"expected an SRV name such as _http._tcp.web.example, got {describe(value)}")
    return name.removesuffix(".")


def read_backends(
    pool: Section, problems: Problems
) -> tuple[tuple[BackendConfig, ...], tuple[DiscoverConfig, ...]]:
    """The pool's backends, and the names it discovers more from (entries with `discover`)."""
    path = pool.key_path("backends")
    if not pool.has("backends"):
        problems.add(path, "required")
        return (), ()
    value = pool.raw("backends")
    if not isinstance(value, list | tuple):
        problems.add(path, f"expected a list of backends, got {describe(value)}")
        return (), ()
    if not value:
        problems.add(path, "at least one backend is required")
        return (), ()
    backends: list[BackendConfig] = []
    discover: list[DiscoverConfig] = []
    seen: set[str] = set()
    for index, raw in enumerate(value):
        backend_path = item(path, index)
        if isinstance(raw, Mapping) and "discover" in raw:
            target = _read_discover(raw, backend_path, problems)
            if target is not None and any(t.name == target.name for t in discover):
                problems.add(backend_path, f"{target.name!r} is discovered twice in this pool")
            elif target is not None:
                discover.append(target)
            continue
        backend, explicit_id = read_backend(raw, backend_path, problems)
        if backend is None:
            continue
        if backend.id in seen:
            if explicit_id:
                problems.add(child(backend_path, "id"), f"duplicate id {backend.id!r}")
            else:
                problems.add(
                    backend_path,
                    f"duplicate id {backend.id!r} (the same URL twice? give each an 'id')",
                )
            continue
        seen.add(backend.id)
        backends.append(backend)
    return tuple(backends), tuple(discover)

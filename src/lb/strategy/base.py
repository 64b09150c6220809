"""The strategy protocol and the request view a strategy may look at."""

from __future__ import annotations

from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from lb.backend import Backend


class PickRequest:
    """What a strategy sees of a request: the ASGI scope, the client IP and the hash key.

    `key` is computed on first use only, so strategies that do not hash pay nothing for it.
    """

    __slots__ = ("scope", "client_ip", "hash_key", "_key")

    def __init__(self, scope: Any, client_ip: str, hash_key: str = "client_ip") -> None:
        self.scope = scope
        self.client_ip = client_ip
        self.hash_key = hash_key
        self._key: str | None = None

    @property
    def key(self) -> str:
        """The value named by the pool's `hash_key`; the client IP when that value is absent."""
        if self._key is None:
            self._key = _key_value(self.scope, self.hash_key) or self.client_ip
        return self._key

    def header(self, name: bytes) -> bytes | None:
        for header, value in self.scope["headers"]:
            if header == name:
                return bytes(value)
        return None


def _key_value(scope: Any, hash_key: str) -> str | None:
    kind, _, name = hash_key.partition(":")
    if kind == "client_ip":
        return None
    if kind == "path":
        return bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    if kind == "header":
        wanted = name.lower().encode("latin-1")
        values = [v for k, v in scope["headers"] if k == wanted]
        return b",".join(values).decode("latin-1") if values else None
    if kind == "cookie":
        for header, value in scope["headers"]:
            if header == b"cookie":
                cookie: SimpleCookie = SimpleCookie()
                try:
                    cookie.load(value.decode("latin-1"))
                except CookieError:
                    continue
                if name in cookie:
                    return str(cookie[name].value)
        return None
    if kind == "query":
        query: str = scope.get("query_string", b"").decode("latin-1")
        for qname, qvalue in parse_qsl(query, keep_blank_values=True):
            if qname == name:
                return qvalue
        return None
    return None


@runtime_checkable
class Strategy(Protocol):
    """Picks one backend among the usable ones.

    `pick` is called on every request with the pool's usable backends (healthy, active, weight > 0),
    always as the same tuple object until membership or usability changes, so a strategy may cache
    derived structures keyed on `backends is self._last`. It must be synchronous, fast and must not
    block. Return None only when `backends` is empty or nothing fits.

    Optional hooks, called by the pool when the class defines them:

    - `on_start(backend)`: a request was sent to `backend`.
    - `on_done(backend, seconds, ok)`: that request finished after `seconds`; `ok` is False for
      connect errors, timeouts and 5xx.

    The constructor receives the pool's `strategy_options` as keyword arguments.
    """

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None: ...

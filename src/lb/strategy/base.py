"""The strategy protocol and the request view a strategy may look at."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import parse_qsl

from lb.types import Scope

if TYPE_CHECKING:
    from lb.backend import Backend


class PickRequest:
    """What a strategy sees of a request: the ASGI scope, the client IP and the hash key.

    `key` and the cookies are computed on first use only, so strategies that do not hash and
    pools without sticky sessions pay nothing for them.
    """

    __slots__ = ("scope", "client_ip", "hash_key", "_key", "_cookies")

    def __init__(self, scope: Scope, client_ip: str, hash_key: str = "client_ip") -> None:
        self.scope = scope
        self.client_ip = client_ip
        self.hash_key = hash_key
        self._key: str | None = None
        self._cookies: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<PickRequest client_ip={self.client_ip!r} hash_key={self.hash_key!r}>"

    @property
    def key(self) -> str:
        """The value named by the pool's `hash_key`; the client IP when that value is absent."""
        if self._key is None:
            self._key = self._key_value() or self.client_ip
        return self._key

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower-case bytes, as ASGI gives them)."""
        for header, value in self.scope["headers"]:
            if header == name:
                return bytes(value)
        return None

    def cookie(self, name: str) -> str | None:
        """The value of cookie `name` from the request's Cookie header(s), parsed once."""
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = parse_cookies(self.scope["headers"])
        return cookies.get(name)

    def _key_value(self) -> str | None:
        kind, _, name = self.hash_key.partition(":")
        scope = self.scope
        if kind == "path":
            return bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if kind == "header":
            wanted = name.lower().encode("latin-1")
            values = [bytes(v) for k, v in scope["headers"] if k == wanted]
            return b",".join(values).decode("latin-1") if values else None
        if kind == "cookie":
            return self.cookie(name) or None
        if kind == "query":
            query = scope.get("query_string", b"").decode("latin-1")
            for qname, qvalue in parse_qsl(query, keep_blank_values=True):
                if qname == name:
                    return qvalue or None
        return None  # client_ip, or a kind the loader would have refused


def parse_cookies(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Cookies by name from every Cookie header; the first of a repeated name wins (RFC 6265 5.4
    sends the most specific path first).

    Deliberately lenient, unlike `http.cookies.SimpleCookie`, which drops the whole header when
    one cookie in it is malformed; browsers send whatever other sites' scripts set.
    """
    cookies: dict[str, str] = {}
    for header, value in headers:
        if header != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            name, sep, text = part.partition("=")
            if not sep:
                continue
            name = name.strip()
            text = text.strip()
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            if name and name not in cookies:
                cookies[name] = text
    return cookies


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same in every process, worker and instance
    (Python's `hash()` is salted per process, so it cannot pin keys across workers)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@runtime_checkable
class Strategy(Protocol):
    """Picks one backend among the usable ones.

    `pick` is called on every request with the pool's usable backends (healthy, active, weight > 0),
    always as the same tuple object until membership, usability or a weight changes, so a strategy
    may cache derived structures keyed on `backends is self._last`. A retry passes a smaller tuple
    without the backends already tried. It must be synchronous, fast and must not block. Return None
    only when `backends` is empty or nothing fits.

    Optional hooks, called by the pool when the class defines them:

    - `on_start(backend)`: a request was sent to `backend`.
    - `on_done(backend, seconds, ok)`: that request finished; `seconds` is how long the response
      head took (the whole time when there was none), `ok` is False for connect errors, timeouts
      and 5xx.

    The constructor receives the pool's `strategy_options` as keyword arguments and raises
    ValueError for a bad value; the config loader reports that message under the option's key.
    """

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None: ...

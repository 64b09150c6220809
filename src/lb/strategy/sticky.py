"""Sticky sessions: a cookie pins a client to the backend that served it, whatever the strategy.

The cookie value is an HMAC-SHA256 of the pool name and backend id, truncated: it names no address,
and every worker and instance with the same config computes the same value, so a client stays
pinned across them. The key is `sticky.secret`, or else one derived from the pool name (stable
without configuration; a secret also keeps anyone from telling which backend id a value stands for).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Mapping

from lb.backend import Backend
from lb.config import StickyConfig
from lb.strategy import PickRequest

_VALUE_BYTES = 12  # 96 bits, 16 characters of base64url: no collisions among a pool's backends


class StickySessions:
    """Cookie values of one pool's backends, computed once per backend id."""

    __slots__ = ("cookie", "_key", "_context", "_attributes", "_values", "_by_value", "_headers")

    def __init__(self, config: StickyConfig, pool_name: str) -> None:
        self.cookie = config.cookie
        secret = config.secret
        self._key = secret.encode() if secret else b"lb sticky, pool " + pool_name.encode()
        # With a shared secret, two pools still give one backend id different values.
        self._context = pool_name.encode() + b"\0"
        max_age = max(1, math.ceil(config.max_age))
        self._attributes = f"; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax".encode()
        self._values: dict[str, str] = {}  # backend id -> cookie value
        self._by_value: dict[str, str] = {}  # cookie value -> backend id
        self._headers: dict[str, bytes] = {}  # backend id -> Set-Cookie header value

    def __repr__(self) -> str:
        return f"<StickySessions cookie={self.cookie!r} {len(self._values)} backends>"

    def value(self, backend_id: str) -> str:
        """The cookie value that pins `backend_id`."""
        value = self._values.get(backend_id)
        if value is None:
            digest = hmac.new(self._key, self._context + backend_id.encode(), hashlib.sha256)
            value = base64.urlsafe_b64encode(digest.digest()[:_VALUE_BYTES]).decode("ascii")
            self._values[backend_id] = value
            self._by_value[value] = backend_id
            header = f"{self.cookie}={value}".encode() + self._attributes
            self._headers[backend_id] = header
        return value

    def add(self, backend_id: str) -> None:
        """Learn a backend, so that cookies naming it are recognised."""
        self.value(backend_id)

    def pinned(self, request: PickRequest, backends: Mapping[str, Backend]) -> Backend | None:
        """The backend the request's cookie names, if it may take the request.

        Weight 0 does not unpin (HAProxy's persistence): it stops new clients, while pinned ones
        keep their sessions until the backend is drained, disabled or unhealthy.
        """
        value = request.cookie(self.cookie)
        if value is None:
            return None
        backend_id = self._by_value.get(value)
        if backend_id is None:
            return None
        backend = backends.get(backend_id)
        if (
            backend is None
            or backend.admin_state != "active"
            or not backend.healthy
            or backend.ejected_until > 0.0
        ):
            return None
        return backend

    def set_cookie(self, request: PickRequest, backend: Backend) -> bytes | None:
        """The Set-Cookie value pinning `backend`, or None when the request already carries it."""
        if request.cookie(self.cookie) == self.value(backend.id):
            return None
        return self._headers[backend.id]

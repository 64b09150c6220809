"""How failures leave the transport: httpx exceptions tagged with `request_sent`.

Every exception the transport raises carries `exc.request_sent: bool`:

* False — the request never reached the backend (no connection, pool timeout, a request the
  transport refused to write). The caller may send it elsewhere, whatever its method.
* True — some or all of it may have been written; only an idempotent request is safe to repeat.

`request_sent(exc)` reads the flag and answers True ("may have") for anything untagged.
"""

from __future__ import annotations

from typing import TypeVar

import httpx

from lb.exceptions import LBError

E = TypeVar("E", bound=BaseException)


def tag(exc: E, *, sent: bool) -> E:
    """Mark `exc` with whether the request may have reached the backend; returns `exc`."""
    exc.request_sent = sent  # type: ignore[attr-defined]
    return exc


def request_sent(exc: BaseException) -> bool:
    """False only when the transport is sure the backend never saw any byte of the request."""
    return bool(getattr(exc, "request_sent", True))


class PoolOverflow(httpx.PoolTimeout, LBError):
    """No free connection to the backend and `max_pending` requests already wait for one (a
    pool's `limits`): refused at once, never sent. An httpx.PoolTimeout, so callers that map
    pool timeouts (the proxy: 503 unavailable) map it alike."""

    limit = "max_pending"  # the circuit breaker that tripped


class StaleConnection(LBError):
    """A connection lost before any byte of the response arrived (internal).

    The transport turns it into a retry (a reused connection, an empty request body) or into
    `httpx.RemoteProtocolError` / `httpx.ReadError`. `__cause__` is the socket error, if any.
    """


def stale_error(exc: StaleConnection, request: httpx.Request | None) -> httpx.TransportError:
    """What a stale connection becomes when the request cannot be sent again (raise it `from`
    the socket error, `exc.__cause__`)."""
    cause = exc.__cause__
    message = "backend closed the connection without sending a response"
    if isinstance(cause, OSError):
        error: httpx.TransportError = httpx.ReadError(f"{message}: {cause}", request=request)
    else:
        error = httpx.RemoteProtocolError(message, request=request)
    return tag(error, sent=True)


def disconnected(request: httpx.Request | None, exc: Exception | None, part: str) -> Exception:
    """The backend closed (or reset) the connection before the end of `part`."""
    message = f"backend closed the connection before the end of {part}"
    if isinstance(exc, OSError):
        error: Exception = httpx.ReadError(f"{message}: {exc}", request=request)
    else:
        error = httpx.RemoteProtocolError(message, request=request)
    error.__cause__ = exc
    return tag(error, sent=True)

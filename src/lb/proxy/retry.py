"""Retry policy: which failures may be retried, and the budget that stops retry storms.

A request may be retried on another backend, up to `attempts` tries in all, only when nothing has
reached the client yet and its body can be sent again (bodies stream, never buffered whole: the
proxy keeps a small body, or the first chunk, for this; see `downstream.RequestBody`). Which
failures qualify (SPEC 5, `retries.retry_on`):

    provably never sent (connect error, DNS, refused,  -> any method, with connect_error
      no free connection to that backend in time,         (or timeout, for the timeouts)
      or `exc.request_sent = False` from the transport)
    timeout (read, write, per-try)                     -> idempotent methods, with timeout
    bad or no answer (reset, closed before the head)   -> idempotent methods, with 502
    500/502/503/504 answered by the backend            -> idempotent methods, with that code
    a request the transport refuses to write           -> never: no backend would take it
      (LocalProtocolError)

The budget follows Envoy/Finagle: retries may add at most `budget_percent` to the pool's requests
over the last 10 seconds, with a floor of 3 retries per second so a quiet pool can still retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from lb.config import RetryConfig
from lb.exceptions import LBError
from lb.transport import PoolOverflow

T = TypeVar("T")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

_WINDOW = 10  # seconds, one bucket each
_MIN_PER_SECOND = 3
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class PerTryTimeout(httpx.TimeoutException, LBError):
    """`retries.per_try_timeout` passed before the backend's response head arrived."""


class RetryBudget:
    __slots__ = ("percent", "_clock", "_requests", "_retries", "_second")

    def __init__(self, percent: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.percent = percent
        self._clock = clock
        self._requests = [0] * _WINDOW
        self._retries = [0] * _WINDOW
        self._second = int(clock())

    def __repr__(self) -> str:
        return f"<RetryBudget {self.percent}% [{sum(self._retries)}/{sum(self._requests)} in 10s]>"

    def _advance(self) -> int:
        now = int(self._clock())
        if now != self._second:
            # Zero the buckets of the seconds that passed without traffic.
            for second in range(self._second + 1, min(now, self._second + _WINDOW) + 1):
                self._requests[second % _WINDOW] = 0
                self._retries[second % _WINDOW] = 0
            self._second = now
        return now % _WINDOW

    def record_request(self) -> None:
        self._requests[self._advance()] += 1

    def try_acquire(self) -> bool:
        """Take one retry from the budget if there is room; False means: do not retry."""
        bucket = self._advance()
        allowed = sum(self._requests) * self.percent / 100.0
        if self._retries[bucket] < _MIN_PER_SECOND or sum(self._retries) < allowed:
            self._retries[bucket] += 1
            return True
        return False


def was_sent(exc: httpx.HTTPError) -> bool:
    """False only when the request provably never reached the backend."""
    if isinstance(exc, _NOT_SENT):
        return False
    return getattr(exc, "request_sent", True) is not False


class RetryPolicy:
    """The retry rules of one pool (`retries`), with its budget."""

    __slots__ = (
        "attempts", "budget", "per_try_timeout", "_statuses", "_connect", "_timeout", "_bad_answer",
    )  # fmt: skip

    def __init__(self, config: RetryConfig, budget: RetryBudget | None = None) -> None:
        self.attempts = config.attempts
        self.budget = budget or RetryBudget(config.budget_percent)
        self.per_try_timeout = config.per_try_timeout
        self._statuses = frozenset(int(s) for s in config.retry_on if s.isdigit())
        self._connect = "connect_error" in config.retry_on
        self._timeout = "timeout" in config.retry_on
        self._bad_answer = "502" in config.retry_on

    def __repr__(self) -> str:
        return f"<RetryPolicy attempts={self.attempts} {self.budget!r}>"

    def error_retryable(self, exc: httpx.HTTPError, method: str, body_spent: bool) -> bool:
        """Whether the rules allow retrying a request that failed with `exc` (budget aside)."""
        if body_spent or isinstance(exc, httpx.LocalProtocolError):
            return False
        if not was_sent(exc):
            if isinstance(exc, httpx.TimeoutException):
                return self._timeout or self._connect
            return self._connect
        if method not in IDEMPOTENT:
            return False
        if isinstance(exc, httpx.TimeoutException):
            return self._timeout
        return self._bad_answer

    def status_retryable(self, status: int, method: str, body_spent: bool) -> bool:
        return status in self._statuses and method in IDEMPOTENT and not body_spent

    def take(self) -> bool:
        """Spend one retry from the budget; False when it is used up."""
        return self.budget.try_acquire()

    async def bounded(self, sending: Awaitable[T], request: httpx.Request | None = None) -> T:
        """Await one try, bounded by `per_try_timeout` up to the response head (streaming after
        that is bounded by the read timeout between chunks, so long streams are not cut)."""
        if self.per_try_timeout is None:
            return await sending
        try:
            async with asyncio.timeout(self.per_try_timeout):
                return await sending
        except TimeoutError:
            raise PerTryTimeout(
                f"no response head within per_try_timeout {self.per_try_timeout:g}s",
                request=request,
            ) from None


def error_kind(exc: httpx.HTTPError) -> str:
    """The `kind` label of lb_upstream_errors_total."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, PoolOverflow):
        return "overflow"
    if isinstance(exc, httpx.PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "bad_response"


def describe_error(exc: BaseException) -> str:
    """What went wrong with an upstream try, for the log and `ctx.error`."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.ConnectError):
        return f"connect_error ({exc})" if str(exc) else "connect_error"
    if isinstance(exc, PoolOverflow):
        return f"overflow ({exc})"
    if isinstance(exc, httpx.PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    text = str(exc)
    return f"{type(exc).__name__} ({text})" if text else type(exc).__name__

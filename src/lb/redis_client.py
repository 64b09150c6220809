"""lb's one Redis client: shared by the rate limit, the cache and the control bus.

- One client (with its connection pool) per URL per runtime: `RedisClients.get(url)`.
- One outage policy: after a failure, calls are refused at once for `RETRY_INTERVAL` seconds
  (`refused()`), then one call at a time probes Redis until one succeeds; an outage is logged once
  when it starts and once when it ends.
- One reference count: each generation that uses the client starts and stops it as a service;
  the last stop closes it (it connects again, lazily, when used).
- Pub/sub on its own connection (`subscriber()`): a subscription waits on its socket for as long
  as nothing is published, which the pool's short timeouts would cut.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable

from redis.asyncio import BlockingConnectionPool, Redis

logger = logging.getLogger("lb.redis")

# Seconds; a `?socket_timeout=` or `?socket_connect_timeout=` in the URL overrides them.
TIMEOUT = 0.25
MAX_CONNECTIONS = 32
RETRY_INTERVAL = 0.5  # after a failure, refuse calls without trying for this long


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


class RedisClient:
    """The Redis at one URL, as every part of lb that uses it sees it."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._max_connections = max_connections
        self._clock = clock
        self._client: Redis | None = None
        self._refs = 0
        self._down_until = 0.0
        self.failing = False  # inside an outage (logged once when it starts, once when it ends)

    def __repr__(self) -> str:
        state = "down" if self.failing else "up"
        return f"<RedisClient {redact(self.url)} [{state}, {self._refs} user(s)]>"

    # -- lifetime (a Service, reference-counted) ------------------------------------------------

    async def start(self) -> None:
        self._refs += 1

    async def stop(self) -> None:
        self._refs -= 1
        if self._refs > 0:
            return
        self._refs = 0
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def client(self) -> Redis:
        """The pooled client, created on first use in the running loop."""
        if self._client is None:
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self._max_connections,
                timeout=self._timeout,  # waiting for a free pooled connection
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
            )
            self._client = Redis.from_pool(pool)
        return self._client

    def subscriber(self) -> Redis:
        """A client of its own for a pub/sub subscription (the caller closes it). Keepalive and
        periodic PINGs notice a connection that silently died on an idle subscription too."""
        return Redis.from_url(
            self.url, socket_connect_timeout=2.0, socket_keepalive=True, health_check_interval=15
        )

    # -- the outage policy ---------------------------------------------------------------------

    def refused(self) -> bool:
        """Whether a call must be answered "unavailable" without trying: inside `RETRY_INTERVAL`
        of a failure. Past it, this call is the probe, and the next ones are refused until it
        has been answered, so a hung Redis costs one timeout per interval, not one per call."""
        if not self.failing:
            return False
        now = self._clock()
        if now < self._down_until:
            return True
        self._down_until = now + RETRY_INTERVAL
        return False

    def retry_now(self) -> None:
        """Let the next call try at once (an operator's explicit request)."""
        self._down_until = 0.0

    def failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + RETRY_INTERVAL
        if not self.failing:
            self.failing = True
            logger.warning(
                "redis %s unavailable: %s: %s; rate limits apply on_store_error, the cache passes "
                "requests through and the control bus waits until it is back",
                redact(self.url),
                type(exc).__name__,
                exc,
            )

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            logger.warning("redis %s is available again", redact(self.url))


class RedisClients:
    """One `RedisClient` per URL: the runtime's, so every generation shares them."""

    def __init__(self) -> None:
        self._clients: dict[str, RedisClient] = {}

    def __repr__(self) -> str:
        return f"<RedisClients {len(self._clients)}>"

    def get(self, url: str) -> RedisClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = RedisClient(url)
        return client

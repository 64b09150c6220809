"""Redis pub/sub between instances that share a Redis (`store: redis` for rate limits or cache).

Every worker of every instance subscribes to one channel. A message is JSON
`{"origin": ..., "kind": ..., "data": {...}}`; a worker ignores its own. Delivery is at most once:
a worker that is disconnected when a message goes out misses it (Redis pub/sub keeps nothing), so
the bus carries changes, and the durable state stays in each instance's config file.

It uses the runtime's `RedisClient` for the URL (the one the rate limit and cache use): publishing
goes through its pool and outage policy, the subscription has a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lb.redis_client import RedisClient, redact

logger = logging.getLogger("lb.control")

CHANNEL = "lb:control"
_PUBLISH_TIMEOUT = 1.0
_MAX_BACKOFF = 5.0

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class RedisBus:
    """One subscription to `CHANNEL` on `url`, re-established with backoff when Redis goes away."""

    def __init__(self, redis: RedisClient, origin: str, on_message: Handler) -> None:
        self.redis = redis
        self.url = redis.url
        self.origin = origin
        self._on_message = on_message
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def __repr__(self) -> str:
        state = "subscribed" if self.subscribed.is_set() else "not subscribed"
        return f"<RedisBus {redact(self.url)} {CHANNEL} [{state}]>"

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.redis.start()
        self._client = self.redis.subscriber()
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="lb control bus")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            await self.redis.stop()
        self.subscribed.clear()

    async def publish(self, kind: str, data: dict[str, Any]) -> bool:
        """Send a message to every other subscriber; False (and a log line) when Redis is away."""
        if self._client is None:
            return False
        if self.redis.refused():
            logger.warning("cannot publish %s to %s: it is down", kind, redact(self.url))
            return False
        message = json.dumps({"origin": self.origin, "kind": kind, "data": data})
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                await self.redis.client().publish(CHANNEL, message)
        except Exception as exc:  # noqa: BLE001 - redis errors, timeouts: reported, not raised
            self.redis.failed(exc)
            cause = exc or type(exc).__name__
            logger.warning("cannot publish %s to %s: %s", kind, redact(self.url), cause)
            return False
        self.redis.succeeded()
        return True

    async def _listen(self) -> None:
        backoff = 0.2
        down = False
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                self.subscribed.set()
                if down:
                    logger.info("control bus on %s is back", self.url)
                down, backoff = False, 0.2
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._dispatch(message.get("data", b""))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any redis failure: retry with backoff
                self.subscribed.clear()
                if not down:
                    logger.warning(
                        "control bus on %s is down (%s); changes made on other instances "
                        "are missed until it is back",
                        self.url,
                        exc or type(exc).__name__,
                    )
                down = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _dispatch(self, raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("origin") == self.origin:
            return
        if not isinstance(message.get("kind"), str) or not isinstance(message.get("data"), dict):
            return
        try:
            await self._on_message(message)
        except Exception:  # noqa: BLE001 - one bad message must not end the subscription
            logger.exception("handling control message %s", message.get("kind"))

"""Redis pub/sub between instances that share a Redis (`store: redis` for rate limits or cache).

Every worker of every instance subscribes to one channel. A message is JSON
`{"origin": ..., "kind": ..., "data": {...}}`, with `"ack": ID` when the sender waits for acks
(`{"kind": "ack", "data": {"id": ID, "instance": ...}}` back from each worker that applied it); a
worker ignores its own. Delivery is at most once:
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

from lb.config import Config, RateLimitConfig
from lb.redis_client import RedisClient, redact

logger = logging.getLogger("lb.control")

CHANNEL = "lb:control"
_PUBLISH_TIMEOUT = 1.0
_MAX_BACKOFF = 5.0

Handler = Callable[[dict[str, Any]], Awaitable[None]]


def bus_url(config: Config) -> str | None:
    """The Redis that instances share, when the config uses one (rate limits first, then cache)."""
    limits = [config.rate_limit, *(r.rate_limit for r in config.routes)]
    for limit in limits:
        if isinstance(limit, RateLimitConfig) and limit.store == "redis":
            return limit.redis_url
    if config.cache is not None and config.cache.store == "redis":
        return config.cache.redis_url
    return None


class _Acks:
    """The acks of one published message: from which subscribers, of which instances."""

    def __init__(self) -> None:
        self.origins: set[str] = set()
        self.instances: set[str] = set()
        self.expected = -1  # unknown until PUBLISH says how many subscribers got it
        self.done = asyncio.Event()

    def check(self) -> None:
        if 0 <= self.expected <= len(self.origins):
            self.done.set()


class RedisBus:
    """One subscription to `CHANNEL` on `url`, re-established with backoff when Redis goes away."""

    def __init__(
        self, redis: RedisClient, origin: str, on_message: Handler, instance: str = ""
    ) -> None:
        self.redis = redis
        self.url = redis.url
        self.origin = origin
        self.instance = instance or origin  # what the acks of this subscriber count as
        self._on_message = on_message
        self._acks: dict[str, _Acks] = {}
        self._next_ack = 0
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

    async def publish(self, kind: str, data: dict[str, Any], ack: str | None = None) -> int | None:
        """Send a message to every other subscriber; returns how many subscribers Redis handed it
        to (this worker's own subscription included), None (and a log line) when Redis is away."""
        if self._client is None:
            return None
        if self.redis.refused():
            logger.warning("cannot publish %s to %s: it is down", kind, redact(self.url))
            return None
        envelope: dict[str, Any] = {"origin": self.origin, "kind": kind, "data": data}
        if ack is not None:
            envelope["ack"] = ack
        message = json.dumps(envelope)
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                receivers = await self.redis.client().publish(CHANNEL, message)
        except Exception as exc:  # noqa: BLE001 - redis errors, timeouts: reported, not raised
            self.redis.failed(exc)
            cause = exc or type(exc).__name__
            logger.warning("cannot publish %s to %s: %s", kind, redact(self.url), cause)
            return None
        self.redis.succeeded()
        return int(receivers)

    async def publish_acked(self, kind: str, data: dict[str, Any], timeout: float) -> int:
        """Publish, then wait (at most `timeout`) until every other subscriber acked having
        applied it; returns how many instances other than this one did."""
        self._next_ack += 1
        ack = f"{self.origin}:{self._next_ack}"
        acks = self._acks[ack] = _Acks()
        try:
            receivers = await self.publish(kind, data, ack=ack)
            if receivers is None:
                return 0
            acks.expected = receivers - 1  # this worker's own subscription does not answer
            acks.check()
            try:
                async with asyncio.timeout(timeout):
                    await acks.done.wait()
            except TimeoutError:
                pass
        finally:
            del self._acks[ack]
        return len(acks.instances - {self.instance})

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
        if message["kind"] == "ack":
            acks = self._acks.get(message["data"].get("id"))
            if acks is not None:
                acks.origins.add(str(message["origin"]))
                instance = message["data"].get("instance")
                if isinstance(instance, str):
                    acks.instances.add(instance)
                acks.check()
            return
        try:
            await self._on_message(message)
        except Exception:  # noqa: BLE001 - one bad message must not end the subscription
            logger.exception("handling control message %s", message.get("kind"))
            return
        if isinstance(message.get("ack"), str):
            await self.publish("ack", {"id": message["ack"], "instance": self.instance})

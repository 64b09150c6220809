"""`RedisStore`: entries shared by every worker and instance that point at one Redis.

Layout (one primary key = one Redis hash, so a lookup is one HGETALL):

    lb:cache:e:<hash of primary key>   hash: secondary key -> encoded Entry; expires (PEXPIRE) at
                                       the latest storage deadline of its variants
    lb:cache:t:<hash of target>        set of the entry keys for that target (all hosts and
                                       methods), for `purge(target)`; expires with them

Each write is one Lua script, so concurrent workers never leave a half-written entry. When Redis
cannot be reached every call raises `StoreError` (the cache passes requests through), and for a
second afterwards calls fail at once instead of waiting on a dead server again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from lb.cache.entry import Entry
from lb.cache.keys import target_of
from lb.cache.store import MAX_VARIANTS, StoreDown, StoreError

PREFIX = b"lb:cache:"
RETRY_AFTER = 1.0  # seconds during which a failed Redis is not asked again

_PUT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
local ttl = tonumber(ARGV[3])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
"""

_PURGE_TARGET = """
local n = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', key)
end
redis.call('DEL', KEYS[1])
return n
"""


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).hexdigest().encode("ascii")


def entry_key(primary: bytes) -> bytes:
    return PREFIX + b"e:" + _digest(primary)


def target_key(target: bytes) -> bytes:
    return PREFIX + b"t:" + _digest(target)


class RedisStore:
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.5,
        max_connections: int = 64,
        clock: Any = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.max_connections = max_connections
        self._clock = clock
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._down_until = 0.0

    def __repr__(self) -> str:
        state = "down" if self._clock() < self._down_until else "up"
        return f"<RedisStore {self.url} [{state}]>"

    def _redis(self) -> redis.Redis:
        # Created on first use, in the running loop, so that closing and reusing (a reload that
        # keeps the store) just reconnects.
        client = self._client
        if client is None:
            pool = redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.timeout,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            client = self._client = redis.Redis(connection_pool=pool)
            self._scripts = {
                "put": client.register_script(_PUT),
                "purge": client.register_script(_PURGE_TARGET),
            }
        return client

    def _script(self, name: str) -> Any:
        self._redis()
        return self._scripts[name]

    async def _call(self, operation: Any) -> Any:
        """Run `operation()` (a coroutine factory) against Redis, mapping failures to StoreError."""
        if self._clock() < self._down_until:
            raise StoreDown("redis unavailable (recent failure)")
        try:
            return await operation()
        except (TimeoutError, RedisError, OSError) as exc:
            self._down_until = self._clock() + RETRY_AFTER
            raise StoreError(f"redis: {exc}") from exc

    async def variants(self, primary: bytes, now: float) -> list[Entry]:
        key = entry_key(primary)
        stored = await self._call(lambda: self._redis().hgetall(key))
        out = []
        for blob in stored.values():
            entry = Entry.decode(blob)
            # The primary key check guards against a digest collision.
            if entry is not None and entry.primary == primary and entry.stored_until > now:
                out.append(entry)
        return out

    async def put(self, entry: Entry, now: float) -> None:
        ttl_ms = int(entry.ttl(now) * 1000)
        if ttl_ms <= 0:
            return
        keys = [entry_key(entry.primary), target_key(target_of(entry.primary))]
        args = [entry.secondary, entry.encode(), ttl_ms, MAX_VARIANTS]
        await self._call(lambda: self._script("put")(keys=keys, args=args))

    async def invalidate(self, primaries: Sequence[bytes]) -> None:
        if primaries:
            keys = [entry_key(p) for p in primaries]
            await self._call(lambda: self._redis().unlink(*keys))

    async def purge(self, target: bytes | None) -> int:
        # An operator's explicit request: tried even right after a failure.
        self._down_until = 0.0
        if target is not None:
            keys = [target_key(target)]
            return int(await self._call(lambda: self._script("purge")(keys=keys)))
        removed = 0
        cursor = 0
        while True:
            cursor, keys = await self._call(
                lambda at=cursor: self._redis().scan(cursor=at, match=PREFIX + b"*", count=1000)
            )
            if keys:
                await self._call(lambda doomed=keys: self._redis().unlink(*doomed))
                removed += sum(1 for key in keys if key.startswith(PREFIX + b"e:"))
            if cursor == 0:
                return removed

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
                await client.connection_pool.disconnect()
            except (RedisError, OSError):
                pass

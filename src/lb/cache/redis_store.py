"""`RedisStore`: entries shared by every worker and instance that point at one Redis.

Layout (one primary key = one Redis hash, so a lookup is one HGETALL):

    lb:cache:e:<hash of primary key>   hash: secondary key -> encoded Entry; expires (PEXPIRE) at
                                       the latest storage deadline of its variants
    lb:cache:t:<hash of target>        set of the entry keys for that target (all hosts and
                                       methods), for `purge(target)`; expires with them

Each write is one Lua script, so concurrent workers never leave a half-written entry. When Redis
cannot be reached every call raises `StoreError` (the cache passes requests through); the client and
its outage policy (refused at once for a while after a failure, then one probe at a time) are
`lb.redis_client`'s, shared with the rate limit and the control bus.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from lb.cache.entry import Entry
from lb.cache.keys import target_of
from lb.cache.store import MAX_VARIANTS, StoreDown, StoreError
from lb.redis_client import RedisClient, redact

PREFIX = b"lb:cache:"

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

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.url = redis.url
        self._scripts: dict[str, Any] = {}
        self._scripts_of: redis_asyncio.Redis | None = None

    def __repr__(self) -> str:
        state = "down" if self.redis.failing else "up"
        return f"<RedisStore {redact(self.url)} [{state}]>"

    def _redis(self) -> redis_asyncio.Redis:
        client = self.redis.client()
        if client is not self._scripts_of:  # scripts are bound to a client: a new one after close
            self._scripts = {
                "put": client.register_script(_PUT),
                "purge": client.register_script(_PURGE_TARGET),
            }
            self._scripts_of = client
        return client

    def _script(self, name: str) -> Any:
        self._redis()
        return self._scripts[name]

    async def _call(self, operation: Any) -> Any:
        """Run `operation()` (a coroutine factory) against Redis, mapping failures to StoreError."""
        if self.redis.refused():
            raise StoreDown("redis unavailable (recent failure)")
        try:
            result = await operation()
        except (TimeoutError, RedisError, OSError) as exc:
            self.redis.failed(exc)
            raise StoreError(f"redis: {exc}") from exc
        self.redis.succeeded()
        return result

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
        self.redis.retry_now()
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
        """Nothing of its own to close: the client is the runtime's (`lb.redis_client`), started
        and stopped with the generations that use it."""

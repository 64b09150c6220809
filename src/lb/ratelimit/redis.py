"""The shared store: one atomic Lua script per decision on Redis, timed by Redis's own clock.

Every worker and every instance pointing at the same Redis shares one exact limit: the script
reads the key's TAT, applies the GCRA rule with `TIME` and writes the new TAT in one step, so no
two decisions interleave and no process clock matters. Decisions made in the same event-loop turn
go out as one pipeline (EVALSHA, falling back to EVAL when Redis has lost the script), over a
bounded connection pool with short timeouts.

When Redis is down or slow the store raises `StoreUnavailable` at once, under the outage policy of
`lb.redis_client` (refused for a while after a failure, then one probe at a time, logged once per
outage), so it recovers by itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from lb.ratelimit.gcra import Decision, Limit, decision
from lb.ratelimit.store import StoreUnavailable
from lb.redis_client import RETRY_INTERVAL, RedisClient, redact

__all__ = ["RETRY_INTERVAL", "RedisConnection", "RedisStore", "redact"]

MAX_BATCH = 256  # decisions per pipeline

# KEYS[1]: the key's TAT in microseconds of Redis's clock.
# ARGV: interval, capacity (= burst * interval) and tolerance, all in microseconds.
# Returns "ALLOWED AHEAD WAIT": 1 or 0, TAT - now, and the wait until allowed. One string rather
# than a table: Redis would truncate Lua numbers to integers, and a single bulk reply is cheaper
# to parse than an array. The key expires when its bucket is full again.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - now - capacity
if wait > tolerance then
  return string.format('0 %.17g %.17g', tat - now, wait)
end
local ttl = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl)
return string.format('1 %.17g 0', new_tat - now)
"""

_Pending = tuple[str, tuple[bytes, bytes, bytes], "asyncio.Future[Any]"]


class RedisConnection:
    """The rate limit's side of one `RedisClient`: its script, and the batching of the decisions
    made in one loop turn into one pipeline. Shared by every zone on that URL; the client's
    lifetime and outage policy are `lb.redis_client`'s."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.url = redis.url
        self._sha: str | None = None
        self._pending: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<RedisConnection {self.redis!r} [{len(self._tasks)} in flight]>"

    async def _load_script(self, client: Redis) -> str:
        sha = await client.script_load(SCRIPT)
        self._sha = sha.decode() if isinstance(sha, bytes) else str(sha)
        return self._sha

    # -- decisions ---------------------------------------------------------------------------

    async def evaluate(self, key: str, args: tuple[bytes, bytes, bytes]) -> Any:
        """Run the script for `key`, batched with the other calls of this loop turn."""
        if self.redis.refused():
            raise StoreUnavailable(f"redis {redact(self.url)} unavailable (retrying shortly)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((key, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.get_running_loop().create_task(
                self._execute(pending[start : start + MAX_BATCH])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[_Pending]) -> None:
        try:
            try:
                results = await self._run(batch)
            except (RedisError, OSError, TimeoutError) as exc:
                self.redis.failed(exc)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(StoreUnavailable(f"redis: {exc}"))
                return
            # An error reply (READONLY replica, OOM, ...) is an outage like a refused connection.
            error = next((r for r in results if isinstance(r, Exception)), None)
            if error is None:
                self.redis.succeeded()
            else:
                self.redis.failed(error)
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():  # the request went away meanwhile
                    continue
                if isinstance(result, Exception):
                    future.set_exception(StoreUnavailable(f"redis: {result}"))
                else:
                    future.set_result(result)
        finally:
            for _, _, future in batch:  # cancelled: nobody is left waiting unanswered
                if not future.done():
                    future.set_exception(StoreUnavailable("redis store closed"))

    async def _run(self, batch: list[_Pending]) -> list[Any]:
        client = self.redis.client()
        sha = self._sha
        if sha is None:
            sha = await self._load_script(client)
        async with client.pipeline(transaction=False) as pipe:
            for key, args, _ in batch:
                pipe.evalsha(sha, 1, key, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        lost = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if lost:  # Redis restarted or SCRIPT FLUSH: EVAL sends the text and caches it again
            async with client.pipeline(transaction=False) as pipe:
                for i in lost:
                    key, args, _ = batch[i]
                    pipe.eval(SCRIPT, 1, key, *args)
                again: list[Any] = await pipe.execute(raise_on_error=False)
            for i, result in zip(lost, again, strict=True):
                results[i] = result
        return results


class RedisStore:
    """One zone's buckets in Redis, under `prefix` (e.g. `lb:rl:global:`)."""

    def __init__(self, connection: RedisConnection, limit: Limit, prefix: str) -> None:
        self.connection = connection
        self.limit = limit
        self.prefix = prefix
        us = 1_000_000
        self._args = (  # encoded once: the client passes bytes through untouched
            repr(limit.interval * us).encode(),
            repr(limit.capacity * us).encode(),
            repr(limit.tolerance * us).encode(),
        )

    def __repr__(self) -> str:
        return f"<RedisStore {self.limit!r} {self.prefix!r} on {redact(self.connection.url)}>"

    async def decide(self, key: str) -> Decision:
        result = await self.connection.evaluate(self.prefix + key, self._args)
        try:
            allowed, ahead, wait = result.split()
            return decision(
                self.limit, allowed == b"1", float(ahead) / 1_000_000, float(wait) / 1_000_000
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise StoreUnavailable(f"redis: unexpected script result {result!r}") from exc

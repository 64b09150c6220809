"""Rate limiting per client (SPEC section 6).

Vocabulary: a *limit* is `rate` requests per second with bursts of `burst`; a *key* names one
client (its IP, or a header's value); a *zone* is one allowance per key shared by the routes that
use the same `rate_limit` block; a *store* keeps each key's state (its TAT, see `gcra`) in this
process (`memory`) or in Redis (`redis`), and makes one atomic decision per request.

    gcra        the arithmetic, pure functions of (stored TAT, now)
    store       the store protocol and StoreUnavailable
    memory      bounded in-process store
    redis       shared store: one Lua script per decision, Redis's clock
    middleware  the ASGI layer: 429, RateLimit-* headers, on_store_error
    zones       which store limits which route; what a reload keeps
"""

from lb.ratelimit.gcra import Decision, Limit, decide, decision
from lb.ratelimit.memory import MemoryStore
from lb.ratelimit.middleware import RateLimit
from lb.ratelimit.redis import RedisConnection, RedisStore
from lb.ratelimit.store import Store, StoreUnavailable
from lb.ratelimit.zones import RateLimiting

__all__ = [
    "Decision",
    "Limit",
    "MemoryStore",
    "RateLimit",
    "RateLimiting",
    "RedisConnection",
    "RedisStore",
    "Store",
    "StoreUnavailable",
    "decide",
    "decision",
]

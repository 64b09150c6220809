"""lb's shared HTTP cache (RFC 9111) in front of the proxy.

Vocabulary:
    entry          a stored response (status, header fields, body, and its times)
    primary key    method + target URI (scheme, host, path and query as sent)
    secondary key  the request's values of the fields the response's Vary names; one entry per
                   primary and secondary key ("variant")
    fresh / stale  whether an entry's age is below its freshness lifetime
    revalidate     ask upstream whether a stored entry is still good (a conditional request)
    collapse       let concurrent misses for one key wait for a single upstream request
    store          where entries live: memory (per process) or redis (shared)

Modules: `directives` (header parsing), `rules` (storability, freshness, age, reuse),
`vary`, `conditional`, `keys`, `entry` (Entry and its binary form), `store` and `redis_store`,
`request` (a request's cache view), `fetch` (the upstream tee), `layer` (the ASGI layer), and
`cache` (one configured cache: store, collapsing, background refreshes).
"""

from lb.cache.cache import Cache
from lb.cache.layer import CacheLayer
from lb.cache.store import MemoryStore, Store, StoreError

__all__ = ["Cache", "CacheLayer", "MemoryStore", "Store", "StoreError"]

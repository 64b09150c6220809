"""`LBError`, the base of every exception lb defines (`except LBError` catches lb's own).

The hierarchy (where each is defined; what it means)::

    LBError
    ├── ConfigError          lb.config.fields        an invalid config; `.problems`, one line each
    ├── Invalid              lb.config.fields        a converter's refusal (also ValueError)
    ├── ReloadError          lb.control.reload       a reload that did not happen; `.problems`
    ├── PatchError           lb.control.overrides    an admin body lb refuses (also ValueError)
    ├── StoreError           lb.cache.store          the cache's store could not answer
    │   └── StoreDown        lb.cache.store          ... not even tried: it failed moments ago
    ├── StoreUnavailable     lb.ratelimit.store      the rate limit's store could not decide
    ├── TLSError             lb.tls                  a certificate, key or CA file lb cannot use
    ├── ProxyHeaderError     lb.proxyproto           not a PROXY protocol header, or a bad one
    ├── Reject               lb.edgerules            internal: a request head lb's server refuses
    ├── DiscoveryError       lb.discovery.resolver   a DNS lookup gave no usable answer
    ├── ClientDisconnected   lb.proxy.downstream     the client went away while lb was sending
    │   └── BodyTooLarge     lb.proxy.downstream     ... or sent more body than the route allows
    ├── PerTryTimeout        lb.proxy.retry          `retries.per_try_timeout` passed (also
    │                                                httpx.TimeoutException, so the proxy maps it
    │                                                as any upstream timeout)
    ├── PoolOverflow         lb.transport.errors     a backend's queue for a connection is full
    │                                                (`limits.max_pending`; also httpx.PoolTimeout)
    ├── StaleConnection      lb.transport.errors     internal: a reused connection was dead
    └── StrayData            lb.transport.parsing    internal: bytes outside any exchange

Upstream failures reach the proxy as httpx exceptions (`httpx.HTTPError`), tagged by the transport
with `request_sent` (see `lb.transport.errors`); lower-layer errors are mapped with
`raise ... from exc`, so the cause stays chained.
"""

from __future__ import annotations


class LBError(Exception):
    """Base of lb's exceptions."""

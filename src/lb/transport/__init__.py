"""The upstream transport: HTTP/1.1 to the backends over asyncio Protocols and llhttp.

It plugs into httpx through its seam, `httpx.AsyncBaseTransport.handle_async_request`, so the
balancer keeps httpx's Request/Response types and drops httpcore's per-request pool scan and
anyio layers (see bench/RESULTS.md in the shared notes). Under that seam, `Transport.send_raw`
does the same exchange without building httpx objects (raw header lists in, a `ResponseStream`
with status, raw headers, the body as an async iterator and `aclose()` out): the proxy's path.

Vocabulary: an *origin* is (scheme, host, port), one pool each; an *exchange* is one request and
its response on one connection; a connection is *reused* when it comes from the idle deque;
a *stale* connection is a reused one the backend closed before any byte of the response came.

Exceptions, all httpx's, each chained (`raise ... from`) to the lower-level error and tagged
with `exc.request_sent` (read it with `request_sent(exc)`; see `lb.transport.errors`); on the
`send_raw` path they carry no `request` unless one was passed::

    failure                                          raised                      request_sent
    -----------------------------------------------  --------------------------  ------------
    no free connection within timeout["pool"]        httpx.PoolTimeout           False
    ... and `max_pending` requests already waiting   PoolOverflow (PoolTimeout)  False
    refused, unreachable, DNS, TLS handshake         httpx.ConnectError          False
    connect slower than timeout["connect"]           httpx.ConnectTimeout        False
    the Transport was closed (aclose), also queued   httpx.ConnectError          False
    ... while the request was in flight              httpx.ReadError             True
    head or body the transport will not write        httpx.LocalProtocolError    False
      (CR/LF in a header, ambiguous framing)
    body longer/shorter than its Content-Length      httpx.LocalProtocolError    True
    request body blocked over timeout["write"]       httpx.WriteTimeout          True
    no response head within timeout["read"]          httpx.ReadTimeout           True
    closed before the head (stale: sent again once,  httpx.RemoteProtocolError,  True
      if its body can be had again)                    httpx.ReadError on reset
    malformed response (httptools.HttpParserError,   httpx.RemoteProtocolError   True
      status outside 100-599, faulty framing)
    response head (with any 1xx) over 64 KiB         httpx.RemoteProtocolError   True
    --- from the response stream, while iterating ---
    no body bytes within timeout["read"]             httpx.ReadTimeout           True
    closed mid-body                                  httpx.RemoteProtocolError,  True
                                                       httpx.ReadError on reset
    iterating after aclose()                         httpx.StreamClosed          True

An exception raised by the request's own body stream (e.g. the client went away) propagates
unchanged. A `timeout` value of None means no limit.
"""

from lb.transport.errors import PoolOverflow, request_sent
from lb.transport.http11 import UNLIMITED, Origin, Timeouts, Transport, origin_of
from lb.transport.pool import Limits
from lb.transport.stream import ResponseStream

__all__ = [
    "UNLIMITED",
    "Limits",
    "Origin",
    "PoolOverflow",
    "ResponseStream",
    "Timeouts",
    "Transport",
    "origin_of",
    "request_sent",
]

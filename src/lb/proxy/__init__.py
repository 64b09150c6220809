"""The proxy path: one request from the client to a backend and back.

    handler     `Proxy`: pick a backend, send upstream, retry, stream the answer back
    downstream  the client side: the request body as a stream, hearing that the client left
    headers     header rules between client and backend (hop-by-hop, X-Forwarded-*, request ids)
    retry       which failures may be retried, and the budget
    routing     which pool serves a request (host, path prefix)
    context     the per-request record (`RequestContext`) and who writes which field
    errors      the responses lb makes itself (the one builder of them)
    websocket   the WebSocket relay
    bodylimit   a route's request body limit (413 before or while the body streams)
    access      a route's allow/deny rules by client address (403)

Nothing is imported here: import the module you need, so that a layer that uses only `context`
or `errors` does not load the handler. The loggers keep their names (`lb.proxy`, `lb.errors`,
`lb.websocket`): operators' log settings refer to them.
"""

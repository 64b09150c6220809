"""A route's header rules and redirect target (SPEC 12): templates split at load, filled per
request from the request context, and the layer that rewrites the route's response headers.

The request rules are applied by `lb.proxy.handler.Proxy` to the headers it sends, after its own
(X-Forwarded-*, Host): the operator's word is the last. The response rules wrap the whole route,
so they reach every response of it: the backend's, a cache hit, a redirect and lb's own errors.
"""

from __future__ import annotations

from collections.abc import Callable

from lb.config.model import HeaderRulesConfig, Template
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.routing import request_host
from lb.types import Handler, Message, Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]
Field = Callable[[RequestContext, Scope], bytes]


def _client_ip(ctx: RequestContext, scope: Scope) -> bytes:
    return ctx.client_ip.encode("latin-1")


def _request_id(ctx: RequestContext, scope: Scope) -> bytes:
    return ctx.request_id


def host_of(ctx: RequestContext, scope: Scope) -> bytes:
    """The Host as nginx's `$host`: lower-case, without the port; empty when none was sent."""
    host = ctx.host
    return request_host(((b"host", host),)).encode("latin-1") if host else b""


def _scheme(ctx: RequestContext, scope: Scope) -> bytes:
    return str(scope.get("scheme", "http")).encode("latin-1")


def _path(ctx: RequestContext, scope: Scope) -> bytes:
    return ctx.target  # raw path and query as the client sent them


FIELDS: dict[str, Field] = {
    "client_ip": _client_ip,
    "request_id": _request_id,
    "host": host_of,
    "scheme": _scheme,
    "path": _path,
}


class Filled:
    """A `Template` ready to fill: literal parts as bytes, placeholders as their readers."""

    __slots__ = ("static", "parts")

    def __init__(self, template: Template) -> None:
        parts = template.parts
        # A value without placeholders is the same bytes for every request.
        self.static: bytes | None = parts[0].encode("latin-1") if len(parts) == 1 else None
        self.parts: tuple[bytes | Field, ...] = tuple(
            FIELDS[part] if index % 2 else part.encode("latin-1")
            for index, part in enumerate(parts)
            if index % 2 or part
        )

    def fill(self, ctx: RequestContext, scope: Scope) -> bytes:
        if self.static is not None:
            return self.static
        parts = self.parts
        if len(parts) == 1:  # a placeholder alone: "{client_ip}"
            only = parts[0]
            return only if isinstance(only, bytes) else only(ctx, scope)
        return b"".join([p if isinstance(p, bytes) else p(ctx, scope) for p in parts])


class HeaderRules:
    """`set`, `add` and `remove` of one direction, compiled: applied remove, set, add."""

    __slots__ = ("drop", "set", "add")

    def __init__(self, config: HeaderRulesConfig) -> None:
        self.set = tuple((n.encode("latin-1"), Filled(t)) for n, t in config.set)
        self.add = tuple((n.encode("latin-1"), Filled(t)) for n, t in config.add)
        # `set` replaces every field of its name, so those go with the removed ones.
        self.drop = frozenset(n.encode("latin-1") for n in config.remove) | {n for n, _ in self.set}

    def __repr__(self) -> str:
        return f"<HeaderRules set={len(self.set)} add={len(self.add)} drop={len(self.drop)}>"

    def apply(self, headers: Headers, ctx: RequestContext, scope: Scope) -> Headers:
        """A new list: `headers` may be shared (a cache entry's), so it is never changed."""
        drop = self.drop
        out = [field for field in headers if field[0] not in drop] if drop else list(headers)
        for name, value in self.set:
            out.append((name, value.fill(ctx, scope)))
        for name, value in self.add:
            out.append((name, value.fill(ctx, scope)))
        return out


class ResponseHeaders:
    """The route's `response_headers`, outermost in its pipeline: whoever answers (backend,
    cache, lb itself), the head the client gets carries the rules. The cache below stores the
    backend's own headers, so a rule changed by a reload applies to stored responses too."""

    __slots__ = ("app", "rules")

    def __init__(self, app: Handler, rules: HeaderRules) -> None:
        self.app = app
        self.rules = rules

    def __repr__(self) -> str:
        return f"<ResponseHeaders {self.rules!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rules = self.rules

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The message is the sender's own, made for this response: changed in place, as
                # ASGI middleware does; its header list may be shared, so `apply` makes a new one.
                message["headers"] = rules.apply(message["headers"], scope[SCOPE_KEY], scope)
            await send(message)

        await self.app(scope, receive, rewrite)

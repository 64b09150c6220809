"""A route's `allow` / `deny` lists: clients by IP, refused with 403 `forbidden` before anything
else of the route runs (rate limit, cache, backend)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from lb.config.model import Network
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.errors import send_error
from lb.types import Handler, Receive, Scope, Send

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientFilter:
    """Pure ASGI in front of a route's chain. `deny` wins over `allow`; an empty `allow` lets
    every address not denied through; an address that does not parse is refused when `allow`
    is set (there is nothing to match it against) and let through otherwise."""

    __slots__ = ("app", "_allow", "_deny")

    def __init__(self, app: Handler, allow: Sequence[Network], deny: Sequence[Network]) -> None:
        self.app = app
        # Split by IP version once, so a check never compares across versions.
        self._allow = _by_version(allow)
        self._deny = _by_version(deny)

    def __repr__(self) -> str:
        allow = sum(len(nets) for nets in self._allow)
        deny = sum(len(nets) for nets in self._deny)
        return f"<ClientFilter allow={allow} deny={deny} -> {self.app!r}>"

    def permits(self, address: str) -> bool:
        try:
            ip: IPAddress = ipaddress.ip_address(address)
        except ValueError:
            return not any(self._allow)
        if ip.version == 6 and ip.ipv4_mapped is not None:  # a v4 client on a dual-stack socket
            ip = ip.ipv4_mapped
        index = ip.version == 6
        if any(ip in net for net in self._deny[index]):
            return False
        return not any(self._allow) or any(ip in net for net in self._allow[index])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        if self.permits(ctx.client_ip):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting: the server answers the upgrade with 403.
            ctx.status = 403
            ctx.error = "forbidden"
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_error(send, ctx, "forbidden", "this route does not accept requests from you")


def _by_version(networks: Sequence[Network]) -> tuple[tuple[Network, ...], tuple[Network, ...]]:
    return (
        tuple(n for n in networks if n.version == 4),
        tuple(n for n in networks if n.version == 6),
    )

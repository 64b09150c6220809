"""DNS lookups for discovery, through dnspython's asyncio resolver (A + AAAA, or SRV)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.nameserver
import dns.rdatatype
import dns.resolver

from lb.exceptions import LBError

Endpoint = tuple[str, int]  # (IP address as text, port)


class DiscoveryError(LBError):
    """A lookup that gave no usable answer: timeout, SERVFAIL, no such name, no records."""


@dataclass(frozen=True)
class Target:
    """What a config backend asks to discover: `name` resolved with A/AAAA (`port` given) or SRV."""

    kind: Literal["dns", "srv"]
    name: str
    port: int = 0  # for "dns"; SRV records carry their own


@dataclass(frozen=True)
class Answer:
    endpoints: frozenset[Endpoint]
    ttl: float  # the shortest TTL among the records used


def nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    """`10.0.0.2`, `10.0.0.2:5353`, `[::1]:5353` or `::1` -> a UDP/TCP nameserver."""
    host, port = entry, 53
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = int(port_text)
    ipaddress.ip_address(host)  # a resolver is an address, never a name to resolve first
    return dns.nameserver.Do53Nameserver(host, port)


class Resolver:
    """Asks `resolvers` (default: the system's, /etc/resolv.conf), each lookup within `timeout`."""

    def __init__(self, resolvers: Sequence[str] = (), timeout: float = 2.0) -> None:
        if resolvers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [nameserver(entry) for entry in resolvers]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.cache = None  # every interval asks again: the TTL is ours to honour

    async def lookup(self, target: Target) -> Answer:
        if target.kind == "srv":
            return await self._srv(target.name)
        return await self._addresses(target.name, target.port)

    async def _addresses(self, name: str, port: int) -> Answer:
        if _is_address(name):
            return Answer(frozenset({(name, port)}), float("inf"))
        results = await asyncio.gather(
            self._query(name, "A"), self._query(name, "AAAA"), return_exceptions=True
        )
        endpoints: set[Endpoint] = set()
        ttls: list[float] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
                continue
            for record in result:
                endpoints.add((record.address, port))
            if len(result):
                ttls.append(float(result.rrset.ttl if result.rrset is not None else 0))
        if not endpoints:
            raise DiscoveryError(_describe(name, errors))
        return Answer(frozenset(endpoints), min(ttls))

    async def _srv(self, name: str) -> Answer:
        try:
            answer = await self._query(name, "SRV")
        except Exception as exc:
            raise DiscoveryError(_describe(name, [exc])) from exc
        endpoints: set[Endpoint] = set()
        ttls = [float(answer.rrset.ttl if answer.rrset is not None else 0)]
        for record in answer:
            target = record.target.to_text(omit_final_dot=True)
            if target in ("", "."):  # RFC 2782: "." means the service is decidedly not here
                continue
            address_answer = await self._addresses_or_none(target, record.port)
            if address_answer is not None:
                endpoints |= address_answer.endpoints
                ttls.append(address_answer.ttl)
        if not endpoints:
            raise DiscoveryError(f"{name}: no SRV target resolved to an address")
        return Answer(frozenset(endpoints), min(ttls))

    async def _addresses_or_none(self, name: str, port: int) -> Answer | None:
        try:
            return await self._addresses(name, port)
        except DiscoveryError:
            return None

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        return await self._resolver.resolve(name, rdtype, search=False)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _describe(name: str, errors: Sequence[BaseException]) -> str:
    """One line for the log: the most telling of the failures of a name's queries."""
    for error in errors:
        if isinstance(error, dns.resolver.NXDOMAIN):
            return f"{name}: no such name"
    for error in errors:
        if isinstance(error, dns.exception.Timeout | dns.resolver.LifetimeTimeout):
            return f"{name}: no resolver answered in time"
    for error in errors:
        if isinstance(error, dns.resolver.NoNameservers):
            return f"{name}: the resolvers failed (SERVFAIL or refused)"
    return f"{name}: no address records"

"""Discovery: backends that a DNS name stands for (SPEC section 13).

Vocabulary: a *target* is what the config names (`http://web:8000` with `discover: dns`, or an SRV
name with `discover: srv`); a *lookup* asks the resolvers once and gets an *answer* (the set of
`(address, port)` endpoints and the shortest TTL); the *membership* keeps the last good set and
says, per lookup, which endpoints were added, kept and removed. Each endpoint becomes a backend with
id `NAME@ADDRESS:PORT` and origin `dns`. `resolver.py` does the I/O (dnspython's asyncio resolver);
`membership.py` is the pure decision, tested without sockets; `service.py` runs one lookup loop per
name and hands each good answer to the runtime.
"""

from lb.discovery.membership import Change, Membership, endpoint_id, next_delay
from lb.discovery.resolver import Answer, DiscoveryError, Endpoint, Resolver, Target
from lb.discovery.service import Discovery

__all__ = [
    "Answer",
    "Change",
    "Discovery",
    "DiscoveryError",
    "Endpoint",
    "Membership",
    "Resolver",
    "Target",
    "endpoint_id",
    "next_delay",
]

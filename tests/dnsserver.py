"""A real DNS server on loopback for discovery tests (dnslib's server: UDP and TCP, a thread each).

Records are set and changed while it runs: `set("web.test", a=["127.0.0.1"], ttl=30)`,
`set_srv(...)`; `silent = True` drops every query (a resolver that went away), `servfail = True`
answers SERVFAIL. `queries` counts the questions asked, by (name, type).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSError, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from servers import free_port


class _Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self, owner: DnsServer) -> None:
        self.owner = owner

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        owner = self.owner
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        qtype = QTYPE[question.qtype]
        with owner.lock:
            owner.queries[(name, qtype)] += 1
            if owner.silent:  # dnslib sends nothing when resolving raises DNSError
                raise DNSError("silent")
            reply = request.reply()
            if owner.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            records = owner.records.get(name)
            if records is None:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for rtype, rdata, ttl in records:
                if rtype == qtype:
                    reply.add_answer(RR(DNSLabel(name), QTYPE.reverse[rtype], rdata=rdata, ttl=ttl))
            return reply


class DnsServer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, list[tuple[str, Any, int]]] = {}
        self.queries: Counter[tuple[str, str]] = Counter()
        self.silent = False
        self.servfail = False
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        logger = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        zone = _Zone(self)
        self._servers = [
            DNSServer(zone, "127.0.0.1", self.port, tcp=tcp, logger=logger) for tcp in (False, True)
        ]

    def start(self) -> DnsServer:
        for server in self._servers:
            server.start_thread()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()

    def set(
        self, name: str, *, a: Sequence[str] = (), aaaa: Sequence[str] = (), ttl: int = 30
    ) -> None:
        records = [("A", A(ip), ttl) for ip in a] + [("AAAA", AAAA(ip), ttl) for ip in aaaa]
        with self.lock:
            self.records[name.lower()] = records

    def set_srv(self, name: str, targets: list[tuple[str, int]], ttl: int = 30) -> None:
        records = [("SRV", SRV(priority=10, weight=1, port=port, target=host), ttl)
                   for host, port in targets]  # fmt: skip
        with self.lock:
            self.records[name.lower()] = records

    def remove(self, name: str) -> None:
        with self.lock:
            self.records.pop(name.lower(), None)

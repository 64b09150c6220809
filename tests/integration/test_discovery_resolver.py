"""Discovery lookups against a real DNS server on loopback (tests/dnsserver.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dnsserver import DnsServer
from lb.discovery import DiscoveryError, Membership, Resolver, Target, endpoint_id


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


def resolver(server: DnsServer, timeout: float = 2.0) -> Resolver:
    return Resolver([server.address], timeout=timeout)


async def test_a_and_aaaa_records_become_endpoints(dns_server: DnsServer) -> None:
    dns_server.set("web.test", a=["127.0.0.1", "127.0.0.2"], aaaa=["::1"], ttl=17)
    answer = await resolver(dns_server).lookup(Target("dns", "web.test", 8000))
    assert answer.endpoints == {("127.0.0.1", 8000), ("127.0.0.2", 8000), ("::1", 8000)}
    assert answer.ttl == 17
    assert dns_server.queries[("web.test", "A")] == 1
    assert dns_server.queries[("web.test", "AAAA")] == 1


async def test_a_name_with_only_a_records_is_fine(dns_server: DnsServer) -> None:
    dns_server.set("v4.test", a=["127.0.0.3"])
    answer = await resolver(dns_server).lookup(Target("dns", "v4.test", 81))
    assert answer.endpoints == {("127.0.0.3", 81)}


async def test_srv_records_carry_their_ports(dns_server: DnsServer) -> None:
    dns_server.set("a.test", a=["127.0.0.1"], ttl=60)
    dns_server.set("b.test", a=["127.0.0.2"], ttl=60)
    dns_server.set_srv("_http._tcp.web.test", [("a.test", 9001), ("b.test", 9002)], ttl=20)
    answer = await resolver(dns_server).lookup(Target("srv", "_http._tcp.web.test"))
    assert answer.endpoints == {("127.0.0.1", 9001), ("127.0.0.2", 9002)}
    assert answer.ttl == 20


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("nxdomain", "no such name"),
        ("servfail", "the resolvers failed"),
        ("silent", "no resolver answered in time"),
        ("empty", "no address records"),
    ],
)
async def test_failures_are_one_clear_error(
    dns_server: DnsServer, setup: str, message: str
) -> None:
    if setup == "servfail":
        dns_server.servfail = True
    elif setup == "silent":
        dns_server.silent = True
    elif setup == "empty":
        dns_server.set("empty.test")  # the name exists, with no A or AAAA records
    name = "empty.test" if setup == "empty" else "gone.test"
    with pytest.raises(DiscoveryError, match=message):
        await resolver(dns_server, timeout=0.5).lookup(Target("dns", name, 80))


async def test_membership_follows_records_and_keeps_the_last_good_set(
    dns_server: DnsServer,
) -> None:
    lookup = resolver(dns_server, timeout=0.5)
    target = Target("dns", "web.test", 8000)
    members = Membership()

    async def refresh() -> frozenset[str]:
        try:
            answer = await lookup.lookup(target)
        except DiscoveryError:
            change = members.failed()
        else:
            change = members.answered(answer.endpoints)
        return frozenset(endpoint_id("web", e) for e in change.added | change.removed)

    dns_server.set("web.test", a=["127.0.0.1", "127.0.0.2"])
    assert await refresh() == {"web@127.0.0.1:8000", "web@127.0.0.2:8000"}
    dns_server.set("web.test", a=["127.0.0.2", "127.0.0.3"])
    assert await refresh() == {"web@127.0.0.1:8000", "web@127.0.0.3:8000"}
    assert members.endpoints == {("127.0.0.2", 8000), ("127.0.0.3", 8000)}
    dns_server.silent = True
    assert await refresh() == frozenset()
    assert members.failing
    assert members.endpoints == {("127.0.0.2", 8000), ("127.0.0.3", 8000)}
    dns_server.silent = False
    dns_server.remove("web.test")
    assert await refresh() == frozenset()  # NXDOMAIN: still the last good set
    dns_server.set("web.test", a=["127.0.0.3"])
    assert await refresh() == {"web@127.0.0.2:8000"}
    assert not members.failing
    assert (members.lookups, members.failures) == (5, 2)

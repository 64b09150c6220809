"""A route's allow/deny decision (`lb.proxy.access.ClientFilter.permits`), without sockets."""

from __future__ import annotations

import ipaddress

import pytest

from lb.proxy.access import ClientFilter


def _filter(allow: list[str], deny: list[str]) -> ClientFilter:
    return ClientFilter(
        None, [ipaddress.ip_network(n) for n in allow], [ipaddress.ip_network(n) for n in deny]
    )


@pytest.mark.parametrize(
    ("allow", "deny", "address", "permitted"),
    [
        ([], [], "203.0.113.1", True),
        (["10.0.0.0/8"], [], "10.9.9.9", True),
        (["10.0.0.0/8"], [], "11.0.0.1", False),
        (["10.0.0.0/8"], ["10.1.0.0/16"], "10.1.2.3", False),  # deny wins
        ([], ["10.1.0.0/16"], "10.2.0.1", True),
        (["10.0.0.0/8"], [], "::ffff:10.0.0.1", True),  # v4 client on a dual-stack socket
        ([], ["10.0.0.0/8"], "::ffff:10.0.0.1", False),
        (["2001:db8::/32"], [], "2001:db8::5", True),
        (["2001:db8::/32"], [], "10.0.0.1", False),  # another family never matches
        (["10.0.0.0/8"], [], "", False),  # no address (a unix socket): nothing to allow
        ([], ["10.0.0.0/8"], "", True),
    ],
)
def test_permits(allow: list[str], deny: list[str], address: str, permitted: bool) -> None:
    assert _filter(allow, deny).permits(address) is permitted


def test_repr_counts_the_networks() -> None:
    assert repr(_filter(["10.0.0.0/8", "::1/128"], [])) == "<ClientFilter allow=2 deny=0 -> None>"

"""The pure side of discovery: endpoint ids, re-lookup delays, membership changes."""

from __future__ import annotations

import pytest

from lb.config import load_config
from lb.discovery import Membership, endpoint_id, next_delay
from lb.discovery.resolver import nameserver
from lb.discovery.shared import SharedAnswers


def test_endpoint_ids_bracket_ipv6() -> None:
    assert endpoint_id("web", ("10.0.0.7", 8000)) == "web@10.0.0.7:8000"
    assert endpoint_id("web", ("fd00::7", 8000)) == "web@[fd00::7]:8000"


@pytest.mark.parametrize(
    ("interval", "ttl", "delay"),
    # The floor bounds a short TTL; an interval set below it is the operator's (and tests') choice.
    [(5.0, 30.0, 5.0), (5.0, 2.0, 2.0), (5.0, 0.0, 1.0), (5.0, None, 5.0), (0.5, 0.0, 0.5)],
)
def test_short_ttls_are_honoured_down_to_a_floor(
    interval: float, ttl: float | None, delay: float
) -> None:
    assert next_delay(interval, ttl) == delay


def test_an_empty_answer_keeps_the_last_good_set() -> None:
    members = Membership()
    first = members.answered(frozenset({("10.0.0.1", 80)}))
    assert first.added == {("10.0.0.1", 80)} and bool(first)
    change = members.answered(frozenset())
    assert not change and members.failing
    assert members.endpoints == {("10.0.0.1", 80)}
    again = members.answered(frozenset({("10.0.0.1", 80)}))
    assert not again and again.kept == {("10.0.0.1", 80)} and not members.failing


@pytest.mark.parametrize(
    ("entry", "address", "port"),
    [("10.0.0.2", "10.0.0.2", 53), ("127.0.0.1:5353", "127.0.0.1", 5353),
     ("[::1]:5353", "::1", 5353), ("::1", "::1", 53)],
)  # fmt: skip
def test_resolver_entries(entry: str, address: str, port: int) -> None:
    server = nameserver(entry)
    assert (server.address, server.port) == (address, port)


def test_a_resolver_must_be_an_address() -> None:
    with pytest.raises(ValueError):
        nameserver("dns.example:53")


async def test_followers_take_the_leaders_answers_for_the_names_they_discover(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = load_config(
        {
            "pools": {
                "web": {"backends": [{"url": "http://web.test:8000", "discover": "dns"}]},
                "api": {"backends": ["http://127.0.0.1:9000"]},
            }
        }
    )
    (target,) = config.pools["web"].discover
    leader_took: list[object] = []
    follower_took: list[object] = []
    leader = SharedAnswers(
        str(tmp_path), lambda *a: leader_took.append(a), lambda: config, lambda: True
    )
    follower = SharedAnswers(
        str(tmp_path), lambda *a: follower_took.append(a), lambda: config, lambda: False
    )
    endpoints = frozenset({("127.0.0.1", 8000), ("127.0.0.2", 8000)})
    leader.publish("web", target, endpoints)
    leader.publish("gone", target, frozenset({("127.0.0.9", 1)}))  # a pool the config lacks
    await leader.stop()  # waits for the write
    await leader.tick()  # the leader never reads its own answers back
    await follower.tick()
    assert follower_took == [("web", target, endpoints)] and leader_took == []
    await follower.tick()  # unchanged file: nothing again
    assert len(follower_took) == 1

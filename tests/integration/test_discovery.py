"""DNS discovery end to end: a real DNS server on loopback (tests/dnsserver.py) names backends
on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (loopback aliases), and lb follows its records."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apps import Backend
from dnsserver import DnsServer
from servers import free_port, wait_until

ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def aliased(start_server):  # type: ignore[no-untyped-def]
    """Three backends on one port, one per loopback address: {address: Backend}."""
    port = free_port()
    apps = {}
    for index, address in enumerate(ADDRESSES):
        app = Backend(f"b{index + 1}")
        start_server(app, port=port, host=address)
        apps[address] = app
    return port, apps


def _config(dns: DnsServer, *backends: object, **pool: object) -> dict[str, object]:
    return {
        "pools": {"web": {"backends": list(backends), **pool}},
        "discovery": {"interval": "0.2s", "resolvers": [dns.address], "timeout": "0.3s"},
        "logging": {"access_log": False},
    }


def _backends(url: str, client: httpx.Client | None = None) -> dict[str, dict[str, Any]]:
    response = (client or httpx).get(url + "/_lb/status")
    try:
        status = response.json()
    except ValueError:
        status = None
    if not isinstance(status, dict):
        # A wrong answer, never retried: what came is the clue (the server's log has the rest).
        headers = dict(response.headers)
        body = response.content[:500]
        pytest.fail(f"/_lb/status: {response.status_code} {headers} {body!r}")
    return {b["id"]: b for b in status["pools"]["web"]["backends"]}


def _served(url: str, count: int = 12) -> set[str]:
    with httpx.Client() as client:
        return {client.get(url + "/").json()["backend"] for _ in range(count)}


def test_records_added_changed_and_removed(start_balancer, dns_server, aliased) -> None:  # type: ignore[no-untyped-def]
    port, apps = aliased
    dns_server.set("web.test", a=["127.0.0.1"], ttl=30)
    lb = start_balancer(_config(dns_server, {"url": f"http://web.test:{port}", "discover": "dns"}))
    one, two, three = (f"web.test@{a}:{port}" for a in ADDRESSES)
    wait_until(lambda: set(_backends(lb.url)) == {one})
    assert _backends(lb.url)[one]["origin"] == "dns"
    assert _backends(lb.url)[one]["url"] == f"http://127.0.0.1:{port}"
    first = lb.app.generation.pools["web"].backends[one]

    dns_server.set("web.test", a=["127.0.0.1", "127.0.0.2"], ttl=30)
    wait_until(lambda: set(_backends(lb.url)) == {one, two})
    wait_until(lambda: _served(lb.url) == {"b1", "b2"})
    assert lb.app.generation.pools["web"].backends[one] is first  # its state stays
    assert first.requests_total > 0

    # .1 goes while a request to it is in flight: it drains, then leaves once that one is done.
    threads = []
    for _ in range(6):  # round robin: one of the first few lands on .1
        thread = threading.Thread(target=lambda: httpx.get(f"{lb.url}/hang", timeout=20))
        thread.start()
        threads.append(thread)
        sent = len(threads)
        wait_until(lambda: sum(a.in_flight for a in apps.values()) >= sent, 5)  # noqa: B023
        if apps["127.0.0.1"].in_flight:
            break
    assert apps["127.0.0.1"].in_flight
    dns_server.set("web.test", a=["127.0.0.2", "127.0.0.3"], ttl=30)
    wait_until(lambda: _backends(lb.url).get(one, {}).get("state") == "draining")
    assert three in _backends(lb.url)
    wait_until(lambda: _served(lb.url) == {"b2", "b3"})
    assert one in _backends(lb.url)  # still draining: a request is in flight
    for app in apps.values():
        app.release.set()
    for thread in threads:
        thread.join(10)
    wait_until(lambda: set(_backends(lb.url)) == {two, three})


def test_a_silent_or_failing_server_keeps_the_last_good_set(  # type: ignore[no-untyped-def]
    start_balancer, dns_server, aliased
) -> None:
    port, _ = aliased
    dns_server.set("web.test", a=["127.0.0.1", "127.0.0.3"], ttl=30)
    lb = start_balancer(_config(dns_server, {"url": f"http://web.test:{port}", "discover": "dns"}))
    wanted = {f"web.test@127.0.0.1:{port}", f"web.test@127.0.0.3:{port}"}
    wait_until(lambda: set(_backends(lb.url)) == wanted)

    def failed() -> float:
        for line in httpx.get(lb.url + "/_lb/metrics").text.splitlines():
            if line.startswith('lb_discovery_lookups_total{name="web.test",result="failed"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    dns_server.silent = True
    wait_until(lambda: failed() >= 3)
    assert set(_backends(lb.url)) == wanted
    assert _served(lb.url) == {"b1", "b3"}
    dns_server.silent = False
    dns_server.servfail = True
    before = failed()
    wait_until(lambda: failed() >= before + 3)
    dns_server.set("web.test", a=[], ttl=30)  # an empty answer is no better
    dns_server.servfail = False
    wait_until(lambda: failed() >= before + 6)
    assert set(_backends(lb.url)) == wanted
    dns_server.set("web.test", a=["127.0.0.2"], ttl=30)
    wait_until(lambda: set(_backends(lb.url)) == {f"web.test@127.0.0.2:{port}"})


def test_srv_records_carry_ports_and_new_backends_are_checked_first(  # type: ignore[no-untyped-def]
    start_balancer, start_backends, dns_server
) -> None:
    (b1, s1), (b2, s2) = start_backends(2)
    b2.health_status = 500
    dns_server.set("a.test", a=["127.0.0.1"], ttl=30)
    dns_server.set_srv("_http._tcp.web.test", [("a.test", s1.port), ("a.test", s2.port)], ttl=30)
    check = {"path": "/health", "interval": "0.1s", "timeout": "1s", "healthy_threshold": 1}
    lb = start_balancer(
        _config(
            dns_server,
            {"srv": "_http._tcp.web.test", "discover": "srv"},
            health_check=check,
        )
    )
    ids = {f"_http._tcp.web.test@127.0.0.1:{s.port}" for s in (s1, s2)}
    wait_until(lambda: set(_backends(lb.url)) == ids)
    states = {i: b["state"] for i, b in _backends(lb.url).items()}
    good, bad = (f"_http._tcp.web.test@127.0.0.1:{s.port}" for s in (s1, s2))
    wait_until(lambda: _backends(lb.url)[good]["state"] == "healthy")
    assert _backends(lb.url)[bad]["state"] == "unhealthy", states  # never taken traffic
    assert _served(lb.url) == {"b1"}
    assert b2.count() == 0
    metrics = httpx.get(lb.url + "/_lb/metrics").text
    assert f'lb_backend_info{{backend="{good}",origin="dns",pool="web"}} 1.0' in metrics


def test_a_short_ttl_is_honoured_and_aaaa_records_count(
    start_balancer, start_server, dns_server
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    v4, v6 = Backend("v4"), Backend("v6")
    start_server(v4, port=port, host="127.0.0.1")
    start_server(v6, port=port, host="::1")
    dns_server.set("web.test", a=["127.0.0.1"], ttl=1)
    config = _config(dns_server, {"url": f"http://web.test:{port}", "discover": "dns"})
    config["discovery"]["interval"] = "1h"  # type: ignore[index]
    lb = start_balancer(config)
    wait_until(lambda: set(_backends(lb.url)) == {f"web.test@127.0.0.1:{port}"})
    # The interval is an hour, but the records live a second: lb asks again within seconds.
    dns_server.set("web.test", a=["127.0.0.1"], aaaa=["::1"], ttl=1)
    ids = {f"web.test@127.0.0.1:{port}", f"web.test@[::1]:{port}"}
    wait_until(lambda: set(_backends(lb.url)) == ids, timeout=10)
    assert _backends(lb.url)[f"web.test@[::1]:{port}"]["url"] == f"http://[::1]:{port}"
    wait_until(lambda: _served(lb.url) == {"v4", "v6"})


def test_every_worker_of_lb_serve_follows_the_name(lb_process, dns_server, aliased) -> None:  # type: ignore[no-untyped-def]
    # One worker (the instance's leader) resolves the name; every worker, whichever answers,
    # must follow it.
    port, _ = aliased
    dns_server.set("web.test", a=["127.0.0.1", "127.0.0.2"], ttl=30)
    lb = lb_process(_config(dns_server, {"url": f"http://web.test:{port}", "discover": "dns"}), 3)
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(limits=limits, timeout=30) as fresh:

        def everywhere(ids: set[str]) -> bool:
            return all(set(_backends(lb.url, fresh)) == ids for _ in range(20))

        wait_until(lambda: everywhere({f"web.test@127.0.0.{n}:{port}" for n in (1, 2)}), 30)
        # Once per instance: over 2 s at a 0.2 s interval, about 10 questions for the name's A
        # records, not one series per worker (30).
        before = dns_server.queries[("web.test", "A")]
        started = time.monotonic()
        wait_until(lambda: time.monotonic() - started >= 2.0)
        asked = dns_server.queries[("web.test", "A")] - before
        assert 3 <= asked <= 15, asked
        dns_server.set("web.test", a=["127.0.0.3"], ttl=30)
        wait_until(lambda: everywhere({f"web.test@127.0.0.3:{port}"}), 30)
    assert lb.stop() == 0

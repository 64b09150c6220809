"""Backends added at run time (admin API, DNS discovery): config, bookkeeping, the runtime's
add/drain/remove, and the control-file state. No sockets."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from lb.app import LoadBalancer
from lb.config import BackendConfig, ConfigError, load_config
from lb.config.model import DiscoverConfig
from lb.control.members import BackendChange, parse_backend, put_backend
from lb.control.overrides import PatchError
from lb.discovery import Answer, Discovery, DiscoveryError, Endpoint
from lb.dynamic import DRAIN_BOUND, DynamicBackends

A = {"url": "http://127.0.0.1:9001", "id": "a"}
WEB = {"url": "http://web.test:8000", "discover": "dns"}
SRV = {"srv": "_http._tcp.web.test", "discover": "srv"}
CHECK = {"path": "/health", "interval": "60s", "timeout": "1s"}


def _config(*backends: object, **pool: object) -> dict[str, object]:
    return {
        "pools": {"web": {"backends": list(backends), **pool}},
        "logging": {"access_log": False},
    }


def _problems(config: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return caught.value.problems


def test_discover_entries_are_names_not_backends() -> None:
    srv = {**SRV, "scheme": "https", "weight": 3}
    config = load_config({**_config(A, WEB, srv), "discovery": {"resolvers": ["127.0.0.1:5353"]}})
    pool = config.pools["web"]
    assert [b.id for b in pool.backends] == ["a"]
    assert pool.discover == (
        DiscoverConfig("dns", "web.test", 8000, "http", 1),
        DiscoverConfig("srv", "_http._tcp.web.test", 0, "https", 3),
    )
    assert config.discovery.resolvers == ("127.0.0.1:5353",) and config.discovery.interval == 5.0


def test_a_pool_may_have_only_discovered_backends() -> None:
    config = load_config(_config(WEB))
    assert config.pools["web"].backends == ()
    assert config.summary() == "1 pool(s), 0 backend(s) + 1 discovered name(s), 0 route(s)"


def test_discovery_mistakes_are_reported_with_key_paths() -> None:
    problems = _problems(
        {
            **_config(
                {"url": "http://web.test", "discover": "consul"},
                {**WEB, "id": "x"},
                {"srv": "not a name", "discover": "srv"},
                {**SRV, "scheme": "ftp"},
                WEB,
            ),
            "discovery": {"interval": "0s", "resolvers": ["dns.local", "10.0.0.1:0"], "x": 1},
        }
    )
    assert problems == [
        "pools.web.backends[0].discover: expected dns or srv, got 'consul'",
        "pools.web.backends[1].id: unknown key",
        "pools.web.backends[2].srv: invalid host name 'not a name'",
        "pools.web.backends[3].scheme: expected one of http, https, got 'ftp'",
        "pools.web.backends[4]: 'web.test' is discovered twice in this pool",
        "discovery.x: unknown key",
        "discovery.resolvers[0]: expected an IP address with an optional :port, got 'dns.local'",
        "discovery.resolvers[1]: invalid port in '10.0.0.1:0'",
        "discovery.interval: must be greater than 0",
    ]


def test_the_admin_body_is_validated_like_a_config_backend() -> None:
    assert parse_backend(b'{"url": "http://Host:9001/", "weight": 2}') == BackendConfig(
        "http://host:9001", "host:9001", 2, origin="api"
    )
    with pytest.raises(PatchError) as caught:
        parse_backend(b'{"url": "ftp://x", "weight": -1, "id": "a b", "state": "x"}')
    assert caught.value.problems == [
        "state: unknown key",
        "url: not an http(s) URL",
        "weight: expected an integer >= 0, got -1",
        "id: expected a non-empty string without spaces or '/' (at most 128 characters), got 'a b'",
    ]
    for body, problem in [(b"[]", "body: expected a JSON object"), (b"{", "body: not JSON")]:
        with pytest.raises(PatchError) as caught:
            parse_backend(body)
        assert caught.value.problems[0].startswith(problem)
    with pytest.raises(PatchError) as caught:
        parse_backend(b"{}")
    assert caught.value.problems == ["url: required"]


def test_backend_changes_round_trip_and_the_later_one_wins_in_the_file() -> None:
    added = BackendChange("web", "x", "http://127.0.0.1:9009", 2, False, 10.0)
    assert BackendChange.from_json(added.to_json()) == added
    assert BackendChange.from_json({**added.to_json(), "removed": "yes"}) is None
    assert BackendChange.from_json({**added.to_json(), "weight": True}) is None
    document: dict[str, object] = {"backends": []}
    assert put_backend(document, added.to_json())
    removed = BackendChange("web", "x", added.url, 2, True, 11.0)
    assert put_backend(document, removed.to_json())
    assert not put_backend(document, added.to_json())  # older: the removal stands
    assert document["backends"] == [removed.to_json()]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_removed_backends_go_when_idle_or_out_of_time() -> None:
    app = LoadBalancer(_config(A))
    a = app.generation.pools["web"].backends["a"]
    clock = _Clock()
    dynamic = DynamicBackends(clock)
    dynamic.leave("web", a)
    a.active_requests = 1
    assert dynamic.gone() == []
    a.active_requests = 0
    assert [e.backend for e in dynamic.gone()] == [a]
    a.active_requests = 5
    dynamic.leave("web", a)
    clock.now += DRAIN_BOUND
    assert [e.backend for e in dynamic.gone()] == [a] and not dynamic.leaving


def test_a_reload_keeps_added_backends_but_not_those_of_a_dropped_name() -> None:
    dynamic = DynamicBackends()
    api = BackendConfig("http://127.0.0.1:9005", "x", origin="api")
    dns = BackendConfig("http://127.0.0.2:8000", "web.test@127.0.0.2:8000", origin="dns")
    shadowed = BackendConfig("http://127.0.0.1:9009", "a", origin="api")
    for config in (api, dns, shadowed):
        dynamic.put("web", config)
    with_name = load_config(_config(A, WEB)).pools["web"]
    assert dynamic.for_pool(with_name) == [api, dns]  # the file's "a" wins
    dynamic.prune(load_config(_config(A)))
    assert dynamic.configs == {"web": {"x": api}}
    dynamic.prune(load_config({"pools": {"other": {"backends": [A]}}}))
    assert dynamic.configs == {}


async def test_discovered_addresses_keep_their_backend_and_vanished_ones_drain() -> None:
    app = LoadBalancer(_config(A, WEB, health_check=CHECK))
    await app.startup()
    try:
        runtime = app.runtime
        target = app.config.pools["web"].discover[0]
        one, two, three = ("127.0.0.1", 8000), ("127.0.0.2", 8000), ("127.0.0.3", 8000)
        runtime.discovered("web", target, frozenset({one, two}))
        pool = app.generation.pools["web"]
        first = pool.backends["web.test@127.0.0.1:8000"]
        assert first.origin == "dns" and first.url == "http://127.0.0.1:8000"
        assert first.state == "unhealthy"  # checked before it takes traffic
        first.set_healthy(True)
        runtime.discovered("web", target, frozenset({one, three}))
        assert pool.backends["web.test@127.0.0.1:8000"] is first and first.healthy
        gone = pool.backends["web.test@127.0.0.2:8000"]
        assert gone.state == "draining"
        gone.active_requests = 1  # still busy: it stays while it drains
        await runtime._reap()
        assert "web.test@127.0.0.2:8000" in pool.backends
        gone.active_requests = 0
        await runtime._reap()
        assert sorted(pool.backends) == ["a", "web.test@127.0.0.1:8000", "web.test@127.0.0.3:8000"]
        assert ("web", gone.id, gone.url) not in runtime.backends
        # Health checks follow the members: one task per backend the pool has now.
        checker = next(s for s in runtime.services if type(s).__name__ == "HealthChecker")
        assert set(checker._tasks) == set(pool.backends.values())  # type: ignore[attr-defined]
        # A reload of the file keeps them (and their state).
        await app.reload(_config(A, WEB, health_check=CHECK, strategy="random"))
        assert app.generation.pools["web"].backends["web.test@127.0.0.1:8000"] is first
    finally:
        await app.shutdown()
    await asyncio.sleep(0)


class _Resolver:
    """Answers from a script: a set of endpoints, or an exception to raise."""

    def __init__(self) -> None:
        self.answer: Any = frozenset({("10.0.0.1", 80)})

    async def lookup(self, target: Any) -> Answer:
        if isinstance(self.answer, Exception):
            raise self.answer
        return Answer(self.answer, 2.0)


async def test_failed_lookups_keep_the_set_and_are_logged_once(caplog: Any) -> None:
    answers: list[frozenset[Endpoint]] = []
    counted: list[tuple[str, str]] = []
    discovery = Discovery(lambda pool, target, endpoints: answers.append(endpoints))
    discovery.count = lambda name, result: counted.append((name, result))
    discovery.configure(load_config({**_config(WEB), "discovery": {"interval": "10s"}}))
    resolver = _Resolver()
    discovery.resolver = resolver  # type: ignore[assignment]
    key = ("web", DiscoverConfig("dns", "web.test", 8000))
    assert await discovery.lookup(key) == 2.0  # the TTL, shorter than the interval
    resolver.answer = DiscoveryError("web.test: no resolver answered in time")
    with caplog.at_level(logging.INFO, "lb.discovery"):
        for _ in range(3):
            assert await discovery.lookup(key) == 10.0
        resolver.answer = frozenset()  # empty: no better
        await discovery.lookup(key)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "keeping the last 1 address(es)" in failures[0].getMessage()
    assert answers == [frozenset({("10.0.0.1", 80)})]  # nothing handed on while failing
    assert counted == [("web.test", "ok")] + [("web.test", "failed")] * 4
    resolver.answer = frozenset({("10.0.0.2", 80)})
    with caplog.at_level(logging.INFO, "lb.discovery"):
        await discovery.lookup(key)
    assert "answers again" in caplog.records[-2].getMessage()
    assert answers[-1] == {("10.0.0.2", 80)}


async def test_backends_added_or_removed_while_a_reload_builds_are_not_lost() -> None:
    app = LoadBalancer(_config(A))
    await app.startup()
    try:
        runtime = app.runtime
        leaving = runtime.add_backend("web", BackendConfig("http://127.0.0.1:9004", "y"))
        assert leaving is not None
        new = runtime.build(load_config(_config(A, strategy="random")))
        # While the new generation's services start, the API adds one backend and removes one.
        added = runtime.add_backend("web", BackendConfig("http://127.0.0.1:9005", "x"))
        runtime.remove_backend("web", "y")
        await runtime.commit(new)
        pool = app.generation.pools["web"]
        assert pool is new.pools["web"] and pool.backends["x"] is added
        assert pool.backends["y"] is leaving and leaving.state == "draining"
        await runtime._reap()
        assert sorted(pool.backends) == ["a", "x"]
    finally:
        await app.shutdown()

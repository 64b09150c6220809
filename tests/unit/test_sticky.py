"""Sticky sessions (SPEC section 4): opaque, stable cookie values; pin, re-pin, every strategy."""

from __future__ import annotations

from typing import Any

import pytest

from lb.config import BackendConfig, PoolConfig, StickyConfig, load_config
from lb.pool import Pool
from lb.strategy import BUILTINS, PickRequest
from lb.strategy.sticky import StickySessions


def pool_of(strategy: str = "round_robin", sticky: StickyConfig | None = None, **kw: Any) -> Pool:
    config = PoolConfig(
        name=kw.pop("name", "web"),
        backends=tuple(
            BackendConfig(f"http://10.0.0.{i + 1}:8080", f"10.0.0.{i + 1}:8080", 1)
            for i in range(3)
        ),
        strategy=strategy,
        sticky=sticky or StickyConfig(),
        **kw,
    )
    return Pool(config)


def request(cookie: str | None = None, ip: str = "10.1.1.1") -> PickRequest:
    headers = [(b"cookie", cookie.encode())] if cookie is not None else []
    return PickRequest({"type": "http", "headers": headers}, ip)


def cookie_for(pool: Pool, backend_id: str) -> str:
    assert pool.sticky is not None
    return f"lb_sticky={pool.sticky.value(backend_id)}"


def test_value_is_opaque_and_the_same_in_every_process() -> None:
    one = StickySessions(StickyConfig(), "web")
    other = StickySessions(StickyConfig(), "web")
    value = one.value("10.0.0.1:8080")
    assert value == other.value("10.0.0.1:8080")
    assert len(value) == 16 and "10" not in value and "8080" not in value
    assert value != one.value("10.0.0.2:8080")


def test_secret_and_pool_name_change_the_value() -> None:
    plain = StickySessions(StickyConfig(), "web").value("a")
    assert StickySessions(StickyConfig(), "api").value("a") != plain
    secret = StickySessions(StickyConfig(secret="s3cret"), "web").value("a")
    assert secret != plain
    assert StickySessions(StickyConfig(secret="s3cret"), "api").value("a") != secret


def test_set_cookie_header_format() -> None:
    pool = pool_of(sticky=StickyConfig(cookie="srv", max_age=90.5))
    backend = pool.backends["10.0.0.2:8080"]
    assert pool.sticky is not None
    value = pool.sticky.value(backend.id)
    header = pool.sticky_cookie(request(), backend)
    assert header == f"srv={value}; Path=/; Max-Age=91; HttpOnly; SameSite=Lax".encode()
    assert pool.sticky_cookie(request(f"other=1; srv={value}"), backend) is None


@pytest.mark.parametrize("strategy", sorted(BUILTINS))
def test_a_cookie_pins_whatever_the_strategy(strategy: str) -> None:
    pool = pool_of(strategy)
    for backend_id in pool.backends:
        picks = {pool.pick(request(cookie_for(pool, backend_id), f"10.2.0.{i}")) for i in range(20)}
        assert picks == {pool.backends[backend_id]}


def test_no_or_unknown_cookie_picks_normally_and_sets_one() -> None:
    pool = pool_of()
    for cookie in (None, "lb_sticky=garbage", "lb_sticky=", "lb_sticky"):
        r = request(cookie)
        backend = pool.pick(r)
        assert backend is not None
        header = pool.sticky_cookie(r, backend)
        assert header is not None and header.startswith(
            cookie_for(pool, backend.id).encode() + b";"
        )
    picks = {pool.pick(request("lb_sticky=nope")) for _ in range(3)}
    assert picks == set(pool.backends.values())  # the strategy's picks: round robin


@pytest.mark.parametrize(
    "make_unusable",
    [
        lambda b: b.set_admin_state("draining"),
        lambda b: b.set_admin_state("disabled"),
        lambda b: b.set_healthy(False),
        lambda b: b.set_ejected_until(1e12),
    ],
    ids=["draining", "disabled", "unhealthy", "ejected"],
)
def test_re_pins_when_the_pinned_backend_is_unusable(make_unusable: Any) -> None:
    pool = pool_of()
    pinned = pool.backends["10.0.0.2:8080"]
    r = request(cookie_for(pool, pinned.id))
    assert pool.pick(r) is pinned and pool.sticky_cookie(r, pinned) is None
    make_unusable(pinned)
    r = request(cookie_for(pool, pinned.id))
    other = pool.pick(r)
    assert other is not None and other is not pinned
    assert pool.sticky_cookie(r, other) == pool.sticky_cookie(request(), other)


def test_weight_zero_keeps_pinned_clients_but_takes_no_new_ones() -> None:
    pool = pool_of()
    pinned = pool.backends["10.0.0.1:8080"]
    pinned.set_weight(0)
    assert pool.pick(request(cookie_for(pool, pinned.id))) is pinned
    assert pinned not in {pool.pick(request()) for _ in range(10)}


def test_a_retry_leaves_the_pinned_backend_and_re_pins() -> None:
    pool = pool_of()
    pinned = pool.backends["10.0.0.3:8080"]
    r = request(cookie_for(pool, pinned.id))
    retry = pool.pick(r, (pinned,))
    assert retry is not None and retry is not pinned
    assert pool.sticky_cookie(r, retry) is not None


def test_backends_added_later_are_recognised() -> None:
    from lb.backend import Backend

    pool = pool_of()
    late = Backend(BackendConfig("http://10.0.0.9:80", "late", 1))
    pool.add(late)
    assert pool.pick(request(cookie_for(pool, "late"))) is late


def test_without_sticky_no_cookie_is_set() -> None:
    pool = Pool(PoolConfig(name="web", backends=(BackendConfig("http://a:1", "a:1"),)))
    backend = pool.pick(request())
    assert backend is not None and pool.sticky is None
    assert pool.sticky_cookie(request(), backend) is None


def test_config_secret() -> None:
    def sticky(value: object) -> StickyConfig | None:
        pools = {"web": {"backends": ["http://a:1"], "sticky": value}}
        return load_config({"pools": pools}).pools["web"].sticky

    assert sticky({"secret": "x"}) == StickyConfig(secret="x")
    assert sticky({"secret": ""}) == StickyConfig()
    assert sticky(True) == StickyConfig()

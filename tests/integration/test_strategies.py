"""SPEC section 4 through the real balancer: load-aware strategies avoid a slow backend, sticky
cookies pin and re-pin, and a plug-in strategy loads from its module path."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from conftest import pool_config

LOAD_AWARE = ["least_connections", "power_of_two_choices", "least_latency"]


async def hammer(url: str, total: int, concurrency: int) -> list[str]:
    """`total` GETs from `concurrency` concurrent clients; the backend name of each answer."""
    names: list[str] = []
    remaining = iter(range(total))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for _ in remaining:
            response = await client.get("/")
            assert response.status_code == 200
            names.append(response.json()["backend"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return names


@pytest.mark.parametrize("strategy", LOAD_AWARE)
async def test_a_slow_backend_gets_less_traffic(
    strategy: str, start_backends: Any, start_balancer: Any
) -> None:
    backends = start_backends(3)
    slow = backends[0][0]
    slow.delay = 0.5
    options = {} if strategy == "least_connections" else {"seed": 1}
    config = pool_config(
        [server.url for _, server in backends], strategy=strategy, strategy_options=options
    )
    lb = start_balancer(config)
    total = 120
    names = await asyncio.wait_for(hammer(lb.url, total, concurrency=8), timeout=30)
    assert len(names) == total
    counts = {app.name: names.count(app.name) for app, _ in backends}
    # Round robin would send it 40; a load-aware strategy sends it a handful at most.
    assert counts["b1"] <= total // 8, counts
    assert counts["b2"] > 3 * counts["b1"] and counts["b3"] > 3 * counts["b1"], counts


def backend_id(server: Any) -> str:
    return f"127.0.0.1:{server.port}"


def sticky_value(response: httpx.Response, name: str = "srv") -> str | None:
    headers = response.headers.get_list("set-cookie")
    if not headers:
        return None
    (header,) = headers
    assert header.startswith(f"{name}=")
    assert header.endswith("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax")
    return header.split(";", 1)[0].split("=", 1)[1]


def test_sticky_cookie_pins_and_re_pins(start_backends: Any, start_balancer: Any) -> None:
    backends = start_backends(3)
    by_name = {app.name: server for app, server in backends}
    config = pool_config(
        [server.url for _, server in backends], sticky={"cookie": "srv", "max_age": "10m"}
    )
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        first = client.get("/")
        pinned_name = first.json()["backend"]
        value = sticky_value(first)
        assert value is not None
        pinned = by_name[pinned_name]
        assert str(pinned.port) not in value and "127.0.0.1" not in value

        # Round robin would rotate; the cookie keeps every request on one backend, uncookied.
        for _ in range(6):
            again = client.get("/", headers={"Cookie": f"other=1; srv={value}"})
            assert again.json()["backend"] == pinned_name
            assert sticky_value(again) is None

        # Drain it: the next request goes elsewhere and carries a new cookie, which then pins.
        pool = lb.app.generation.pools["web"]
        pool.backends[backend_id(pinned)].set_admin_state("draining")
        moved = client.get("/", headers={"Cookie": f"srv={value}"})
        new_name = moved.json()["backend"]
        new_value = sticky_value(moved)
        assert new_name != pinned_name and new_value not in (None, value)
        for _ in range(4):
            again = client.get("/", headers={"Cookie": f"srv={new_value}"})
            assert again.json()["backend"] == new_name and sticky_value(again) is None

        # The first backend is back: its old cookie pins to it again.
        pool.backends[backend_id(pinned)].set_admin_state("active")
        back = client.get("/", headers={"Cookie": f"srv={value}"})
        assert back.json()["backend"] == pinned_name and sticky_value(back) is None


def test_sticky_cookie_pins_websockets(start_backends: Any, start_balancer: Any) -> None:
    backends = start_backends(3)
    config = pool_config([server.url for _, server in backends], sticky={"max_age": "10m"})
    lb = start_balancer(config)
    ws_url = lb.url.replace("http://", "ws://") + "/ws"
    with connect(ws_url) as ws:
        header = ws.response.headers["Set-Cookie"]
        ws.send("hi")
        name = str(ws.recv(timeout=5)).split(":")[0]
    cookie = header.split(";", 1)[0]
    assert cookie.startswith("lb_sticky=")
    for _ in range(4):
        with connect(ws_url, additional_headers={"Cookie": cookie}) as ws:
            assert "Set-Cookie" not in ws.response.headers
            ws.send("hi")
            assert str(ws.recv(timeout=5)) == f"{name}:hi"


def test_plugin_strategy_from_a_module_path(start_backends: Any, start_balancer: Any) -> None:
    backends = start_backends(3)
    ids = ["canary-1", "stable-1", "stable-2"]
    urls = [{"url": server.url, "id": id_} for (_, server), id_ in zip(backends, ids, strict=True)]
    config = pool_config(
        urls,  # type: ignore[arg-type]
        strategy="example_strategy:Canary",
        strategy_options={"percent": 25, "seed": 3},
    )
    lb = start_balancer(config)
    assert type(lb.app.generation.pools["web"].strategy).__name__ == "Canary"
    with httpx.Client(base_url=lb.url) as client:
        names = [client.get("/").json()["backend"] for _ in range(80)]
    canary = names.count("b1")
    assert 8 <= canary <= 35, names
    assert names.count("b2") > 10 and names.count("b3") > 10


def test_a_bad_strategy_option_stops_the_app_with_the_key_path() -> None:
    from lb.app import LoadBalancer
    from lb.config import ConfigError

    config = pool_config(
        ["http://127.0.0.1:9"], strategy="least_latency", strategy_options={"decay": "soon"}
    )
    with pytest.raises(ConfigError) as caught:
        LoadBalancer(config)
    (line,) = caught.value.problems
    assert line.startswith("pools.web.strategy_options: decay: invalid duration 'soon'")


@pytest.mark.parametrize("strategy", ["ip_hash", "consistent_hash"])
def test_hashing_pins_each_key(strategy: str, start_backends: Any, start_balancer: Any) -> None:
    backends = start_backends(3)
    config = pool_config(
        [server.url for _, server in backends], strategy=strategy, hash_key="header:X-User"
    )
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        homes = {}
        for user in [f"user-{i}" for i in range(12)] * 3:
            name = client.get("/", headers={"X-User": user}).json()["backend"]
            assert homes.setdefault(user, name) == name
        assert len(set(homes.values())) > 1  # twelve keys do not all land on one backend

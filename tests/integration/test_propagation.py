"""Admin changes reach every worker of an instance, and every instance on a shared Redis (SPEC 9).

Which worker accepts a connection is up to the kernel, so the multi-process tests ask on a fresh
connection each time and wait until many answers in a row agree: a worker that missed a change
would have to be skipped by every one of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import pool_config
from lb.app import LoadBalancer
from servers import wait_until


def _config(*backends: Any, **top: Any) -> dict[str, Any]:
    return {**pool_config([{"url": s.url, "id": app.name} for app, s in backends]), **top}


@pytest.fixture
def fresh():  # type: ignore[no-untyped-def]
    """A client that opens a new connection for every request, so any worker may answer."""
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=30) as client:
        yield client


def _states(url: str, client: httpx.Client | None = None) -> dict[str, str]:
    response = (client or httpx).get(url + "/_lb/status")
    return {b["id"]: b["state"] for b in response.json()["pools"]["web"]["backends"]}


def _patch(url: str, backend: str, **body: Any) -> httpx.Response:
    return httpx.patch(f"{url}/_lb/pools/web/backends/{backend}", json=body)


def _every_time(check: Callable[[], bool], times: int = 20) -> Callable[[], bool]:
    """A condition that holds when `check` passes `times` times in a row."""
    return lambda: all(check() for _ in range(times))


def _backend_of(url: str, client: httpx.Client) -> str:
    return client.get(url + "/").headers["x-backend"]


# -- workers of one instance ------------------------------------------------------------------


def test_apps_sharing_a_control_dir_share_overrides_and_reloads(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file, tmp_path, monkeypatch
) -> None:
    """Two workers of one instance, as two apps in this process: deterministic which is which."""
    monkeypatch.setenv("LB_CONTROL_DIR", str(tmp_path / "control"))
    b1, b2, b3 = start_backends(3)
    path = config_file(_config(b1, b2))
    one, two = start_balancer(path), start_balancer(path)

    assert _patch(one.url, "b1", state="draining").status_code == 200
    wait_until(lambda: _states(two.url)["b1"] == "draining", timeout=5)
    assert _patch(two.url, "b2", weight=3).status_code == 200
    wait_until(lambda: one.app.generation.pools["web"].backends["b2"].weight == 3, timeout=5)

    config_file(_config(b1, b2, b3))
    assert httpx.post(one.url + "/_lb/reload").json()["status"] == "reloaded"
    wait_until(lambda: "b3" in _states(two.url), timeout=5)
    # Overrides outlive the reload in both.
    assert _states(two.url)["b1"] == _states(one.url)["b1"] == "draining"

    # A worker that starts later (a restart after a crash) catches up at start-up.
    three = start_balancer(path)
    assert _states(three.url) == {"b1": "draining", "b2": "healthy", "b3": "healthy"}
    assert three.app.generation.pools["web"].backends["b2"].weight == 3

    # Changes that cross: whatever the order, every worker ends with the later one.
    _patch(one.url, "b3", state="disabled")
    _patch(two.url, "b3", state="active")
    for server in (one, two, three):
        wait_until(lambda s=server: _states(s.url)["b3"] == "healthy", timeout=5)


def test_a_cache_purge_reaches_the_other_workers(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("LB_CONTROL_DIR", str(tmp_path / "control"))
    (b1,) = start_backends(1)
    config = _config(b1, cache={"store": "memory"})
    one, two = start_balancer(config), start_balancer(config)
    target = "/cache/x?h=cache-control:max-age=60"
    for server in (one, two):
        httpx.get(server.url + target)
        assert httpx.get(server.url + target).headers["x-cache"] == "HIT"
    assert httpx.delete(one.url + "/_lb/cache").json()["purged"] == 1
    assert httpx.get(one.url + target).headers["x-cache"] == "MISS"
    wait_until(lambda: httpx.get(two.url + target).headers["x-cache"] == "MISS", timeout=5)


def test_lb_serve_workers_share_patch_reload_and_sighup_without_failed_requests(  # type: ignore[no-untyped-def]
    start_backends, lb_process, fresh
) -> None:
    b1, b2, b3 = start_backends(3)
    lb = lb_process(_config(b1, b2), workers=2)

    assert _patch(lb.url, "b1", state="draining").status_code == 200
    wait_until(_every_time(lambda: _backend_of(lb.url, fresh) == "b2"), timeout=30)

    lb.write_config(_config(b1, b2, b3))
    assert httpx.post(lb.url + "/_lb/reload").json()["status"] == "reloaded"
    wait_until(_every_time(lambda: "b3" in _states(lb.url, fresh)), timeout=30)

    # SIGHUP to the supervisor reloads every worker in place, while clients keep sending.
    failures: list[str] = []
    stop = threading.Event()
    sent = [0]

    def load() -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(limits=limits, timeout=30) as client:
            while not stop.is_set() and sent[0] < 20_000:
                try:
                    status = client.get(lb.url + "/").status_code
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                sent[0] += 1
                if status != 200:
                    failures.append(str(status))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        lb.write_config(_config(b1, b3))
        os.kill(lb.process.pid, signal.SIGHUP)
        expected = {"b1": "draining", "b3": "healthy"}
        wait_until(_every_time(lambda: _states(lb.url, fresh) == expected), timeout=30)
        wait_until(lambda: sent[0] >= 100, timeout=30)
    finally:
        stop.set()
        thread.join(15)
    assert failures == []
    assert "Received SIGHUP, restarting processes" not in lb.output()  # reloaded, not restarted

    lb.write_config("pools: {web: {backends: [nope]}}\n")
    os.kill(lb.process.pid, signal.SIGHUP)
    wait_until(lambda: "has problems, the running config is unchanged" in lb.output(), timeout=30)
    assert _every_time(lambda: _states(lb.url, fresh) == expected)()
    assert lb.stop() == 0


def test_gunicorn_workers_share_a_patch(start_backends, lb_process, fresh) -> None:  # type: ignore[no-untyped-def]
    b1, b2 = start_backends(2)
    lb = lb_process(_config(b1, b2), workers=2, gunicorn=True)
    assert _patch(lb.url, "b2", state="disabled").status_code == 200
    wait_until(_every_time(lambda: _backend_of(lb.url, fresh) == "b1"), timeout=30)
    assert _patch(lb.url, "b2", state="active").status_code == 200
    wait_until(_every_time(lambda: _states(lb.url, fresh)["b2"] == "healthy"), timeout=30)


# -- instances on a shared Redis --------------------------------------------------------------


@pytest.mark.redis
def test_instances_on_one_redis_share_overrides(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file, redis_server, tmp_path, monkeypatch
) -> None:
    b1, b2 = start_backends(2)
    limit = {"rate": 1000, "burst": 1000, "store": "redis", "redis_url": redis_server.url}
    path = config_file(_config(b1, b2, rate_limit=limit))
    instances = []
    for name in ("east", "west"):  # two instances: each its own control directory
        monkeypatch.setenv("LB_CONTROL_DIR", str(tmp_path / name))
        instances.append(start_balancer(LoadBalancer(path)))
    east, west = instances

    drained = _patch(east.url, "b1", state="draining")
    assert drained.status_code == 200
    # West acknowledged over the bus before east answered: it has applied the change already.
    assert drained.json()["applied"] == {"workers": 1, "of": 1, "not_applied": [], "instances": 1}
    assert _states(west.url)["b1"] == "draining"
    # West wrote it into its own control file: a worker it starts later knows it too.
    late = start_balancer(LoadBalancer(path))
    assert _states(late.url)["b1"] == "draining"
    # West now has two workers (`late` joined its control directory): still one instance.
    disabled = _patch(east.url, "b2", state="disabled").json()["applied"]
    assert disabled["instances"] == 1
    assert _states(late.url)["b2"] == _states(west.url)["b2"] == "disabled"
    _patch(east.url, "b2", state="active")

    # Redis goes away and comes back: the subscriptions are re-established.
    redis_server.restart()

    def enabled_everywhere() -> bool:
        _patch(west.url, "b1", state="active")  # may be lost while a subscriber reconnects
        return _states(east.url)["b1"] == "healthy"

    wait_until(enabled_everywhere, timeout=15, interval=0.3)


def test_a_new_kind_of_change_rides_the_same_wake_up(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, tmp_path, monkeypatch
) -> None:
    """What a module adds (say, backends found by discovery) is applied everywhere before
    `share` or `broadcast` returns, as an event (`on`) or as state (`on_document`)."""
    monkeypatch.setenv("LB_CONTROL_DIR", str(tmp_path / "control"))
    (b1,) = start_backends(1)
    one, two = start_balancer(_config(b1)), start_balancer(_config(b1))
    seen: list[Any] = []

    async def handler(data: dict[str, Any]) -> None:
        seen.append(("event", data))

    two.app.control.on("backend_added", handler)
    two.app.control.on_document(lambda document: seen.append(("state", document.get("found"))))

    def found(document: dict[str, Any], seq: int) -> bool:
        document["found"] = ["b9"]
        return True

    async def changes() -> list[Any]:
        control = one.app.control
        first = await control.share(found)
        assert seen[-1] == ("state", ["b9"])  # read by the other worker before share returned
        second = await control.broadcast("backend_added", {"id": "b9"})
        assert ("event", {"id": "b9"}) in seen
        return [first.to_json(), second.to_json()]

    assert one.loop is not None
    future = asyncio.run_coroutine_threadsafe(changes(), one.loop)
    both = {"workers": 2, "of": 2, "not_applied": []}
    assert future.result(10) == [both, both]

"""Hot reload (SPEC 5 and 8) through a real balancer: POST reload, the file watch, SIGHUP."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from conftest import pool_config
from lb.app import LoadBalancer
from servers import Load, wait_until


def _backends_of(config_urls: list[tuple[Any, Any]], **pool: Any) -> dict[str, Any]:
    return pool_config([{"url": s.url, "id": app.name} for app, s in config_urls], **pool)


def _status(url: str) -> dict[str, Any]:
    with httpx.Client() as client:  # a fresh connection each time
        response = client.get(url + "/_lb/status")
    assert response.status_code == 200, response.text
    return {b["id"]: b for b in response.json()["pools"]["web"]["backends"]}


def _reload(lb: Any) -> httpx.Response:
    return httpx.post(lb.url + "/_lb/reload", timeout=10)


def test_reload_under_load_adds_and_removes_backends_without_a_failed_request(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file
) -> None:
    backends = start_backends(3)
    b1, b2, b3 = backends
    lb = start_balancer(config_file(_backends_of([b1, b2])))
    # A long request on the backend the reload will remove: it must finish there.
    hung: dict[str, Any] = {}
    hang = threading.Thread(target=lambda: hung.update(r=httpx.get(lb.url + "/hang", timeout=20)))
    hang.start()
    wait_until(lambda: b1[0].in_flight + b2[0].in_flight == 1)
    removed, kept = (b1, b2) if b1[0].in_flight else (b2, b1)

    with Load(lb.url) as load:
        wait_until(lambda: load.count() >= 50)
        config_file(_backends_of([kept, b3]))
        response = _reload(lb)
        reloaded_at = time.monotonic()
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["status"] == "reloaded"
        assert report["pools"]["web"] == {
            "added": ["b3"],
            "removed": [removed[0].name],
            "kept": [kept[0].name],
        }
        wait_until(lambda: b3[0].count("/") >= 20)
        assert removed[0].in_flight == 1  # still serving the request it started
        removed[0].release.set()
        hang.join(20)
        wait_until(lambda: load.count() >= 300)

    assert hung["r"].status_code == 200 and hung["r"].text == "late"
    assert load.errors == []
    assert {status for _, status, _ in load.results} == {200}
    after = [backend for started, _, backend in load.results if started > reloaded_at]
    assert after and removed[0].name not in after and set(after) == {kept[0].name, "b3"}
    assert sorted(_status(lb.url)) == sorted([kept[0].name, "b3"])


def test_kept_backends_keep_counters_health_and_admin_changes(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file
) -> None:
    backends = start_backends(4)
    check = {"path": "/health", "interval": "200ms", "timeout": "150ms", "unhealthy_threshold": 1}
    backends[2][0].health_status = 503
    lb = start_balancer(config_file(_backends_of(backends[:3], health_check=check)))
    pool = lb.app.generation.pools["web"]
    wait_until(lambda: _status(lb.url)["b3"]["state"] == "unhealthy")
    with httpx.Client(base_url=lb.url) as client:
        for _ in range(4):
            assert client.get("/").status_code == 200
    objects = dict(pool.backends)
    assert httpx.patch(lb.url + "/_lb/pools/web/backends/b2", json={"state": "draining"}).is_success
    assert httpx.patch(lb.url + "/_lb/pools/web/backends/b1", json={"weight": 5}).is_success

    # b4 fails its checks at first, so "unhealthy until its checks pass" holds however late the
    # status read below comes (a 200 ms interval can pass two checks on a loaded machine).
    backends[3][0].health_status = 503
    config_file(_backends_of(backends, health_check=check))  # adds b4
    assert _reload(lb).json()["status"] == "reloaded"
    status = _status(lb.url)
    assert status["b1"]["requests_total"] == 2 and status["b1"]["weight"] == 5
    assert status["b2"]["state"] == "draining" and status["b2"]["requests_total"] == 2
    assert status["b3"]["state"] == "unhealthy"
    new_pool = lb.app.generation.pools["web"]
    assert all(new_pool.backends[i] is objects[i] for i in ("b1", "b2", "b3"))
    assert status["b4"]["state"] == "unhealthy"  # until its checks pass
    backends[3][0].health_status = 200
    wait_until(lambda: _status(lb.url)["b4"]["state"] == "healthy")

    # The file changes b1's weight: the file wins over the earlier runtime weight.
    config = _backends_of(backends, health_check=check)
    config["pools"]["web"]["backends"][0]["weight"] = 2
    config_file(config)
    assert _reload(lb).json()["status"] == "reloaded"
    assert _status(lb.url)["b1"]["weight"] == 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("pools: {web: {backends: [", "config: invalid YAML"),
        ("pools:\n  web:\n    backends: [ftp://x]\n", "pools.web.backends[0].url: not an http"),
        ("", "config: empty file"),
        ("pools: {}\nbogus: 1\n", "bogus: unknown key"),
        (None, "config: cannot read"),
    ],
)
def test_a_bad_file_is_400_with_the_problems_and_the_running_config_stays(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file, content: str | None, problem: str
) -> None:
    backends = start_backends(2)
    path = config_file(_backends_of(backends))
    lb = start_balancer(path)
    before = lb.app.generation
    if content is None:
        os.remove(path)
    else:
        config_file(content)
    response = _reload(lb)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_config"
    assert any(p.startswith(problem) for p in body["problems"]), body["problems"]
    assert lb.app.generation is before
    assert sorted(_status(lb.url)) == ["b1", "b2"]
    assert httpx.get(lb.url + "/").status_code == 200


def test_an_unchanged_file_reloads_to_no_change(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file
) -> None:
    backends = start_backends(1)
    lb = start_balancer(config_file(_backends_of(backends)))
    before = lb.app.generation
    report = _reload(lb).json()
    assert report["status"] == "unchanged" and report["pools"]["web"]["kept"] == ["b1"]
    assert lb.app.generation is before


def test_a_websocket_stays_open_across_a_reload_that_removes_its_backend(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file
) -> None:
    from websockets.sync.client import connect

    b1, b2 = start_backends(2)
    lb = start_balancer(config_file(_backends_of([b1])))
    with connect(f"ws://127.0.0.1:{lb.port}/ws") as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "b1:before"
        config_file(_backends_of([b2]))
        assert _reload(lb).json()["pools"]["web"]["removed"] == ["b1"]
        ws.send("after")
        assert ws.recv(timeout=5) == "b1:after"  # still on the backend it started with
    assert httpx.get(lb.url + "/").headers["x-backend"] == "b2"


def test_an_added_backend_gets_traffic_only_once_its_checks_pass(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file
) -> None:
    b1, b2 = start_backends(2)
    check = {"path": "/health", "interval": "200ms", "timeout": "150ms", "healthy_threshold": 1}
    lb = start_balancer(config_file(_backends_of([b1], health_check=check)))
    b2[0].health_status = 503
    config_file(_backends_of([b1, b2], health_check=check))
    assert _reload(lb).status_code == 200
    assert _status(lb.url)["b2"]["state"] == "unhealthy"
    with httpx.Client(base_url=lb.url) as client:
        assert {client.get("/").headers["x-backend"] for _ in range(6)} == {"b1"}
    b2[0].health_status = 200
    wait_until(lambda: _status(lb.url)["b2"]["state"] == "healthy")
    with httpx.Client(base_url=lb.url) as client:
        assert {client.get("/").headers["x-backend"] for _ in range(6)} == {"b1", "b2"}


def test_watch_config_reloads_a_changed_file_and_skips_a_bad_one(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="lb.control")
    b1, b2 = start_backends(2)
    config = _backends_of([b1])
    config["server"] = {"watch_config": True}
    app = LoadBalancer(config_file(config))
    app.control.watch_interval = 0.1  # the default second, shortened for the test's sake
    lb = start_balancer(app)
    config["pools"] = _backends_of([b1, b2])["pools"]
    config_file(config)
    wait_until(lambda: sorted(_status(lb.url)) == ["b1", "b2"], timeout=10)
    config_file("pools: {web: {backends: [nope]}}\n")
    wait_until(lambda: "reload (config file changed) failed" in caplog.text, timeout=10)
    assert sorted(_status(lb.url)) == ["b1", "b2"]
    config["pools"] = _backends_of([b2])["pools"]
    config_file(config)
    wait_until(lambda: sorted(_status(lb.url)) == ["b2"], timeout=10)


def test_sighup_reloads_lb_serve_started_under_nohup(start_backends, lb_process) -> None:  # type: ignore[no-untyped-def]
    # nohup starts its command with SIGHUP ignored, and the lb process inherits that.
    b1, b2 = start_backends(2)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        lb = lb_process(_backends_of([b1]))
    finally:
        signal.signal(signal.SIGHUP, previous)
    lb.write_config(_backends_of([b1, b2]))
    os.kill(lb.process.pid, signal.SIGHUP)
    wait_until(lambda: sorted(_status(lb.url)) == ["b1", "b2"], timeout=10)
    assert lb.stop() == 0


def test_sighup_reloads_lb_serve_and_a_bad_file_changes_nothing(  # type: ignore[no-untyped-def]
    start_backends, lb_process
) -> None:
    b1, b2 = start_backends(2)
    lb = lb_process(_backends_of([b1]))
    lb.write_config(_backends_of([b1, b2]))
    os.kill(lb.process.pid, signal.SIGHUP)
    wait_until(lambda: sorted(_status(lb.url)) == ["b1", "b2"], timeout=10)
    lb.write_config("pools: {web: {backends: [nope]}}\n")
    os.kill(lb.process.pid, signal.SIGHUP)
    wait_until(lambda: "config reload (SIGHUP) failed" in lb.output(), timeout=10)
    assert lb.process.poll() is None
    assert sorted(_status(lb.url)) == ["b1", "b2"]
    assert httpx.get(lb.url + "/").status_code == 200
    assert lb.stop() == 0

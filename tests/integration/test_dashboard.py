"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import pool_config
from programs import program
from servers import Load, wait_until

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "dash-token"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=program("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(message: Any) -> None:
        # Failed loads are expected (a 401 before the token, the balancer stopping before the
        # page at teardown); script errors and Content-Security-Policy refusals are not.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    page.on("console", console)
    yield page
    context.close()
    assert errors == []


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _card(page: Any, backend: str) -> Any:
    return page.locator(f'[data-backend="web/{backend}"]')


def _state(lb: Any, backend: str, client: Any = httpx, **headers: str) -> str:
    body = client.get(lb.url + "/_lb/status", headers=headers).json()
    return next(b["state"] for b in body["pools"]["web"]["backends"] if b["id"] == backend)


def test_dashboard_follows_a_dead_backend_and_drains_one(  # type: ignore[no-untyped-def]
    page, start_backends, start_balancer
) -> None:
    expect = _expect()
    backends = start_backends(3)
    check = {
        "path": "/health",
        "interval": "200ms",
        "timeout": "150ms",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    }
    urls = [{"url": s.url, "id": app.name} for app, s in backends]
    lb = start_balancer(pool_config(urls, health_check=check))
    backends[0][0].delay = 0.004  # some latency worth charting
    with Load(lb.url, clients=2):
        page.goto(lb.url + "/_lb/dashboard")
        for name in ("b1", "b2", "b3"):
            expect(_card(page, name).locator('[data-role="state"]')).to_have_text("healthy")
        expect(page.locator("#conn")).to_have_attribute("data-state", "up")

        backends[1][1].stop()  # b2 dies; its health checks fail from now on
        b2 = _card(page, "b2")
        expect(b2.locator('[data-role="state"]')).to_have_text("unhealthy", timeout=10_000)
        expect(b2).to_have_class(re.compile(r"\bstate-unhealthy\b"))
        expect(page.locator('section[data-pool="web"]')).to_have_class(re.compile("degraded"))

        b3 = _card(page, "b3")
        b3.locator('[data-action="drain"]').click()
        expect(b3.locator('[data-role="state"]')).to_have_text("draining")
        expect(b3).to_have_class(re.compile(r"\bstate-draining\b"))
        expect(b3.locator('[data-action="drain"]')).to_be_hidden()
        expect(b3.locator('[data-action="enable"]')).to_be_visible()
        assert _state(lb, "b3") == "draining"

        b1 = _card(page, "b1")
        expect(b1.locator('[data-role="rps"]')).not_to_have_text("–")
        expect(b1.locator('[data-role="p99"]')).to_have_text(re.compile(r"ms$"))
        expect(b1).to_have_attribute("data-points", re.compile(r"^([6-9]|\d\d+)$"), timeout=10_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        b3.locator('[data-action="enable"]').click()
        expect(b3.locator('[data-role="state"]')).to_have_text("healthy")
        assert _state(lb, "b3") == "healthy"


def test_dashboard_with_a_token_and_across_a_reload(  # type: ignore[no-untyped-def]
    page, start_backends, start_balancer, config_file
) -> None:
    expect = _expect()
    b1, b2 = start_backends(2)
    config = {**pool_config([{"url": b1[1].url, "id": "b1"}]), "admin": {"token": TOKEN}}
    lb = start_balancer(config_file(config))

    # Without the token: a form that asks for it, then the page.
    page.goto(lb.url + "/_lb/dashboard")
    page.fill('input[name="token"]', TOKEN)
    page.click('button[type="submit"]')
    expect(_card(page, "b1").locator('[data-role="state"]')).to_have_text("healthy")
    assert "token" not in page.url  # taken out of the address bar at once

    _card(page, "b1").locator('[data-action="disable"]').click()
    expect(_card(page, "b1").locator('[data-role="state"]')).to_have_text("disabled")
    assert _state(lb, "b1", authorization=f"Bearer {TOKEN}") == "disabled"

    config["pools"]["web"]["backends"].append({"url": b2[1].url, "id": "b2"})
    config_file(config)
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.post(lb.url + "/_lb/reload", headers=auth).status_code == 200
    expect(_card(page, "b2").locator('[data-role="state"]')).to_have_text("healthy")
    expect(_card(page, "b1").locator('[data-role="state"]')).to_have_text("disabled")

    # A backend the admin API adds shows up, with where it comes from.
    added = {"url": b2[1].url, "id": "b2-api"}
    response = httpx.post(lb.url + "/_lb/pools/web/backends", headers=auth, json=added)
    assert response.status_code == 201
    expect(_card(page, "b2-api").locator('[data-role="origin"]')).to_have_text("api")
    expect(_card(page, "b1").locator('[data-role="origin"]')).to_have_text("config")


def test_dashboard_of_several_workers(page, start_backends, lb_process) -> None:  # type: ignore[no-untyped-def]
    expect = _expect()
    b1, b2 = start_backends(2)
    lb = lb_process(pool_config([{"url": s.url, "id": app.name} for app, s in (b1, b2)]), 2)
    with Load(lb.url, clients=1):
        page.goto(lb.url + "/_lb/dashboard")
        _card(page, "b1").locator('[data-action="drain"]').click()
        state = _card(page, "b1").locator('[data-role="state"]')
        expect(state).to_have_text("draining")
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as fresh:
            wait_until(
                lambda: all(_state(lb, "b1", client=fresh) == "draining" for _ in range(10)), 30
            )
        expect(_card(page, "b1").locator('[data-role="rps"]')).to_have_text("0.00", timeout=10_000)
        expect(state).to_have_text("draining")
        expect(_card(page, "b2").locator('[data-role="rps"]')).not_to_have_text("–")
        # Both workers, by pid, with their heartbeat.
        rows = page.locator("#workers-body tr")
        expect(rows).to_have_count(2)
        pids = {str(w["pid"]) for w in httpx.get(lb.url + "/_lb/status").json()["workers"]}
        assert {rows.nth(i).get_attribute("data-pid") for i in range(2)} == pids
        expect(page.locator("#workers-meta")).to_have_text("2 live")


def test_dashboard_shows_a_pools_limits_and_its_queue(  # type: ignore[no-untyped-def]
    page, start_backends, start_balancer
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    expect = _expect()
    ((app, server),) = start_backends(1)
    app.delay = 1.5  # the last of three waits 3 s, within timeouts.pool
    limits = {"max_connections": 1, "max_pending": 2}
    config = pool_config([{"url": server.url, "id": "b1"}], limits=limits)
    # Only /q reaches the pool, not the page's /favicon.ico (two pools: no fallback route).
    config["routes"] = [{"pool": "web", "path_prefix": "/q"}]
    config["pools"]["other"] = {"backends": [server.url]}
    lb = start_balancer(config)
    page.goto(lb.url + "/_lb/dashboard")
    meta = page.locator('section[data-pool="web"]')
    expect(meta).to_contain_text("limits connections ≤ 1, pending ≤ 2")
    card = _card(page, "b1")
    expect(card.locator('[data-role="pending"]')).to_have_text("0")
    with ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(httpx.get, lb.url + f"/q/{i}", timeout=20) for i in range(3)]
        expect(card.locator('[data-role="connections"]')).to_have_text("1")
        expect(card.locator('[data-role="pending"]')).to_have_text("2")
        expect(card.locator('[data-role="pending"]')).to_have_class(re.compile(r"\bbad\b"))
        assert [a.result().status_code for a in answers] == [200] * 3

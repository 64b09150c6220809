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

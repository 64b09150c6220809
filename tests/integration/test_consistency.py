"""Four workers behave as one balancer (SPEC 9), under `lb serve --workers 4` and under gunicorn.

No waiting for propagation here: each check runs right after the admin answer (or after the
requests completed), on new connections, so whichever worker the kernel hands a connection to must
already agree. A worker that lagged would show on some of the 40 requests.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import pool_config
from servers import wait_until

WORKERS = 4
LAUNCHERS = [pytest.param(False, id="lb-serve"), pytest.param(True, id="gunicorn")]


def _config(*backends: Any) -> dict[str, Any]:
    config = pool_config([{"url": s.url, "id": app.name} for app, s in backends])
    return {**config, "logging": {"access_log": False}}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A client that opens a new connection for every request, so any worker may answer."""
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=10) as client:
        yield client


def _worker_pids(client: httpx.Client, url: str) -> list[int]:
    return [w["pid"] for w in client.get(url + "/_lb/status").json()["workers"]]


def _start(lb_process: Any, client: httpx.Client, config: dict[str, Any], gunicorn: bool) -> Any:
    lb = lb_process(config, workers=WORKERS, gunicorn=gunicorn)
    # Every worker has loaded the app and joined the worker table.
    wait_until(lambda: len(_worker_pids(client, lb.url)) == WORKERS, 30, 0.1)
    return lb


@pytest.mark.parametrize("gunicorn", LAUNCHERS)
def test_admin_changes_reach_every_worker_before_the_answer(  # type: ignore[no-untyped-def]
    start_backends, lb_process, client, gunicorn
) -> None:
    b1, b2, b3 = start_backends(3)
    lb = _start(lb_process, client, _config(b1, b2), gunicorn)
    # A drain is honoured by the very next requests, whichever worker takes them.
    patched = client.patch(lb.url + "/_lb/pools/web/backends/b1", json={"state": "draining"})
    assert patched.status_code == 200
    served = [client.get(lb.url + "/").headers["x-backend"] for _ in range(40)]
    assert served == ["b2"] * 40
    body = patched.json()
    assert body["state"] == "draining"  # the fields it had before stay
    assert body["applied"] == {"workers": WORKERS, "of": WORKERS, "not_applied": []}

    # A reload that adds a backend is live in every worker before its 200.
    lb.write_config(_config(b1, b2, b3))
    reloaded = client.post(lb.url + "/_lb/reload")
    assert reloaded.json()["status"] == "reloaded"
    for _ in range(40):
        ids = [
            b["id"] for b in client.get(lb.url + "/_lb/status").json()["pools"]["web"]["backends"]
        ]
        assert ids == ["b1", "b2", "b3"]
    assert reloaded.json()["applied"] == {"workers": WORKERS, "of": WORKERS, "not_applied": []}

    # A killed worker is replaced, and the replacement applies the overrides before it serves.
    assert (
        client.patch(lb.url + "/_lb/pools/web/backends/b3", json={"state": "disabled"}).json()[
            "applied"
        ]["workers"]
        == WORKERS
    )
    before = _worker_pids(client, lb.url)
    os.kill(before[-1], signal.SIGKILL)

    def replaced() -> bool:
        pids = _worker_pids(client, lb.url)
        return len(pids) == WORKERS and before[-1] not in pids

    wait_until(replaced, 30, 0.05)
    served = [client.get(lb.url + "/").headers["x-backend"] for _ in range(40)]
    assert served == ["b2"] * 40
    # Its status, like every worker's, shows it alive.
    workers = client.get(lb.url + "/_lb/status").json()["workers"]
    assert all(w["last_seen"] >= w["started"] > 0 for w in workers)


@pytest.mark.parametrize("gunicorn", LAUNCHERS)
def test_first_scrape_and_status_count_every_completed_request(  # type: ignore[no-untyped-def]
    start_backends, lb_process, client, gunicorn
) -> None:
    ((backend, server),) = start_backends(1)
    lb = _start(lb_process, client, _config((backend, server)), gunicorn)
    for _ in range(100):
        assert client.get(lb.url + "/").status_code == 200
    text = client.get(lb.url + "/_lb/metrics").text
    status = client.get(lb.url + "/_lb/status").json()
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("lb_requests_total{")
    )
    assert total == 100
    assert sum(b["requests_total"] for b in status["pools"]["web"]["backends"]) == 100

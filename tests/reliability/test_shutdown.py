"""SIGTERM under load: `lb serve` stops accepting at once, finishes in-flight requests, exits 0."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx

from conftest import pool_config
from servers import wait_until


def outcome(url: str) -> str:
    """One request on a new connection: "ok", or how it failed. Refused at connect, or closed
    before any byte of a response, are clean refusals; anything else is not."""
    try:
        with httpx.Client(timeout=10) as client:
            response = client.get(url)
    except httpx.ConnectError:
        return "refused"
    except httpx.RemoteProtocolError as exc:
        return "closed-before-response" if "without sending" in str(exc) else f"broken: {exc}"
    except httpx.ReadError as exc:
        return f"reset: {exc}"
    if response.status_code == 200 and response.json().get("backend") == "b1":
        return "ok"
    return f"status {response.status_code}"


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_under_load_finishes_in_flight_refuses_new_and_exits_0(
    start_backends, lb_process
) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["server"] = {"graceful_timeout": "10s"}
    lb = lb_process(config)
    url = lb.url + "/echo"
    assert outcome(url) == "ok"

    # Load: clients opening a new connection per request, before and after the signal.
    stop = threading.Event()
    results: list[str] = []

    def load() -> None:
        while not stop.is_set():
            results.append(outcome(url))

    loaders = [threading.Thread(target=load) for _ in range(4)]
    for thread in loaders:
        thread.start()
    wait_until(lambda: results.count("ok") >= 20)

    # Slow requests in flight at the backend when the signal comes.
    backend.delay = 1.0
    slow: list[str] = []
    slow_url = lb.url + "/slow"
    in_flight = [threading.Thread(target=lambda: slow.append(outcome(slow_url))) for _ in range(10)]
    for thread in in_flight:
        thread.start()
    wait_until(lambda: backend.count("/slow") == 10)  # all ten at the backend, in its delay
    before = len(results)
    os.kill(lb.process.pid, signal.SIGTERM)
    signalled = time.monotonic()

    wait_until(lambda: refused(lb.port), timeout=2)
    refused_after = time.monotonic() - signalled
    for thread in in_flight:
        thread.join(15)
    code = lb.process.wait(15)
    exited_after = time.monotonic() - signalled
    stop.set()
    for thread in loaders:
        thread.join(15)

    assert slow == ["ok"] * 10, slow  # every in-flight request finished, whole
    assert refused_after < 1.0  # the listener closed at once, not after the drain
    assert exited_after < 10, exited_after  # it waited for them, not for the whole grace period
    assert code == 0, lb.output()
    after = results[before:]
    assert {r for r in results if r != "ok"} <= {"refused", "closed-before-response"}, results
    assert "refused" in after
    assert "Traceback" not in lb.output()

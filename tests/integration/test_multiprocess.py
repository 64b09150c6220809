"""Metrics and status summed over workers: `lb serve --workers 2`, and gunicorn with lb's worker.

Each test drives a known number of requests, each on a new connection so that both workers serve
some, until both have (bounded), then checks the exact total on several scrapes.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from lb import multiprocess as mp
from servers import environ_of, free_port, lb_env, wait_until, workers_of

MAX_REQUESTS = 400  # bound on the traffic it may take for both workers to have served some


def served_by_worker(directory: str) -> dict[int, float]:
    """lb_requests_total per worker pid, read from each worker's own counter file."""
    out = {}
    for path in glob.glob(os.path.join(directory, "counter_*.db")):
        pid = int(Path(path).stem.rsplit("_", 1)[1])
        metrics = MultiProcessCollector.merge([path])  # type: ignore[no-untyped-call]
        out[pid] = sum(s.value for m in metrics for s in m.samples if s.name == "lb_requests_total")
    return out


def scraped_total(url: str, name: str = "lb_requests_total") -> float:
    text = httpx.get(url + "/_lb/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def drive(url: str, directory: str) -> int:
    """Requests on fresh connections until two workers have served some; returns how many."""
    sent = 0
    while sent < MAX_REQUESTS:
        for _ in range(10):
            assert httpx.get(url + "/").status_code == 200  # a new connection each
            sent += 1
        served = served_by_worker(directory)
        if sum(1 for v in served.values() if v > 0) >= 2:
            return sent
    raise AssertionError(f"one worker served all {sent} requests: {served_by_worker(directory)}")


def check_totals(url: str, expected: int) -> None:
    """Every scrape and status answer, whichever worker gives it, shows all workers' traffic."""
    wait_until(lambda: scraped_total(url) == expected, 10)
    # Multiprocess exposition (no *_created samples: those exist in a single process only).
    assert "lb_requests_created" not in httpx.get(url + "/_lb/metrics").text
    for _ in range(6):
        assert scraped_total(url) == expected
        assert scraped_total(url, "lb_request_duration_seconds_count") == expected

    def status_total() -> bool:
        doc = httpx.get(url + "/_lb/status").json()
        backends = doc["pools"]["web"]["backends"]
        return sum(b["requests_total"] for b in backends) == expected

    # Backend counters reach the shared files on each worker's 1 s refresh.
    wait_until(status_total, 10)


def test_lb_serve_two_workers_report_the_sum(start_backends, lb_process) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = {"pools": {"web": {"backends": [server.url]}}, "logging": {"access_log": False}}
    assert mp.ENV_DIR not in os.environ  # lb serve is to make its own directory
    lb = lb_process(config, workers=2)

    # lb serve made its own directory and named it to the workers it spawned.
    def directory() -> str | None:
        for child in workers_of(lb.process.pid):
            found = environ_of(child).get(mp.ENV_DIR)
            if found:
                return found
        return None

    path = wait_until(directory, 10)
    assert Path(path).name.startswith("lb-metrics-")
    wait_until(lambda: len(served_by_worker(path)) == 2, 20)  # both workers loaded the app
    sent = drive(lb.url, path)
    check_totals(lb.url, sent)
    assert backend.count() == sent

    # A worker killed outright: its counts stay in the sum, its live gauges leave it.
    victim = max(served_by_worker(path))
    os.kill(victim, signal.SIGKILL)
    # The next scrape after the supervisor reaped it sweeps the dead worker's live files.
    wait_until(lambda: _scrape_ok(lb.url) and victim not in mp.pids_with_live_files(path), 10)
    assert scraped_total(lb.url) == sent
    assert scraped_total(lb.url, "lb_backend_active_requests") == 0

    assert lb.stop() == 0
    assert not os.path.exists(path)  # the directory lb serve made is gone with it


def test_a_metrics_file_being_created_fails_no_read(start_backends, lb_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # prometheus-client creates a worker's file empty, then sizes it. A worker descheduled in
    # between (a loaded machine, a worker starting or seeing its first backend) left such a file
    # for another worker's status read or scrape: a 500 "Internal Server Error" in plain text.
    ((_, server),) = start_backends(1)
    config = {"pools": {"web": {"backends": [server.url]}}, "logging": {"access_log": False}}
    path = tmp_path / "metrics"
    lb = lb_process(config, workers=2, **{mp.ENV_DIR: str(path)})
    for kind in ("counter", "gauge_livesum"):  # this pid lives on: no sweep removes its files
        (path / f"{kind}_{os.getpid()}.db").write_bytes(b"")
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(limits=limits, timeout=30) as fresh:  # whichever worker answers
        for _ in range(6):
            status = fresh.get(lb.url + "/_lb/status")
            assert status.status_code == 200, status.text
            assert [b["url"] for b in status.json()["pools"]["web"]["backends"]] == [server.url]
            scrape = fresh.get(lb.url + "/_lb/metrics")
            assert scrape.status_code == 200, scrape.text
            assert "lb_pool_usable_backends" in scrape.text


def _scrape_ok(url: str) -> bool:
    try:
        scraped_total(url)
    except httpx.HTTPError:
        return False
    return True


@pytest.fixture
def gunicorn(tmp_path) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: dict[str, Any], *options: str, **env: str) -> str:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        args = [sys.executable, "-m", "gunicorn", "lb.app:app", *options]
        args += ["-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5"]
        with open(tmp_path / "gunicorn.log", "wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                args,
                env=lb_env(LB_CONFIG=str(path), **env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError((tmp_path / "gunicorn.log").read_text())
            try:
                return httpx.get(url + "/_lb/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30)
        return url

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def test_gunicorn_workers_report_the_sum(start_backends, gunicorn, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale = directory / "counter_1.db"
    stale.write_bytes(b"left over from an earlier run")
    url = gunicorn(
        {"pools": {"web": {"backends": [server.url]}}, "logging": {"access_log": False}},
        *("-c", "python:lb.gunicorn_conf"),
        PROMETHEUS_MULTIPROC_DIR=str(directory),
    )
    assert not stale.exists()  # emptied when gunicorn started
    wait_until(lambda: len(served_by_worker(str(directory))) == 2, 20)
    sent = drive(url, str(directory))
    check_totals(url, sent)
    assert backend.count() == sent


def test_gunicorn_spec_command_sums_workers_with_no_other_setup(start_backends, gunicorn) -> None:  # type: ignore[no-untyped-def]
    """`gunicorn lb.app:app -k lb.worker.UvicornWorker -w 2`, nothing else: lb's worker names a
    shared directory itself. (Which worker served is not visible here; a per-worker answer would
    show less than the total on some scrape.)"""
    ((backend, server),) = start_backends(1)
    assert mp.ENV_DIR not in os.environ
    url = gunicorn(
        {"pools": {"web": {"backends": [server.url]}}, "logging": {"access_log": False}},
        *("-k", "lb.worker.UvicornWorker"),
    )
    for _ in range(40):
        assert httpx.get(url + "/").status_code == 200
    check_totals(url, 40)
    assert backend.count() == 40

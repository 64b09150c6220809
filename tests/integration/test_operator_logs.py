"""SPEC sections 10 and 11, logs for operators: the access log's host, user_agent,
bytes_received and upstream_ms; SIGUSR1 reopening real files renamed under a running `lb serve`;
`format: json` making every line the process writes JSON."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import pool_config
from servers import SRC, raw_request, wait_until

TESTS = str(Path(__file__).resolve().parent.parent)


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_access_log_names_host_user_agent_bytes_received_and_upstream_time(
    start_backends, start_balancer, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    log = tmp_path / "access.log"
    config = pool_config([server.url])
    config["logging"] = {"access_log": True, "file": str(log)}
    config["routes"] = [{"pool": "web", "path_prefix": "/closed", "deny": ["127.0.0.0/8"]},
                        {"pool": "web", "path_prefix": "/"}]  # fmt: skip
    lb = start_balancer(config)
    headers = {"user-agent": "probe/1.0", "host": "shop.example:8443"}
    assert httpx.post(lb.url + "/order", content=b"x" * 1234, headers=headers).status_code == 200
    assert httpx.get(lb.url + "/closed", headers={"user-agent": "probe/1.0"}).status_code == 403
    records = wait_until(lambda: len(_lines(log)) == 2 and _lines(log))
    proxied, refused = records
    assert proxied["host"] == "shop.example:8443"
    assert proxied["user_agent"] == "probe/1.0"
    assert proxied["bytes_received"] == 1234
    assert 0 < proxied["upstream_ms"] <= proxied["duration_ms"]
    assert refused["status"] == 403 and refused["upstream_ms"] is None
    assert refused["bytes_received"] == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigusr1_reopens_renamed_log_files_and_never_stops_lb(
    start_backends, lb_process, tmp_path, workers: int
) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    config = pool_config([server.url])
    config["logging"] = {"access_log": True, "file": str(access), "error_file": str(errors)}
    lb = lb_process(config, workers=workers)
    # Every worker's app is up (and owns SIGUSR1), not only the one that answered first.
    wait_until(
        lambda: (
            sum("Application startup complete" in r["message"] for r in _lines(errors)) == workers
        )
    )
    with httpx.Client(base_url=lb.url) as client:
        assert client.get("/before").status_code == 200
        wait_until(lambda: len(_lines(access)) == 1)
        # What logrotate does: rename, then signal.
        os.rename(access, tmp_path / "access.log.1")
        os.rename(errors, tmp_path / "error.log.1")
        os.kill(lb.process.pid, signal.SIGUSR1)
        # Every worker reports the reopening, in the new error log.
        wait_until(
            lambda: (
                sum("log files reopened" in r["message"] for r in _lines(errors))
                >= workers + (workers > 1)
            )
        )
        for _ in range(10):
            assert client.get("/after").status_code == 200
        wait_until(lambda: len(_lines(access)) == 10)
    assert lb.process.poll() is None
    assert [r["path"] for r in _lines(access)] == ["/after"] * 10
    assert [r["path"] for r in _lines(tmp_path / "access.log.1")] == ["/before"]
    assert lb.stop() == 0


def test_json_format_makes_every_line_json_uvicorns_and_tracebacks_included(
    start_backends, lb_process
) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    config = pool_config([server.url], strategy="broken_strategy:Exploding")
    config["logging"] = {"access_log": True, "format": "json"}
    lb = lb_process(config, PYTHONPATH=SRC + os.pathsep + TESTS)
    assert httpx.get(lb.url + "/").status_code == 500  # the plug-in raises inside the app
    assert raw_request(lb.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status == 400
    wait_until(lambda: "Exception in ASGI application" in lb.output())
    assert lb.stop() == 0
    lines = lb.output().splitlines()
    records = [json.loads(line) for line in lines]  # every line, or this raises
    loggers = {r.get("logger") for r in records}
    assert {"uvicorn.error", "lb", "lb.server"} <= loggers, loggers
    (failure,) = [r for r in records if r.get("message", "").startswith("Exception in ASGI")]
    assert "Traceback" in failure["exception"]
    assert "a strategy plug-in failed" in failure["exception"]
    assert any(r.get("message", "").startswith("lb ") and "version" in r for r in records)
    assert any("request_id" in r and r["status"] == 400 for r in records)  # the access log


def test_json_format_under_gunicorn_with_lbs_conf_from_its_first_line(
    start_backends, lb_process
) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    config = pool_config([server.url])
    config["logging"] = {"access_log": True, "format": "json"}
    lb = lb_process(config, workers=2, gunicorn=True,
                    GUNICORN_CMD_ARGS="-c python:lb.gunicorn_conf")  # fmt: skip
    assert httpx.get(lb.url + "/").status_code == 200
    wait_until(lambda: '"request_id"' in lb.output())
    assert lb.stop() == 0
    records = [json.loads(line) for line in lb.output().splitlines()]
    loggers = {r.get("logger") for r in records}
    assert {"gunicorn.error", "uvicorn.error", "lb"} <= loggers, loggers
    assert records[0]["message"].startswith("Starting gunicorn")
    assert sum(r.get("message", "").startswith("lb ") for r in records) == 1  # the master's


def test_sigusr1_while_workers_start_ends_none_of_them(start_backends, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from servers import LbProcess

    ((app, server),) = start_backends(1)
    errors = tmp_path / "error.log"
    config = pool_config([server.url])
    config["logging"] = {"access_log": False, "error_file": str(errors)}
    path = tmp_path / "lb.yaml"
    path.write_text(yaml.safe_dump(config))
    lb = LbProcess(str(path), workers=2)
    try:
        # From the start line on (lb serve owns SIGUSR1), while the workers are still starting.
        wait_until(lambda: any(r["message"].startswith("lb ") for r in _lines(errors)), 20)
        for _ in range(20):
            os.kill(lb.process.pid, signal.SIGUSR1)
            wait_until(lambda: True)
        lb.wait_ready()
        wait_until(
            lambda: sum("Application startup complete" in r["message"] for r in _lines(errors)) == 2
        )
        messages = [r["message"] for r in _lines(errors)]
        assert not [m for m in messages if "died" in m], messages
    finally:
        assert lb.stop() == 0

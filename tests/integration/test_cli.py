"""The `lb` command line: check, serve (signals, bad config), demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
import yaml

from conftest import pool_config
from servers import free_port, lb_env, wait_until


def run_lb(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lb", *args],
        env=lb_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_valid_config_prints_one_line_summary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ok.yaml"
    # A check timeout above its interval, as operators write for Envoy and HAProxy (SPEC 5).
    path.write_text(
        "pools:\n  web:\n    backends: [http://127.0.0.1:9001]\n"
        "    health_check: {interval: 250ms, timeout: 2s}\n"
    )
    result = run_lb("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "1 pool(s), 1 backend(s)" in result.stdout


def test_check_reports_every_problem_with_key_paths_and_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text(
        "pools:\n  web:\n    backends:\n      - http://127.0.0.1:9001\n      - ftp://x\n"
        "    strategy: round_robbin\n"
    )
    result = run_lb("check", "-c", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "pools.web.backends[1].url: not an http(s) URL" in lines
    assert any(line.startswith("pools.web.strategy: unknown strategy") for line in lines)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content", ["", "- a\n- b\n", "admin: {}\n"], ids=["empty", "list", "no-pools"]
)
def test_check_rejects_empty_non_mapping_and_poolless(tmp_path, content: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run_lb("check", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() and "Traceback" not in result.stderr


def test_check_uses_lb_config_env(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump({"pools": {"web": {"backends": ["http://127.0.0.1:9001"]}}}))
    assert run_lb("check", LB_CONFIG=str(path)).returncode == 0


def test_serve_with_invalid_config_exits_nonzero_with_the_same_messages(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text("pools:\n  web:\n    backends: [ftp://x]\n")
    result = run_lb("serve", "-c", str(path), "--port", str(free_port()))
    assert result.returncode != 0
    assert "pools.web.backends[0].url: not an http(s) URL" in result.stderr


def test_uvicorn_lb_app_with_invalid_config_fails_at_startup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text("pools: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "lb.app:app", "--port", str(free_port())],
        env=lb_env(LB_CONFIG=str(path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "pools" in result.stderr


def test_importing_lb_app_reads_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = "import lb.app; print(type(lb.app.app).__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=lb_env(LB_CONFIG=str(tmp_path / "missing.yaml")),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "LazyApp"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_finishes_in_flight_requests_on_signal_then_exits_0(
    start_backends, lb_process, sig: int
) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    backend.release.clear()
    lb = lb_process(
        {"pools": {"web": {"backends": [server.url]}}, "logging": {"access_log": False}}
    )
    results: list[int] = []

    def slow_request() -> None:
        results.append(httpx.get(lb.url + "/hang", timeout=20).status_code)

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_until(lambda: backend.in_flight == 1)
    os.killpg(lb.process.pid, sig)
    # New connections are refused at once while the in-flight request is still running.
    wait_until(lambda: _refused(lb.port), 10)
    backend.release.set()
    thread.join(20)
    assert results == [200]
    assert lb.process.wait(20) == 0


def _refused(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return False
    except OSError:
        return True


def test_demo_serves_and_round_robins_then_stops_on_ctrl_c() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lb", "demo", "--port", str(port)],
        env=lb_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines: list[str] = []
        assert process.stdout is not None
        while not any("Ctrl-C" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        assert (
            f"http://127.0.0.1:{port}/" in text
            and "/_lb/dashboard" in text
            and "/_lb/metrics" in text
        )
        assert f"listening on http://127.0.0.1:{port}" in text  # the start line names it
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [client.get("/") for _ in range(6)]
            dashboard = client.get("/_lb/dashboard")
        backends = {a.json()["backend"] for a in answers}
        assert backends == {"1", "2", "3"}
        # One Server header, the demo backend's (uvicorn's own is off on the demo backends).
        assert all(a.headers.get_list("server") == [f"demo-{a.json()['backend']}"] for a in answers)
        assert dashboard.status_code == 200 and "uPlot" in dashboard.text
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize("own_port", [False, True])
def test_healthcheck_asks_healthz_where_the_config_puts_it(
    start_backends, lb_process, own_port: bool
) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    config = pool_config([server.url])
    admin: dict[str, object] = {"path_prefix": "/ops"}
    if own_port:
        admin["listen"] = f"127.0.0.1:{free_port()}"
    config["admin"] = admin
    lb = lb_process(config)
    ok = run_lb("healthcheck", "-c", lb.config_path, "--port", str(lb.port))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("/ops/healthz: 200")
    lb.stop()
    down = run_lb("healthcheck", "-c", lb.config_path, "--port", str(lb.port))
    assert down.returncode == 1
    assert "/ops/healthz" in down.stderr


def test_healthcheck_asks_a_tls_traffic_port_over_https(ca, start_backends, lb_process) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    cert, key = ca.issue(stem="lb")
    config = pool_config([server.url])
    config["server"] = {"tls": {"cert_file": str(cert), "key_file": str(key)}}
    lb = lb_process(config, https=True)
    ok = run_lb("healthcheck", "-c", lb.config_path, "--port", str(lb.port))
    assert ok.returncode == 0, ok.stderr
    # The start line names the listener as served.
    assert f"listening on https://127.0.0.1:{lb.port}" in lb.output()

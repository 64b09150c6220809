"""Metrics, status and access log through a real balancer in front of real backends."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers import free_port, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, path: str = "/_lb/metrics", **headers: str) -> Samples:
    response = httpx.get(url + path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def eventually(url: str, name: str, expected: float, **labels: str) -> Samples:
    """Scrape until `name{labels}` (summed over other labels) reads `expected`.

    A request is counted just after its last byte went out, so a client may ask before it is in.
    """
    found: list[Samples] = []
    wanted = set(labels.items())

    def current() -> float:
        return sum(v for (n, ls), v in found[0].items() if n == name and wanted <= ls)

    def check() -> bool:
        found[:] = [scrape(url)]
        return current() == expected

    try:
        wait_until(check, 5)
    except AssertionError:
        raise AssertionError(f"{name}{labels} = {current()}, not {expected}") from None
    return found[0]


def config(backends: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    pool = {"backends": [{"url": url, "id": bid} for bid, url in backends]}
    return {"pools": {"web": pool}, "logging": {"access_log": False}, **extra}


@pytest.fixture
def three(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    backends = start_backends(3)
    lb = start_balancer(config([(app.name, s.url) for app, s in backends]))
    return backends, lb


def test_request_counts_are_exact_after_known_traffic(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    with httpx.Client(base_url=lb.url) as client:
        for _ in range(6):
            assert client.get("/").status_code == 200
        for _ in range(3):
            assert client.post("/echo", content=b"x").status_code == 200
        assert client.get("/status/503").status_code == 503
        assert client.request("PROPFIND", "/").status_code == 200
    web = {"pool": "web"}
    s = eventually(lb.url, "lb_requests_total", 11)
    assert total(s, "lb_request_duration_seconds_count") == 11
    for app, _ in backends:
        b = {**web, "backend": app.name}
        assert sample(s, "lb_request_duration_seconds_count", **b) == app.count()
        assert sample(s, "lb_backend_requests_total", **b) == app.count()
        assert sample(s, "lb_backend_up", **b) == 1
        assert sample(s, "lb_backend_active_requests", **b) == 0
    by_code: dict[tuple[str, str], float] = {}
    for (name, labels), v in s.items():
        if name == "lb_requests_total":
            key = (dict(labels)["method"], dict(labels)["code"])
            by_code[key] = by_code.get(key, 0) + v
    assert by_code == {
        ("GET", "2xx"): 6,
        ("POST", "2xx"): 3,
        ("GET", "5xx"): 1,
        ("OTHER", "2xx"): 1,
    }
    failed = [a.name for a, _ in backends if a.count("/status/503")]
    assert sample(s, "lb_backend_failures_total", **web, backend=failed[0]) == 1
    assert sample(s, "lb_retries_total", **web) == 0
    assert sample(s, "lb_pool_usable_backends", **web) == 3


def test_connect_errors_and_retries_are_counted(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    dead = f"http://127.0.0.1:{free_port()}"
    lb = start_balancer(config([("dead", dead), ("live", server.url)]))
    with httpx.Client(base_url=lb.url) as client:
        assert [client.get("/").status_code for _ in range(4)] == [200] * 4
    s = eventually(lb.url, "lb_requests_total", 4, pool="web", backend="live", method="GET",
                   code="2xx")  # fmt: skip
    errors = sample(s, "lb_upstream_errors_total", pool="web", backend="dead", kind="connect_error")
    assert errors is not None and errors >= 1
    assert sample(s, "lb_retries_total", pool="web") == errors
    assert sample(s, "lb_backend_failures_total", pool="web", backend="dead") == errors
    assert sample(s, "lb_backend_requests_total", pool="web", backend="live") == 4 == app.count()


def test_answers_the_balancer_makes_itself_have_an_empty_backend_label(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    ((_, server),) = start_backends(1)
    cfg = {
        "pools": {
            "api": {"backends": [server.url]},
            "gone": {"backends": [{"url": f"http://127.0.0.1:{free_port()}", "id": "x"}]},
        },
        "routes": [
            {"path_prefix": "/api", "pool": "api"},
            {"path_prefix": "/gone", "pool": "gone"},
        ],
        "logging": {"access_log": False},
    }
    lb = start_balancer(cfg)
    assert httpx.get(lb.url + "/nowhere").status_code == 404
    assert httpx.get(lb.url + "/gone").status_code == 502
    s = eventually(lb.url, "lb_requests_total", 1, pool="", backend="", method="GET", code="4xx")
    assert sample(s, "lb_requests_total", pool="gone", backend="x", method="GET", code="5xx") == 1
    assert (
        sample(s, "lb_upstream_errors_total", pool="gone", backend="x", kind="connect_error") == 1
    )


def test_metrics_path_is_guarded_and_never_proxied(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    lb = start_balancer(
        config([("b1", server.url)], admin={"token": "s3cret"}, metrics={"path": "/metrics"})
    )
    assert httpx.get(lb.url + "/metrics").status_code == 401
    assert (
        httpx.get(lb.url + "/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
    )
    s = scrape(lb.url, "/metrics", authorization="Bearer s3cret")
    assert sample(s, "lb_backend_up", pool="web", backend="b1") == 1
    assert app.count() == 0
    assert not any(name == "lb_requests_total" for name, _ in s)

    other = start_balancer(config([("b1", server.url)], admin={"allow": ["10.0.0.0/8"]}))
    assert httpx.get(other.url + "/_lb/metrics").status_code == 403


def test_two_balancers_in_one_process_share_no_metrics(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((_, server),) = start_backends(1)
    one = start_balancer(config([("b1", server.url)]))
    two = start_balancer(config([("b1", server.url)]))
    for _ in range(3):
        httpx.get(one.url + "/")
    eventually(one.url, "lb_requests_total", 3, pool="web", backend="b1", method="GET", code="2xx")
    s = scrape(two.url)
    assert (
        sample(s, "lb_requests_total", pool="web", backend="b1", method="GET", code="2xx") is None
    )
    assert sample(s, "lb_backend_requests_total", pool="web", backend="b1") == 0


BACKEND_KEYS = {
    "id", "url", "origin", "state", "weight", "active_requests", "requests_total", "failures_total",
    "latency_ms", "connections", "pending",
}  # fmt: skip


def test_status_json_schema_and_values(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    before = httpx.get(lb.url + "/_lb/status").json()
    assert set(before) == {"pools", "workers"} and set(before["pools"]) == {"web"}
    # One process: itself, seen now.
    ((worker,),) = [before["workers"]]
    assert set(worker) == {"pid", "started", "last_seen"} and worker["pid"] == os.getpid()
    assert worker["started"] <= worker["last_seen"] <= time.time() + 1
    for b in before["pools"]["web"]["backends"]:
        assert b["latency_ms"] == {"p50": 0, "p95": 0, "p99": 0}
    with httpx.Client(base_url=lb.url) as client:
        for _ in range(9):
            client.get("/")
        client.get("/status/500")

    def settled() -> Any:
        doc = httpx.get(lb.url + "/_lb/status").json()
        total = sum(b["requests_total"] for b in doc["pools"]["web"]["backends"])
        return doc if total == 10 else None

    doc = wait_until(settled, 5)
    pool = doc["pools"]["web"]
    assert set(pool) == {"strategy", "limits", "backends"} and pool["strategy"] == "round_robin"
    assert [b["id"] for b in pool["backends"]] == ["b1", "b2", "b3"]
    for b, (app, server) in zip(pool["backends"], backends, strict=True):
        assert set(b) == BACKEND_KEYS
        assert b["url"] == server.url and b["state"] == "healthy" and b["weight"] == 1
        assert b["origin"] == "config"
        assert b["active_requests"] == 0
        assert b["requests_total"] == app.count()
        assert b["failures_total"] == app.count("/status/500")
        latency = b["latency_ms"]
        assert set(latency) == {"p50", "p95", "p99"}
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] < 5000
    assert sum(b["failures_total"] for b in pool["backends"]) == 1


def test_access_log_lines_parse_as_json_with_trace_ids(
    start_backends, start_balancer, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    log_path = tmp_path / "access.log"
    cfg = config([("b1", server.url)])
    cfg["logging"] = {"access_log": True, "file": str(log_path), "format": "json"}
    lb = start_balancer(cfg)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    sent = [
        ("GET", "/a?x=1", {"traceparent": traceparent, "tracestate": "v=1"}),
        ("POST", "/echo", {}),
        ("GET", "/status/404", {"traceparent": "not-a-trace"}),
    ]
    responses = []
    with httpx.Client(base_url=lb.url) as client:
        for method, target, headers in sent:
            responses.append(client.request(method, target, headers=headers, content=b""))
    wait_until(lambda: log_path.exists() and len(log_path.read_text().splitlines()) == 3, 5)
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    for record, response, (method, target, _) in zip(records, responses, sent, strict=True):
        assert record["request_id"] == response.headers["x-request-id"]
        assert record["method"] == method and record["path"] == target
        assert record["status"] == response.status_code
        assert record["bytes_sent"] == len(response.content)
        assert record["client_ip"] == "127.0.0.1"
        assert (record["pool"], record["backend"], record["attempts"]) == ("web", "b1", 1)
        assert record["cache"] is None
        assert 0 < record["duration_ms"] < 5000
        assert record["time"].endswith("Z")
        assert "error" not in record  # a delivered response, 404 included, is no error
    assert records[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "trace_id" not in records[1] and "trace_id" not in records[2]
    # traceparent and tracestate reach the backend untouched, invalid or not.
    seen = [dict(r["headers"]) for r in app.seen]
    assert seen[0]["traceparent"] == traceparent and seen[0]["tracestate"] == "v=1"
    assert seen[2]["traceparent"] == "not-a-trace"


def test_access_log_records_the_backend_and_cause_of_an_error(start_balancer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    log_path = tmp_path / "access.log"
    cfg = config([("dead", f"http://127.0.0.1:{free_port()}")])
    cfg["logging"] = {"access_log": True, "file": str(log_path), "format": "text"}
    lb = start_balancer(cfg)
    assert httpx.get(lb.url + "/").status_code == 502
    wait_until(lambda: log_path.exists() and log_path.read_text().endswith("\n"), 5)
    line = log_path.read_text()
    assert "status=502" in line and "backend=dead" in line and 'error="connect_error' in line

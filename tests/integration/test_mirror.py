"""A route's `mirror` against real backends: copies arrive, the client never waits for them."""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from apps import Backend
from rawbackend import answer_each
from servers import wait_until

FAST = 1.0  # seconds: a request to the primary takes far less, a slow mirror answers later


def mirrored(shadow_url: str, primary_url: str, **mirror: Any) -> dict[str, Any]:
    return {
        "pools": {"web": {"backends": [primary_url]}, "shadow": {"backends": [shadow_url]}},
        "routes": [{"pool": "web", "mirror": {"pool": "shadow", **mirror}}],
        "logging": {"access_log": False},
    }


def counts(lb_url: str) -> dict[str, float]:
    """lb_mirror_requests_total by result."""
    text = httpx.get(lb_url + "/_lb/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "lb_mirror_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    assert sample.labels["pool"] == "web"
                    assert sample.labels["mirror_pool"] == "shadow"
                    out[sample.labels["result"]] = sample.value
    return out


def test_copies_arrive_with_the_same_body_and_x_mirrored_from(  # type: ignore[no-untyped-def]
    start_server, start_balancer
) -> None:
    primary, shadow = Backend("primary"), Backend("shadow")
    p, s = start_server(primary), start_server(shadow)
    lb = start_balancer(mirrored(s.url, p.url))
    with httpx.Client(base_url=lb.url) as client:
        answer = client.post("/form?a=1", content=b"hello mirror")
        assert answer.status_code == 200
        assert answer.json()["backend"] == "primary" and answer.json()["body"] == "hello mirror"

        def chunks() -> Any:
            yield b"streamed "
            yield b"body"

        # A chunked body within max_body_bytes is teed and copied whole.
        assert client.post("/chunked", content=chunks()).json()["body"] == "streamed body"
    assert "x-mirrored-from" not in dict(primary.seen[0]["headers"])
    wait_until(lambda: shadow.count() == 2, 5)
    copy, streamed = shadow.seen
    assert copy["method"] == "POST" and copy["raw_path"] == "/form" and copy["query"] == "a=1"
    assert copy["body"] == "hello mirror" and streamed["body"] == "streamed body"
    headers = dict(copy["headers"])
    assert headers["x-mirrored-from"] == "web"
    assert headers["x-request-id"] == dict(primary.seen[0]["headers"])["x-request-id"]
    wait_until(lambda: counts(lb.url).get("sent") == 2, 5)


def test_a_slow_then_erroring_then_down_mirror_never_touches_the_client(  # type: ignore[no-untyped-def]
    start_server, start_balancer
) -> None:
    primary, shadow = Backend("primary"), Backend("shadow")
    p, s = start_server(primary), start_server(shadow)
    lb = start_balancer(mirrored(s.url, p.url))
    shadow.delay = 3.0
    with httpx.Client(base_url=lb.url) as client:

        def timed(n: int) -> float:
            start = time.monotonic()
            for _ in range(n):
                answer = client.get("/x")
                assert answer.status_code == 200 and answer.json()["backend"] == "primary"
            return time.monotonic() - start

        # Slow: five requests are done long before the first copy is answered.
        assert timed(5) < FAST
        assert counts(lb.url) == {}  # nothing answered yet: no copy counted
        wait_until(lambda: counts(lb.url).get("sent") == 5, 10)

        # Erroring: 500s from the mirror are failures, the client still gets the primary's 200.
        shadow.delay, shadow.status = 0.0, 500
        assert timed(3) < FAST
        wait_until(lambda: counts(lb.url).get("failed") == 3, 5)

        # Down: refused connections, same story.
        s.stop()
        assert timed(3) < FAST
        wait_until(lambda: counts(lb.url).get("failed") == 6, 5)
    assert primary.count("/x") == 11


def test_percent_is_applied_exactly(  # type: ignore[no-untyped-def]
    start_server, start_balancer
) -> None:
    primary, shadow = Backend("primary"), Backend("shadow")
    p, s = start_server(primary), start_server(shadow)
    config = mirrored(s.url, p.url)
    config["routes"] = [
        {
            "pool": "web",
            "path_prefix": f"/p{percent}",
            "mirror": {"pool": "shadow", "percent": percent},
        }
        for percent in (0, 10, 50, 100)
    ]
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        for percent in (0, 10, 50, 100):
            for _ in range(20):
                assert client.get(f"/p{percent}").status_code == 200
    wait_until(lambda: counts(lb.url).get("sent") == 2 + 10 + 20, 5)
    assert [shadow.count(f"/p{percent}") for percent in (0, 10, 50, 100)] == [0, 2, 10, 20]


def test_copies_over_the_bounds_are_dropped_and_counted(  # type: ignore[no-untyped-def]
    start_server, start_balancer
) -> None:
    primary, shadow = Backend("primary"), Backend("shadow")
    p, s = start_server(primary), start_server(shadow)
    lb = start_balancer(mirrored(s.url, p.url, max_in_flight=1, max_body_bytes=16))
    shadow.delay = 2.0
    with httpx.Client(base_url=lb.url) as client:
        start = time.monotonic()
        for _ in range(3):  # the first copy takes the one slot for 2 s: the others are dropped
            assert client.get("/x").status_code == 200
        assert time.monotonic() - start < FAST
        assert counts(lb.url) == {"dropped": 2}
        wait_until(lambda: counts(lb.url).get("sent") == 1, 10)
        shadow.delay = 0.0
        big = b"b" * 100  # over max_body_bytes: the primary gets it whole, no copy is made

        def chunks() -> Any:
            yield big[:10]
            yield big[10:]

        assert client.post("/big-length", content=big).json()["body"] == big.decode()
        assert client.post("/big-chunked", content=chunks()).json()["body"] == big.decode()
        assert counts(lb.url)["dropped"] == 4
        assert client.post("/small", content=b"tiny").status_code == 200
    wait_until(lambda: shadow.count("/small") == 1, 5)
    assert shadow.count("/big-length") == shadow.count("/big-chunked") == 0


def test_a_mirror_pool_without_a_backend_drops_its_copies(  # type: ignore[no-untyped-def]
    start_server, start_balancer
) -> None:
    primary = Backend("primary")
    p = start_server(primary)
    config = mirrored("http://127.0.0.1:9", p.url)
    config["pools"]["shadow"]["backends"] = [{"url": "http://127.0.0.1:9", "weight": 0}]
    lb = start_balancer(config)
    assert httpx.get(lb.url + "/x").status_code == 200
    assert counts(lb.url) == {"dropped": 1}


def test_shutdown_cancels_the_copies_under_way(  # type: ignore[no-untyped-def]
    start_server, start_balancer, raw_backend
) -> None:
    primary = Backend("primary")
    p = start_server(primary)
    silent = raw_backend(answer_each(lambda connection, request: None))  # never answers
    lb = start_balancer(mirrored(silent.url, p.url))
    assert httpx.get(lb.url + "/x").status_code == 200
    wait_until(lambda: len(silent.heads) == 1, 5)
    (mirror,) = lb.app.runtime.generation.mirrors
    start = time.monotonic()
    lb.stop()
    assert time.monotonic() - start < 10.0  # the copy did not hold the shutdown up
    assert not mirror.tasks and mirror.in_flight == 0 and mirror.stopped
    wait_until(lambda: silent.closed_by_peer == 1, 5)  # its connection was closed


def test_a_reload_stops_the_old_mirror_and_the_new_one_copies(  # type: ignore[no-untyped-def]
    start_server, start_balancer, raw_backend, config_file
) -> None:
    primary, shadow = Backend("primary"), Backend("shadow")
    p, s = start_server(primary), start_server(shadow)
    silent = raw_backend(answer_each(lambda connection, request: None))
    lb = start_balancer(config_file(mirrored(silent.url, p.url)))
    assert httpx.get(lb.url + "/x").status_code == 200
    wait_until(lambda: len(silent.heads) == 1, 5)
    (old,) = lb.app.runtime.generation.mirrors
    config_file(mirrored(s.url, p.url))
    assert httpx.post(lb.url + "/_lb/reload", timeout=10).status_code == 200
    assert old.stopped and not old.tasks  # its copy under way was cancelled
    wait_until(lambda: silent.closed_by_peer == 1, 5)
    assert httpx.get(lb.url + "/y").status_code == 200
    wait_until(lambda: shadow.count("/y") == 1, 5)

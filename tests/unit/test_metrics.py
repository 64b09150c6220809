"""lb.metrics events and refresh, lb.multiprocess file handling: no sockets, fake generations."""

from __future__ import annotations

import asyncio
import os

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from lb import multiprocess as mp
from lb.backend import Backend
from lb.config import BackendConfig, PoolConfig
from lb.metrics import BUCKETS, Metrics, code_class
from lb.pool import Pool


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def fake_pools(*pools: Pool) -> dict[str, Pool]:
    return {p.name: p for p in pools}


def make_pool(name: str, *ids: str) -> Pool:
    backends = tuple(
        BackendConfig(url=f"http://127.0.0.1:{9000 + i}", id=b) for i, b in enumerate(ids)
    )
    return Pool(PoolConfig(name=name, backends=backends))


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (0, "none"),
        (101, "1xx"),
        (200, "2xx"),
        (304, "3xx"),
        (429, "4xx"),
        (504, "5xx"),
        (999, "other"),
    ],
)
def test_code_class(status: int, label: str) -> None:
    assert code_class(status) == label


def test_request_counts_by_pool_backend_method_and_code_class() -> None:
    m = Metrics()
    for _ in range(3):
        m.request("web", "a", "GET", 200, 0.002)
    m.request("web", "a", "GET", 201, 0.004)
    m.request("web", "b", "POST", 503, 0.5)
    m.request("", None, "GET", 404, 0.0001)
    assert value(m, "lb_requests_total", pool="web", backend="a", method="GET", code="2xx") == 4
    assert value(m, "lb_requests_total", pool="web", backend="b", method="POST", code="5xx") == 1
    assert value(m, "lb_requests_total", pool="", backend="", method="GET", code="4xx") == 1
    assert value(m, "lb_request_duration_seconds_count", pool="web", backend="a") == 4
    assert value(m, "lb_request_duration_seconds_sum", pool="web", backend="a") == pytest.approx(
        0.010
    )
    bucket = value(m, "lb_request_duration_seconds_bucket", pool="web", backend="a", le="0.0025")
    assert bucket == 3


def test_unknown_methods_share_one_label_and_one_child() -> None:
    m = Metrics()
    for i in range(500):
        m.request("web", "a", f"X{i}", 200, 0.001)
    assert value(m, "lb_requests_total", pool="web", backend="a", method="OTHER", code="2xx") == 500
    assert len(m._request_children) == 1


def test_untimed_request_is_counted_without_a_latency_sample() -> None:
    m = Metrics()
    m.request("web", "a", "GET", 101, 3600.0, timed=False)
    assert value(m, "lb_requests_total", pool="web", backend="a", method="GET", code="1xx") == 1
    assert not value(m, "lb_request_duration_seconds_count", pool="web", backend="a")


def test_buckets_span_sub_millisecond_to_tens_of_seconds() -> None:
    assert BUCKETS[0] < 0.001 and BUCKETS[-1] >= 30
    assert list(BUCKETS) == sorted(BUCKETS)


def test_tallied_durations_land_in_the_buckets_histogram_observe_would_pick() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    reference = Histogram("ref", "", buckets=BUCKETS, registry=CollectorRegistry())
    m = Metrics()
    # Bounds themselves (a bucket is "less than or equal"), between them, beyond the last.
    samples = [*BUCKETS, 0.0, 0.0007, 0.03, 7.5, 59.999, 61.0, 3600.0]
    for seconds in samples:
        reference.observe(seconds)
        m.request("web", "a", "GET", 200, seconds)
    ours = {
        s.labels["le"]: s.value
        for family in m.registry.collect()
        if family.name == "lb_request_duration_seconds"
        for s in family.samples
        if s.name.endswith("_bucket")
    }
    theirs = {
        s.labels["le"]: s.value
        for family in reference.collect()
        for s in family.samples
        if s.name.endswith("_bucket")
    }
    assert ours == theirs and ours["+Inf"] == len(samples)
    assert value(m, "lb_request_duration_seconds_sum", pool="web", backend="a") == pytest.approx(
        sum(samples)
    )


def test_every_read_sees_every_event_since_the_last_one() -> None:
    m = Metrics()
    m.request("web", "a", "GET", 200, 0.01)
    m.rate_limit(True)
    m.cache("HIT")
    assert value(m, "lb_requests_total", pool="web", backend="a", method="GET", code="2xx") == 1
    for _ in range(2):  # a read hands over only what is new: nothing is counted twice
        m.request("web", "a", "GET", 204, 0.01)
        m.rate_limit(True)
        m.cache("HIT")
        m.flush()  # as a scrape in multiprocess mode does before reading the files
    assert value(m, "lb_requests_total", pool="web", backend="a", method="GET", code="2xx") == 3
    assert value(m, "lb_request_duration_seconds_count", pool="web", backend="a") == 3
    assert value(m, "lb_rate_limit_decisions_total", decision="allowed") == 3
    assert value(m, "lb_cache_requests_total", result="hit") == 3
    assert b'lb_cache_requests_total{result="hit"} 3.0' in asyncio.run(m.render())


def test_other_events() -> None:
    m = Metrics()
    m.upstream_error("web", "a", "connect_error")
    m.upstream_error("web", "a", "connect_error")
    m.upstream_error("web", "b", "timeout")
    m.retry("web")
    m.health_check("web", "a", "success")
    m.health_check("web", "a", "failure")
    m.ejection("web", "a")
    m.panic("web", True)
    m.rate_limit(True)
    m.rate_limit(False)
    m.rate_limit(False)
    m.store_error("ratelimit")
    m.cache("HIT")
    m.cache("MISS")
    m.cache("HIT")
    assert value(m, "lb_upstream_errors_total", pool="web", backend="a", kind="connect_error") == 2
    assert value(m, "lb_upstream_errors_total", pool="web", backend="b", kind="timeout") == 1
    assert value(m, "lb_retries_total", pool="web") == 1
    assert value(m, "lb_health_checks_total", pool="web", backend="a", result="success") == 1
    assert value(m, "lb_health_checks_total", pool="web", backend="a", result="failure") == 1
    assert value(m, "lb_ejections_total", pool="web", backend="a") == 1
    assert value(m, "lb_pool_panic", pool="web") == 1
    m.panic("web", False)
    assert value(m, "lb_pool_panic", pool="web") == 0
    assert value(m, "lb_rate_limited_total") == 2
    assert value(m, "lb_rate_limit_decisions_total", decision="allowed") == 1
    assert value(m, "lb_rate_limit_decisions_total", decision="limited") == 2
    assert value(m, "lb_store_errors_total", store="ratelimit") == 1
    assert value(m, "lb_cache_requests_total", result="hit") == 2
    assert value(m, "lb_cache_requests_total", result="miss") == 1


def test_two_instances_share_nothing() -> None:
    one, two = Metrics(), Metrics()
    one.request("web", "a", "GET", 200, 0.01)
    one.cache("HIT")
    assert value(one, "lb_requests_total", pool="web", backend="a", method="GET", code="2xx") == 1
    assert (
        value(two, "lb_requests_total", pool="web", backend="a", method="GET", code="2xx") is None
    )
    assert value(two, "lb_cache_requests_total", result="hit") is None


def test_refresh_copies_backend_state() -> None:
    pool = make_pool("web", "a", "b")
    gen = fake_pools(pool)
    m = Metrics(lambda: gen)
    a, b = pool.backends["a"], pool.backends["b"]
    pool.start(a)
    pool.start(a)
    pool.done(a, 0.01, True)
    pool.start(b)
    pool.done(b, 0.01, False)
    b.set_healthy(False)
    m.refresh()
    assert value(m, "lb_backend_up", pool="web", backend="a") == 1
    assert value(m, "lb_backend_up", pool="web", backend="b") == 0
    assert value(m, "lb_backend_active_requests", pool="web", backend="a") == 1
    assert value(m, "lb_backend_requests_total", pool="web", backend="a") == 2
    assert value(m, "lb_backend_failures_total", pool="web", backend="b") == 1
    assert value(m, "lb_pool_usable_backends", pool="web") == 1
    # Pool-level and per-backend series exist at zero before any event.
    assert value(m, "lb_retries_total", pool="web") == 0
    assert value(m, "lb_ejections_total", pool="web", backend="a") == 0
    # Refreshing again adds only what happened since.
    pool.done(a, 0.01, True)
    pool.start(a)
    pool.done(a, 0.01, True)
    m.refresh()
    m.refresh()
    assert value(m, "lb_backend_requests_total", pool="web", backend="a") == 3
    assert value(m, "lb_backend_active_requests", pool="web", backend="a") == 0


def test_refresh_follows_reloads() -> None:
    pool = make_pool("web", "a", "b")
    gen = fake_pools(pool)
    m = Metrics(lambda: gen)
    pool.start(pool.backends["a"])
    m.refresh()
    # A reload replaces "a" by a new Backend (new URL) and removes "b".
    replaced = Backend(BackendConfig(url="http://127.0.0.1:9999", id="a"))
    new_pool = Pool(PoolConfig(name="web", backends=()), [replaced])
    gen = fake_pools(new_pool)
    new_pool.start(replaced)
    new_pool.start(replaced)
    m.refresh()
    # The counter never goes back: 1 from the old backend object plus 2 from the new one.
    assert value(m, "lb_backend_requests_total", pool="web", backend="a") == 3
    assert value(m, "lb_backend_active_requests", pool="web", backend="a") == 2
    assert value(m, "lb_backend_up", pool="web", backend="b") is None
    assert value(m, "lb_backend_active_requests", pool="web", backend="b") is None


def test_render_is_prometheus_text_with_every_family() -> None:
    pool = make_pool("web", "a")
    m = Metrics(lambda: fake_pools(pool))
    m.request("web", "a", "GET", 200, 0.01)
    import asyncio

    text = asyncio.run(m.render()).decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "lb_requests",
        "lb_request_duration_seconds",
        "lb_backend_up",
        "lb_backend_active_requests",
        "lb_retries",
        "lb_rate_limited",
        "lb_cache_requests",
        "lb_health_checks",
        "lb_upstream_errors",
        "lb_ejections",
        "lb_pool_panic",
        "lb_rate_limit_decisions",
        "lb_store_errors",
        "lb_backend_requests",
        "lb_backend_failures",
        "lb_pool_usable_backends",
        "lb_mirror_requests",
        "lb_pool_overflows",
    } <= families


def test_repr_names_the_mode() -> None:
    assert "single process" in repr(Metrics())


# -- multiprocess files --------------------------------------------------------------------------


def test_prepare_multiprocess_empties_a_named_directory(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"old")
    (directory / "keep.txt").write_text("not ours")
    monkeypatch.setattr(os, "environ", {mp.ENV_DIR: str(directory)})  # restored after the test
    cleanup = mp.prepare_multiprocess()
    assert sorted(os.listdir(directory)) == ["keep.txt"]
    # A worker started later (after a crash) must not wipe what the others wrote.
    (directory / "counter_2.db").write_bytes(b"new")
    mp.prepare_multiprocess()
    assert (directory / "counter_2.db").exists()
    cleanup()
    assert directory.exists()  # not ours to remove


def test_prepare_multiprocess_makes_and_removes_a_temporary_directory(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(os, "environ", {})  # prepare_multiprocess sets variables: restored after
    cleanup = mp.prepare_multiprocess()
    path = os.environ[mp.ENV_DIR]
    assert os.path.isdir(path) and os.listdir(path) == []
    cleanup()
    assert not os.path.exists(path)


def _write(
    path: str, kind: str, pid: int, samples: list[tuple[str, dict[str, str], float]]
) -> None:
    db = MmapedDict(os.path.join(path, f"{kind}_{pid}.db"))
    for name, labels, v in samples:
        metric = name.removesuffix("_total")
        key = mmap_key(metric, name, list(labels), list(labels.values()), "help")
        db.write_value(key, v, 0.0)
    db.close()


def test_read_samples_sums_workers_and_sweep_drops_dead_live_gauges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path)
    labels = {"pool": "web", "backend": "a"}
    for pid, attempts, active in ((101, 5.0, 2.0), (102, 7.0, 1.0)):
        _write(path, "counter", pid, [("lb_backend_requests_total", labels, attempts)])
        _write(path, "gauge_livesum", pid, [("lb_backend_active_requests", labels, active)])
    key = (("backend", "a"), ("pool", "web"))
    samples = mp.read_samples(path, ("counter", "gauge_livesum"))
    assert samples["lb_backend_requests_total"][key] == 12
    assert samples["lb_backend_active_requests"][key] == 3
    assert mp.pids_with_live_files(path) == {101, 102}

    assert mp.sweep_dead(path, alive=lambda pid: pid != 102) == [102]
    samples = mp.read_samples(path, ("counter", "gauge_livesum"))
    assert samples["lb_backend_requests_total"][key] == 12  # a dead worker's counts stay
    assert samples["lb_backend_active_requests"][key] == 2  # its in-flight gauge goes
    assert mp.pids_with_live_files(path) == {101}


def test_a_file_a_worker_is_still_creating_is_read_as_no_value(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # prometheus-client creates a worker's file empty, then sizes it: a scrape or status read in
    # between failed on it (struct.error), a 500 instead of the answer.
    path = str(tmp_path)
    labels = {"pool": "web", "backend": "a"}
    _write(path, "counter", 101, [("lb_backend_requests_total", labels, 5.0)])
    _write(path, "gauge_livesum", 101, [("lb_backend_active_requests", labels, 2.0)])
    for kind in ("counter", "gauge_livesum", "gauge_livemax", "histogram"):
        (tmp_path / f"{kind}_{os.getpid()}.db").write_bytes(b"")
    key = (("backend", "a"), ("pool", "web"))
    samples = mp.read_samples(path, ("counter", "gauge_livesum"))
    assert samples["lb_backend_requests_total"][key] == 5
    assert samples["lb_backend_active_requests"][key] == 2
    assert mp.backend_totals(path)[("web", "a")]["requests_total"] == 5
    assert b'lb_backend_requests_total{backend="a",pool="web"} 5.0' in mp.render(path)


def test_sweep_keeps_live_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _write(str(tmp_path), "gauge_livesum", os.getpid(), [("lb_backend_active_requests", {}, 1.0)])
    assert mp.sweep_dead(str(tmp_path)) == []


def test_importing_lb_leaves_prometheus_client_unimported() -> None:
    """gunicorn's master imports lb (worker class, config) before lb's worker names the shared
    directory; prometheus_client fixes its mode at first import, so lb must not import it early."""
    import subprocess
    import sys

    from servers import lb_env

    code = (
        "import sys, lb.app, lb.worker, lb.gunicorn_conf; print('prometheus_client' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=lb_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

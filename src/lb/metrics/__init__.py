"""Metrics events: every layer reports through the app's `Metrics` object (`app.metrics`).

Each event method is called synchronously on the hot path and must be cheap: label children are
bound once and kept in dicts, so an event is a dict lookup and an increment. The per-request events
(requests and their duration, rate-limit decisions, cache results) go further: they add to plain
numbers (`Tally`, `DurationTally`), and `flush()` hands prometheus-client the differences, so a
request costs a few additions instead of some ten calls through prometheus-client's locks. A flush
runs before every read: a collector registered ahead of the metrics does it whenever the registry
is collected, and `refresh()` (scrapes, and every second per worker in multiprocess mode). Labels
are bounded: pool and backend ids, methods (unknown ones: OTHER), status classes, never paths or
client IPs.

Each app has its own `CollectorRegistry` (two apps in one process share nothing). Under several
workers prometheus-client's multiprocess mode is on (see `lb.multiprocess`): values live in
per-worker files and a scrape sums them. State the balancer keeps anyway (backend health, active
requests, per-backend attempt counts) is not counted twice on the hot path: `refresh()` copies it
into the metrics at scrape time, and every second per worker in multiprocess mode.

prometheus_client is imported inside the methods that need it, never when `lb` is imported: it
fixes single- or multiprocess mode at its first import, and gunicorn's master imports `lb` before
`lb.worker` names the shared directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from lb import multiprocess as mp
from lb.metrics.series import BackendSeries, discovery_series
from lb.metrics.tally import BUCKETS, DurationTally, Flusher, Tally
from lb.metrics.traffic import TrafficMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge

    from lb.backend import Backend

logger = logging.getLogger("lb.metrics")

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
REFRESH_INTERVAL = 1.0  # seconds between a worker's gauge updates in multiprocess mode

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def code_class(status: int) -> str:
    """The `code` label: 2xx ... 5xx; "none" when no response was sent (client gone first)."""
    if status == 0:
        return "none"
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


class PoolView(Protocol):
    """What `refresh()` reads of a pool (`lb.pool.Pool`)."""

    @property
    def backends(self) -> Mapping[str, Backend]: ...

    def usable(self) -> tuple[Backend, ...]: ...


class Metrics:
    """One per app. `pools` returns the live generation's pools, read by `refresh()`."""

    def __init__(self, pools: Callable[[], Mapping[str, PoolView]] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._pools = pools
        active = mp.multiprocess_active()
        # Multiprocess mode: the directory every worker's values are summed from; None otherwise.
        self.directory = mp.multiprocess_dir() if active else None
        if not active and mp.multiprocess_dir() is not None:
            logger.warning(
                "%s is set but prometheus_client was imported before it: metrics cover this "
                "worker only; set it in the environment before the server starts",
                mp.ENV_DIR,
            )
        self.multiprocess = self.directory is not None
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._flush_lock = threading.Lock()  # reads may come from other threads (tests, tools)
        self._tallies: list[Tally] = []
        self._durations: list[DurationTally] = []
        r.register(Flusher(self.flush))  # type: ignore[arg-type]
        pb = ("pool", "backend")
        self.requests = Counter(
            "lb_requests_total",
            "Client requests answered, by the backend that answered (empty: the balancer itself).",
            (*pb, "method", "code"),
            registry=r,
        )
        self.duration = Histogram(
            "lb_request_duration_seconds",
            "Client request duration, first byte in to last byte out, retries included.",
            pb,
            buckets=BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "lb_upstream_errors_total",
            "Failed upstream attempts by kind: connect_error, connect_timeout, timeout, "
            "pool_timeout, overflow, bad_response, aborted.",
            (*pb, "kind"),
            registry=r,
        )
        self.retries = Counter(
            "lb_retries_total", "Requests retried on another backend.", ("pool",), registry=r
        )
        self.health_checks = Counter(
            "lb_health_checks_total", "Active health checks by result.", (*pb, "result"), registry=r
        )
        self.ejections = Counter(
            "lb_ejections_total", "Backends ejected by passive health.", pb, registry=r
        )
        self.panic_mode = Gauge(
            "lb_pool_panic",
            "1 while the pool is in panic mode (spreading over every backend).",
            ("pool",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rate_limited = Counter(
            "lb_rate_limited_total", "Requests rejected by the rate limiter (429).", registry=r
        )
        self.rate_limit_decisions = Counter(
            "lb_rate_limit_decisions_total",
            "Rate-limit decisions: allowed or limited.",
            ("decision",),
            registry=r,
        )
        self.store_errors = Counter(
            "lb_store_errors_total",
            "Shared store (redis) failures by user: ratelimit or cache.",
            ("store",),
            registry=r,
        )
        self.cache_requests = Counter(
            "lb_cache_requests_total",
            "Cache lookups by result: hit, miss, stale, bypass.",
            ("result",),
            registry=r,
        )
        # Copied from the balancer's own state by refresh().
        self.backend_up = Gauge(
            "lb_backend_up",
            "1 when health checks pass and passive health has not ejected it.",
            pb,
            registry=r,
            multiprocess_mode="livemin",
        )
        self.backend_active = Gauge(
            "lb_backend_active_requests",
            "Requests in flight to the backend.",
            pb,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.backend_attempts = Counter(
            "lb_backend_requests_total",
            "Attempts sent to the backend, retries included.",
            pb,
            registry=r,
        )
        self.backend_failures = Counter(
            "lb_backend_failures_total",
            "Failed attempts: connect error, timeout, 5xx, or broken off mid-response.",
            pb,
            registry=r,
        )
        self.pool_usable = Gauge(
            "lb_pool_usable_backends",
            "Backends that may be picked (healthy, active, weight > 0).",
            ("pool",),
            registry=r,
            multiprocess_mode="livemin",
        )
        self.traffic = TrafficMetrics(r)  # mirror copies, pool overflows
        self.backend_info, self.discovery_lookups = discovery_series(r)
        # Bound children, filled on first use.
        self._request_children: dict[
            tuple[str, str | None, str, int], tuple[Tally, DurationTally]
        ] = {}
        self._duration_children: dict[tuple[str, str], DurationTally] = {}
        self._error_children: dict[tuple[str, str, str], Counter] = {}
        self._pool_children: dict[str, tuple[Counter, Gauge, Gauge]] = {}
        self._health_children: dict[tuple[str, str, str], Counter] = {}
        self._ejection_children: dict[tuple[str, str], Counter] = {}
        self._store_children: dict[str, Counter] = {}
        self._cache_children: dict[str, Tally] = {}
        self._allowed = self._tally(self.rate_limit_decisions.labels("allowed"))
        self._limited = self._tally(self.rate_limit_decisions.labels("limited"))
        self._series: dict[tuple[str, str], BackendSeries] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        mode = f"multiprocess {self.directory}" if self.multiprocess else "single process"
        return f"<Metrics [{mode}, {len(self._request_children)} request series]>"

    # -- events (hot path) -------------------------------------------------------------------

    def request(
        self,
        pool: str,
        backend: str | None,
        method: str,
        status: int,
        seconds: float,
        *,
        timed: bool = True,
    ) -> None:
        """A proxied request finished (backend None: the balancer answered itself).

        `timed=False` counts it without a latency sample (a WebSocket session's length is not a
        request latency).
        """
        if method not in METHODS:
            method = "OTHER"
        children = self._request_children.get((pool, backend, method, status))
        if children is None:
            children = self._bind_request(pool, backend, method, status)
        children[0].count += 1
        if timed:
            duration = children[1]
            duration.sum += seconds
            # The first bucket whose upper bound holds the value, as Histogram.observe picks it.
            duration.buckets[bisect_left(BUCKETS, seconds)] += 1

    def _bind_request(
        self, pool: str, backend: str | None, method: str, status: int
    ) -> tuple[Tally, DurationTally]:
        backend_label = backend or ""
        duration = self._duration_children.get((pool, backend_label))
        if duration is None:
            duration = DurationTally(self.duration.labels(pool, backend_label))
            self._duration_children[(pool, backend_label)] = duration
            self._durations.append(duration)
        # Statuses of one class share the counter child; each keeps its own tally of it.
        counter = self.requests.labels(pool, backend_label, method, code_class(status))
        children = (self._tally(counter), duration)
        self._request_children[(pool, backend, method, status)] = children
        return children

    def _tally(self, counter: Counter) -> Tally:
        tally = Tally(counter)
        self._tallies.append(tally)
        return tally

    def flush(self) -> None:
        """Hand prometheus-client the per-request events counted since the last flush."""
        with self._flush_lock:
            for tally in self._tallies:
                tally.flush()
            for duration in self._durations:
                duration.flush()

    def upstream_error(self, pool: str, backend: str, kind: str) -> None:
        """kind: connect_error | connect_timeout | timeout | pool_timeout | bad_response | aborted
        (the event API documents the first ones; the finer kinds are what the proxy reports)."""
        key = (pool, backend, kind)
        child = self._error_children.get(key)
        if child is None:
            child = self._error_children[key] = self.upstream_errors.labels(pool, backend, kind)
        child.inc()

    def retry(self, pool: str) -> None:
        """A request was retried on another backend."""
        self._pool(pool)[0].inc()

    def health_check(self, pool: str, backend: str, result: str) -> None:
        """result: success | failure | timeout | error."""
        key = (pool, backend, result)
        child = self._health_children.get(key)
        if child is None:
            child = self._health_children[key] = self.health_checks.labels(pool, backend, result)
        child.inc()

    def ejection(self, pool: str, backend: str) -> None:
        """Passive health ejected a backend."""
        key = (pool, backend)
        child = self._ejection_children.get(key)
        if child is None:
            child = self._ejection_children[key] = self.ejections.labels(pool, backend)
        child.inc()

    def panic(self, pool: str, active: bool) -> None:
        """A pool entered (True) or left (False) panic mode."""
        self._pool(pool)[1].set(1 if active else 0)

    def discovery_lookup(self, name: str, result: str) -> None:
        """A DNS lookup of a discovered name; result: ok | failed (the last good set is kept)."""
        self.discovery_lookups.labels(name, result).inc()

    def rate_limit(self, allowed: bool) -> None:
        """A rate-limit decision."""
        if allowed:
            self._allowed.count += 1
        else:
            self._limited.count += 1
            self.rate_limited.inc()

    def store_error(self, store: str) -> None:
        """store: ratelimit | cache. A shared store (redis) could not be reached."""
        child = self._store_children.get(store)
        if child is None:
            child = self._store_children[store] = self.store_errors.labels(store)
        child.inc()

    def cache(self, result: str) -> None:
        """result: HIT | MISS | STALE | BYPASS (the label is lower case: hit, miss, ...)."""
        tally = self._cache_children.get(result)
        if tally is None:
            tally = self._cache_children[result] = self._tally(
                self.cache_requests.labels(result.lower())
            )
        tally.count += 1

    def _pool(self, pool: str) -> tuple[Counter, Gauge, Gauge]:
        children = self._pool_children.get(pool)
        if children is None:
            children = self._pool_children[pool] = (
                self.retries.labels(pool),
                self.panic_mode.labels(pool),
                self.pool_usable.labels(pool),
            )
        return children

    # -- state copied at scrape time ---------------------------------------------------------

    def refresh(self) -> None:
        """Flush the per-request tallies, and copy backend state (up, in flight, attempt and
        failure counts) into the metrics."""
        self.flush()
        if self._pools is None:
            return
        series = self._series
        current = set()
        for name, pool in self._pools().items():
            self._pool(name)[2].set(len(pool.usable()))
            for backend in pool.backends.values():
                key = (name, backend.id)
                current.add(key)
                s = series.get(key)
                if s is None or s.backend is not backend:
                    # New, or replaced by a reload (new URL): its counters start again from 0.
                    s = series[key] = BackendSeries(self, name, backend)
                    self._ejection_children.setdefault(key, self.ejections.labels(*key))
                s.up.set(1 if backend.healthy and not backend.ejected else 0)
                s.active.set(backend.active_requests)
                attempts, failures = backend.requests_total, backend.failures_total
                if attempts > s.sent_attempts:
                    s.attempts.inc(attempts - s.sent_attempts)
                    s.sent_attempts = attempts
                if failures > s.sent_failures:
                    s.failures.inc(failures - s.sent_failures)
                    s.sent_failures = failures
        for key in [k for k in series if k not in current]:
            self._drop(key, series.pop(key))

    def _drop(self, key: tuple[str, str], s: BackendSeries) -> None:
        """A backend left the config: its state series go (counters stay, they are history)."""
        if self.multiprocess:
            # Values in the shared files cannot be removed; zero is the honest last word.
            s.up.set(0)
            s.active.set(0)
            s.info.set(0)
            return
        for gauge in (self.backend_up, self.backend_active):
            with contextlib.suppress(KeyError):
                gauge.remove(*key)
        with contextlib.suppress(KeyError):
            self.backend_info.remove(*key, s.backend.origin)

    async def start(self) -> None:
        """Multiprocess mode: keep this worker's copies of backend state fresh for the others."""
        if self.multiprocess and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.flush()  # in multiprocess mode a worker's counters outlive it: all of them
        if self.directory is not None:
            # This worker is going away: its live gauges (in flight, up, panic) leave the sums.
            mp.mark_dead(os.getpid(), self.directory)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - metrics must never take the worker down
                logger.exception("metrics refresh failed")
            await asyncio.sleep(REFRESH_INTERVAL)

    # -- reading -----------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The Prometheus text exposition: this app's, or every worker's summed."""
        from prometheus_client import generate_latest

        self.refresh()
        if self.directory is None:
            return generate_latest(self.registry)
        # Reading every worker's files is file I/O: off the event loop.
        return await asyncio.to_thread(mp.render, self.directory)

    async def backend_totals(self) -> dict[tuple[str, str], dict[str, float]] | None:
        """Multiprocess mode: {(pool, backend): {requests_total, failures_total, active_requests}}
        summed over every worker; None in a single process (the backend's own counters are it)."""
        if self.directory is None:
            return None
        self.refresh()
        return await asyncio.to_thread(mp.backend_totals, self.directory)

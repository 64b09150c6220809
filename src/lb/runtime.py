"""The runtime: what lives as long as the process, and the one place a generation goes live.

A `Runtime` owns the upstream transport and httpx client, the metrics, the access log, the
background services, the admin control (`Control`) and the table of long-lived `Backend` objects
keyed by (pool, id, url). A `Generation` (one config made live) is built next to the running one
from that table without changing anything the live generation serves; `swap()` then makes it live
in one synchronous step, and only there are shared backends changed: configured weights, health a
pool no longer checks, admin overrides, removed backends set draining, each pool taking charge of
its backends. A build that fails therefore leaves nothing to undo.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator

import httpx

from lb.accesslog import AccessLog
from lb.adminlisten import AdminListener
from lb.announce import announce, announced
from lb.backend import Backend
from lb.config import BackendConfig, Config, DiscoverConfig, PoolConfig
from lb.control.periodic import Periodic
from lb.control.reload import ReloadError
from lb.control.runtime import Control
from lb.control.shared import ENV_DIR
from lb.discovery import Discovery, Endpoint, endpoint_id
from lb.discovery.shared import POLL_INTERVAL as ANSWERS_POLL
from lb.discovery.shared import SharedAnswers
from lb.dynamic import DynamicBackends
from lb.generation import Generation
from lb.health.shared import POLL_INTERVAL, SharedHealth
from lb.instance import Leader, LeaderOnly
from lb.logsetup import on_reopen_signal, use_level
from lb.metrics import Metrics
from lb.pool import Pool
from lb.proxy.context import RequestContext
from lb.redis_client import RedisClients
from lb.tls import ServerTLS
from lb.transport import Limits, Origin, Transport, origin_of
from lb.types import Service

logger = logging.getLogger("lb.control")

BackendKey = tuple[str, str, str]  # (pool name, backend id, url)
REAP_INTERVAL = 0.5  # how often removed backends are looked at: gone once idle


class Runtime:
    """The long-lived half of a balancer; `generation` is the config it serves now."""

    def __init__(self, config: Config) -> None:
        self.transport = Transport(connect_timeout=_max_connect_timeout(config))
        # The client is the documented upstream interface (health checks, library users); the hot
        # path calls the same transport directly, skipping the client's per-request cookie and
        # redirect machinery, which a proxy must not apply anyway.
        self.client = httpx.AsyncClient(
            transport=self.transport,
            trust_env=False,
            follow_redirects=False,
            headers={},
            cookies=None,
        )
        self.access_log = AccessLog(config.logging)
        self.metrics = Metrics(lambda: self.generation.pools)
        self.redis = RedisClients()  # one client per URL: rate limits, cache, control bus
        self.backends: dict[BackendKey, Backend] = {}
        # Backends the admin API and DNS discovery added: kept across reloads of the file.
        self.dynamic = DynamicBackends()
        # One resolver loop per name, in the instance's leader only; the others take its answers
        # from the control directory (`lb.discovery.shared`).
        self.discovery = Discovery(self._answered, self.metrics.discovery_lookup)
        self._reaper = Periodic("lb backend reaper", REAP_INTERVAL, self._reap)
        self.services: list[Service] = []
        self.started = False
        # With several workers (a control directory), one of them leads: it alone runs what must
        # run once per instance (active health checks), and shares the health it sees.
        directory = os.environ.get(ENV_DIR) or None
        self.leader = Leader(directory)
        self.shared_health = SharedHealth(directory) if directory else None
        self.shared_answers = (
            SharedAnswers(directory, self.discovered, lambda: self.config, self._leading)
            if directory
            else None
        )
        self._instance_services: list[Service] = []
        self._discovery = LeaderOnly(self.leader, self.discovery)
        self.server_tls: ServerTLS | None = None  # the listener's, when lb serves TLS
        # Where the admin API listens is fixed for the process: a reload cannot move a socket.
        self.admin_listen = config.admin.listen
        self._admin_listener: AdminListener | None = None
        self._undo_signal: Callable[[], None] | None = None
        # `live` is None only while the first generation is built; `generation` is the same
        # object as a plain attribute, read once per request.
        self.live: Generation | None = None
        self.generation: Generation
        self.control = Control(self)  # admin overrides, reloads, and sharing them with peers
        self.swap(self.build(config))

    def __repr__(self) -> str:
        return f"<Runtime {len(self.backends)} backends, {len(self.services)} services>"

    @property
    def config(self) -> Config:
        return self.generation.config

    def reload_certificates(self) -> list[str]:
        """Load renewed certificate files into the live TLS contexts (listener and pools);
        returns the files that had changed. Raises TLSError, that context left as it was."""
        renewed = []
        contexts = [self.server_tls] + [pool.tls for pool in self.generation.pools.values()]
        for tls in contexts:
            if tls is not None and tls.reload() and tls.cert_file is not None:
                renewed.append(tls.cert_file)
        return renewed

    # -- what lb's server asks of the app (`lb.server`), for the traffic and the admin socket --

    def limits(self) -> tuple[int, int, float, float]:
        """(max header section bytes, max request-target bytes, header timeout, send timeout):
        what `lb.server` enforces before the app sees a request."""
        server = self.config.server
        return (
            server.max_header_bytes,
            server.max_target_bytes,
            server.header_timeout,
            server.send_timeout,
        )

    def load(self, origin: Origin) -> tuple[int, int]:
        """(open upstream connections, requests waiting for one) to `origin`, for status."""
        return self.transport.load(origin)

    def full_errors(self) -> bool:
        """Whether error bodies carry the cause (`server.error_detail: full`), for `lb.server`."""
        return self.generation.full_errors

    def rejected(
        self, peer: str, method: str, target: bytes, status: int, detail: str, request_id: bytes
    ) -> None:
        """A request `lb.server` refused before it reached the app (400, 408, 414, 431): logged
        and counted like any other, so that hostile traffic shows where operators look."""
        now = time.perf_counter()
        ctx = RequestContext(request_id, peer, False, method, target, None, now)
        ctx.status = status
        ctx.error = detail
        self.metrics.request("", None, method, status, 0.0, timed=False)
        self.access_log.write(ctx, now)

    # -- generations ---------------------------------------------------------------------------

    def build(self, config: Config) -> Generation:
        """A generation for `config`, not live yet; raises whatever its parts raise."""
        return Generation.build(config, self)

    def added_backends(self, pool: PoolConfig) -> list[BackendConfig]:
        """The backends the admin API and discovery added to `pool`, for a new generation."""
        return self.dynamic.for_pool(pool)

    def backend(self, pool: str, config: BackendConfig, checked: bool) -> Backend:
        """The live backend `config` names in `pool`, or a new one (not in the table yet).

        A backend a reload adds to a pool with active checks starts unhealthy, so it gets traffic
        only once its checks pass (at start-up every backend starts healthy).
        """
        kept = self.backends.get((pool, config.id, config.url))
        if kept is not None:
            return kept
        backend = Backend(config)
        if checked and self.live is not None:
            backend.healthy = False
        return backend

    def swap(self, new: Generation) -> None:
        """Make `new` live: every change to shared backends, in one synchronous step."""
        old = self.backends
        table: dict[BackendKey, Backend] = {}
        for pool in new.pools.values():
            config = pool.config
            weights = {b.id: b.weight for b in config.backends}
            weights.update((b.id, b.weight) for b in self.dynamic.for_pool(config))
            checked = config.health_check is not None
            monitored = checked or config.passive_health is not None
            for added in self.dynamic.for_pool(config):
                if added.id not in pool.backends:  # added while `new` was being built
                    pool.add(self.backend(pool.name, added, checked))
            for backend in pool.backends.values():
                key = (pool.name, backend.id, backend.url)
                table[key] = backend
                if key not in old:
                    continue
                # A backend removed while `new` was being built is draining: its weight stays.
                weight = weights.get(backend.id, backend.config_weight)
                if backend.config_weight != weight:
                    backend.config_weight = weight
                    if not backend.ramp_started:  # a ramp takes the new weight at its next step
                        backend.set_weight(weight)
                # Released from what the old pool's checks said: nothing would bring it back.
                if not checked and not backend.healthy:
                    backend.set_healthy(True)
                if config.passive_health is None and backend.ejected:
                    backend.set_ejected_until(0.0)
                if backend.ramp_started and (not monitored or config.slow_start <= 0.0):
                    backend.ramp_started = 0.0
                    backend.set_weight(backend.config_weight)
        self.live = self.generation = new
        self.dynamic.prune(new.config)
        self.discovery.configure(new.config)
        self.control.apply_overrides(new)
        for key, backend in old.items():
            if key not in table:
                # Requests still finishing on the old pool must not retry onto it.
                backend.set_admin_state("draining")
        set_tls = getattr(self.transport, "set_tls", None)  # lb's transport, not a stand-in
        for pool in new.pools.values():
            pool.attach()
            if set_tls is not None:
                # The proxy, health checks and library users share the transport: one place
                # says how each https backend is reached.
                for backend in pool.backends.values():
                    if backend.scheme == "https":
                        set_tls(origin_of(backend.url), pool.tls)
        set_limits = getattr(self.transport, "set_limits", None)
        if set_limits is not None:
            set_limits(origin_limits(new.pools.values()))
        self.backends = table

    async def replace(self, config: Config) -> None:
        """Make `config` live (a reload): build its generation, then `commit` it.

        Raises `ReloadError` when it cannot be built or its services cannot start; the live
        generation is untouched then."""
        try:
            new = self.build(config)
        except Exception as exc:
            raise ReloadError([f"config: cannot build it: {type(exc).__name__}: {exc}"]) from exc
        await self.commit(new)

    async def commit(self, new: Generation) -> None:
        """Start what `new` adds, swap it in, then stop what only the old generation used.

        Raises `ReloadError` when a service fails to start: those it started are stopped again and
        nothing is swapped."""
        old_services = list(self.services)
        new_services = list(new.services())
        if self.started:
            started: list[Service] = []
            for service in _added(new_services, old_services):
                try:
                    await service.start()
                except Exception as exc:
                    await _stop_all(reversed(started), "after a failed reload")
                    problem = f"config: cannot start {service!r}: {type(exc).__name__}: {exc}"
                    raise ReloadError([problem]) from exc
                started.append(service)
        self.swap(new)
        if self.started:
            self.services = new_services
            await _stop_all(
                reversed(list(_added(old_services, new_services))), "of the previous configuration"
            )

    # -- backends added and removed at run time -------------------------------------------

    def add_backend(self, pool: str, config: BackendConfig) -> Backend | None:
        """Add `config` to the live `pool` and to every later generation, without a reload.

        A backend of that id and URL still draining away is kept instead (its address came back).
        None when there is no such pool, or it has another backend of that id."""
        live = self.generation.pools.get(pool)
        if live is None:
            return None
        existing = live.backends.get(config.id)
        if existing is not None:
            if existing.url != config.url or not self.dynamic.stay(existing):
                return None
            existing.set_admin_state("active")
            self.dynamic.put(pool, config)
            return existing
        backend = self.backend(pool, config, live.config.health_check is not None)
        self.dynamic.put(pool, config)
        self.backends[(pool, config.id, config.url)] = backend
        live.add(backend)
        set_tls = getattr(self.transport, "set_tls", None)
        if set_tls is not None and backend.scheme == "https":
            set_tls(origin_of(backend.url), live.tls)
        set_limits = getattr(self.transport, "set_limits", None)
        if set_limits is not None and live.config.limits is not None:
            set_limits(origin_limits(self.generation.pools.values()))
        return backend

    def remove_backend(self, pool: str, backend_id: str) -> Backend | None:
        """Take a backend out of the live `pool`: it drains, then goes (see `lb.dynamic`).
        None when there is no such backend."""
        live = self.generation.pools.get(pool)
        backend = live.backends.get(backend_id) if live is not None else None
        if backend is None:
            return None
        self.dynamic.drop(pool, backend_id)
        backend.set_admin_state("draining")
        self.dynamic.leave(pool, backend)
        return backend

    def discovered(self, pool: str, target: DiscoverConfig, endpoints: frozenset[Endpoint]) -> None:
        """Make the dns backends `target` stands for in `pool` exactly `endpoints`."""
        wanted: dict[str, BackendConfig] = {}
        for endpoint in endpoints:
            address, port = endpoint
            host = f"[{address}]" if ":" in address else address
            backend_id = endpoint_id(target.name, endpoint)
            url = f"{target.scheme}://{host}:{port}"
            wanted[backend_id] = BackendConfig(url, backend_id, target.weight, origin="dns")
        current = {c.id: c for c in self.dynamic.of(pool, "dns", target.name)}
        for config in current.values():
            if config.id not in wanted:
                self.remove_backend(pool, config.id)
        live = self.generation.pools.get(pool)
        for config in wanted.values():
            old = current.get(config.id)
            backend = live.backends.get(config.id) if live is not None else None
            if old is not None and old.weight != config.weight and backend is not None:
                # The entry's weight changed in a reload: its backends take it, as the file's do.
                self.dynamic.put(pool, config)
                backend.config_weight = config.weight
                backend.set_weight(config.weight)
            self.add_backend(pool, config)

    def _answered(self, pool: str, target: DiscoverConfig, endpoints: frozenset[Endpoint]) -> None:
        """The leader's resolver answered: apply it here, and tell the other workers."""
        self.discovered(pool, target, endpoints)
        if self.shared_answers is not None:
            self.shared_answers.publish(pool, target, endpoints)

    def _leading(self) -> bool:
        return self.leader.is_leader

    async def _reap(self) -> None:
        for leaving in self.dynamic.gone():
            backend = leaving.backend
            live = self.generation.pools.get(leaving.pool)
            if live is not None and live.backends.get(backend.id) is backend:
                live.remove(backend.id)
            key = (leaving.pool, backend.id, backend.url)
            if self.backends.get(key) is backend:
                del self.backends[key]

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; if a part cannot start, stop what did and raise its error, so a
        host that fails at startup leaves no health checks, Redis connections or sockets behind."""
        use_level(self.config.logging.level)
        self.access_log.worker = os.getpid()
        if not announced():  # `lb serve` announced before forking; any other host did not
            announce(self.config, ())
        try:
            await self.metrics.start()
            # Before the generation's services: the health checkers ask who leads and what the
            # instance knows already (a worker restarted after a crash catches up here).
            instance: list[Service] = [self.leader]
            if self.shared_health is not None:
                poll = Periodic("lb shared health", POLL_INTERVAL, self.shared_health.tick)
                instance += [self.shared_health, poll]
            if self.shared_answers is not None:
                answers = self.shared_answers
                instance += [answers, Periodic("lb shared discovery", ANSWERS_POLL, answers.tick)]
            for service in instance:
                await service.start()
                self._instance_services.append(service)
            for service in self.generation.services():
                await service.start()
                self.services.append(service)
            await self.control.start()
            await self._discovery.start()
            await self._reaper.start()
            if self.admin_listen is not None:
                listener = AdminListener(self, self.admin_listen)
                await listener.start()
                self._admin_listener = listener
            self._undo_signal = on_reopen_signal(self.access_log.reopen)
        except BaseException:
            await self.stop()
            raise
        self.started = True
        await self.control.catch_up()  # a reload made while this worker started: run it now

    async def stop(self) -> None:
        if self._undo_signal is not None:
            self._undo_signal()
            self._undo_signal = None
        if self._admin_listener is not None:
            await self._admin_listener.stop()
            self._admin_listener = None
        await self._reaper.stop()
        await self._discovery.stop()
        await self.control.stop()
        services, self.services = self.services, []
        await _stop_all(reversed(services), "at shutdown")
        instance, self._instance_services = self._instance_services, []
        await _stop_all(reversed(instance), "at shutdown")
        await self.metrics.stop()
        await self.client.aclose()
        self.access_log.close()
        self.started = False


def _added(services: list[Service], before: list[Service]) -> Iterator[Service]:
    """Those of `services` not in `before` (a kept cache or Redis connection keeps running)."""
    return (s for s in services if not any(s is b for b in before))


async def _stop_all(services: Iterable[Service], why: str) -> None:
    for service in services:
        try:
            await service.stop()
        except Exception:  # noqa: BLE001 - the first error (or the new generation) stands
            logger.exception("stopping %r %s", service, why)


def origin_limits(pools: Iterable[Pool]) -> dict[Origin, Limits]:
    """The transport's circuit breakers per backend origin, from the pools' `limits`. A backend
    in two pools takes the tighter value of each limit: the transport pools by origin."""
    merged: dict[Origin, Limits] = {}
    for pool in pools:
        config = pool.config.limits
        if config is None:
            continue
        limits = Limits(
            config.max_connections, config.max_pending, config.max_requests_per_connection
        )
        for backend in pool.backends.values():
            origin = origin_of(backend.url)
            old = merged.get(origin)
            merged[origin] = limits if old is None else Limits(*map(_tighter, old, limits))
    return merged


def _tighter(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max_connect_timeout(config: Config) -> float:
    return max((p.timeouts.connect for p in config.pools.values()), default=2.0)

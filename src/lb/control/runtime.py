"""`Control` (`app.control`): runtime changes to one app, and sharing them with its peers.

Four kinds of change reach a running app: admin overrides of backends (PATCH), backends the admin
API adds and removes (POST, DELETE: `members.py`), reloads (POST reload, SIGHUP, the file watch)
and cache purges. Each is applied in this process at once, then shared: with the other workers of
the instance through the control file (`shared.py`, polled every `POLL_INTERVAL`), and, for
overrides, added backends and purges, with other instances through Redis pub/sub (`bus.py`) when
the config uses a Redis store. Overrides and added backends are state; reloads and
purges are events. Everything here runs on the app's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from lb.backend import AdminState, Backend
from lb.config import BackendConfig, Config, ConfigError, RateLimitConfig, load_config
from lb.control.bus import RedisBus
from lb.control.members import ApiBackends, BackendChange, put_backend
from lb.control.overrides import (
    BackendKey,
    Live,
    Override,
    apply,
    configured_weight,
    find_backend,
)
from lb.control.periodic import Periodic
from lb.control.reload import ReloadError, describe, log_purge, log_reload, log_reload_failure
from lb.control.shared import ENV_DIR, ControlFile, Signature, add_event, put_override
from lb.redis_client import RedisClients
from lb.tls import TLSError

ConfigSource = Config | Mapping[str, Any] | str | os.PathLike[str]

logger = logging.getLogger("lb.control")

POLL_INTERVAL = 0.5  # how often a worker looks at the control file: the propagation delay
WATCH_INTERVAL = 1.0  # how often `server.watch_config` looks at the config file

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]


def bus_url(config: Config) -> str | None:
    """The Redis that instances share, when the config uses one (rate limits first, then cache)."""
    limits = [config.rate_limit, *(r.rate_limit for r in config.routes)]
    for limit in limits:
        if isinstance(limit, RateLimitConfig) and limit.store == "redis":
            return limit.redis_url
    if config.cache is not None and config.cache.store == "redis":
        return config.cache.redis_url
    return None


def _file_signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class Host(Protocol):
    """What control changes (`lb.runtime.Runtime`): the live generation, and making a new one."""

    @property
    def generation(self) -> Live: ...

    @property
    def config(self) -> Config: ...

    @property
    def redis(self) -> RedisClients: ...

    def reload_certificates(self) -> list[str]: ...

    async def replace(self, config: Config) -> None: ...

    def add_backend(self, pool: str, config: BackendConfig) -> Backend | None: ...

    def remove_backend(self, pool: str, backend_id: str) -> Backend | None: ...


class Control:
    def __init__(self, runtime: Host) -> None:
        self.runtime = runtime
        self.origin = ""  # host:pid:nonce, set at start (a worker may be forked after __init__)
        self.overrides: dict[BackendKey, Override] = {}
        self.members = ApiBackends(runtime)  # backends the admin API added and removed
        self.reloads = 0
        self.poll_interval = POLL_INTERVAL
        self.watch_interval = WATCH_INTERVAL
        directory = os.environ.get(ENV_DIR)
        self.file = ControlFile(directory) if directory else None
        self.bus: RedisBus | None = None
        self._handlers: dict[str, EventHandler] = {
            "reload": self._reload_event,
            "cache_purge": self._purge_event,
        }
        self._lock = asyncio.Lock()
        self._services: list[Periodic] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seen_seq = 0
        self._file_signature: Signature | None = None
        self._watched: Signature | None = None
        self._settling: Signature | None = None
        self._sighup_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        shared = f", file {self.file.path}" if self.file else ""
        bus = f", bus {self.bus.url}" if self.bus else ""
        return f"<Control {len(self.overrides)} override(s), {self.reloads} reload(s){shared}{bus}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        if self.file is not None:
            os.makedirs(self.file.directory, mode=0o700, exist_ok=True)
            # Catch up with what the other workers were told before this one started; their
            # events (reloads, purges) are history: this worker has just read the config.
            document = self.file.read()
            self._file_signature = self.file.signature()
            self._take_overrides(document)
            self.members.take_all(document)
            self._seen_seq = document["seq"]
            self._services.append(Periodic("lb control file", self.poll_interval, self._poll_file))
        if self.runtime.config.source is not None:
            self._watched = _file_signature(self.runtime.config.source)
            watch = Periodic("lb config watch", self.watch_interval, self._watch_tick)
            self._services.append(watch)
        for service in self._services:
            await service.start()
        await self._start_bus(bus_url(self.runtime.config))
        self._install_sighup()

    async def stop(self) -> None:
        if self._sighup_loop is not None:
            self._sighup_loop.remove_signal_handler(signal.SIGHUP)
            self._sighup_loop = None
        # Under the lock: a reload under way completes (or never starts), never half-done.
        async with self._lock:
            services, self._services = self._services, []
            for service in services:
                await service.stop()
            tasks, self._tasks = set(self._tasks), set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.bus is not None:
                await self.bus.stop()
                self.bus = None

    async def _start_bus(self, url: str | None) -> None:
        if self.bus is not None and self.bus.url == url:
            return
        if self.bus is not None:
            await self.bus.stop()
            self.bus = None
        if url is None:
            return
        self.bus = RedisBus(self.runtime.redis.get(url), self.origin, self._bus_message)
        await self.bus.start()
        # Subscribed before the app serves, so a change made right after start-up is not missed;
        # with Redis away the app starts anyway and the bus keeps trying.
        try:
            async with asyncio.timeout(1.0):
                await self.bus.subscribed.wait()
        except TimeoutError:
            pass

    def _install_sighup(self) -> None:
        # Only the main thread may own signals, and only if nobody else took SIGHUP already (a
        # host app, or a second balancer in the same process).
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL:
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload_logged("SIGHUP")))
        self._sighup_loop = loop

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # referenced until done: an unreferenced task may be collected
        task.add_done_callback(self._tasks.discard)

    # -- backend overrides ------------------------------------------------------------------

    async def set_backend(
        self, pool: str, backend_id: str, state: AdminState | None, weight: int | None
    ) -> Backend:
        """Change a backend's admin state and/or weight here, then in every peer.

        Raises KeyError when the live generation has no such backend.
        """
        gen = self.runtime.generation
        backend = find_backend(gen, pool, backend_id)
        if backend is None:
            raise KeyError((pool, backend_id))
        base = self.overrides.get((pool, backend_id))
        if base is None or base.url != backend.url:
            base = Override(pool, backend_id, backend.url)
        config_weight = configured_weight(gen, pool, backend_id)
        override = base.merged(state, weight, config_weight, time.time())
        self.overrides[override.key] = override
        apply(override, gen)
        changes = (("state", state), ("weight", weight))
        logger.info(
            "backend %s in pool %s set by the admin API: %s",
            backend_id,
            pool,
            ", ".join(f"{name} {value}" for name, value in changes if value is not None),
        )
        data = override.to_json()
        if self.file is not None:
            await self._write_file(lambda document, seq: put_override(document, data))
        if self.bus is not None:
            await self.bus.publish("override", data)
        return backend

    def _take(self, override: Override) -> None:
        current = self.overrides.get(override.key)
        if current is None or override.at > current.at:
            self.overrides[override.key] = override
            apply(override, self.runtime.generation)

    def _take_overrides(self, document: dict[str, Any]) -> None:
        for item in document["overrides"]:
            override = Override.from_json(item)
            if override is not None:
                self._take(override)

    def apply_overrides(self, gen: Live) -> None:
        """Lay every known override over `gen` (a reload's new generation)."""
        for override in self.overrides.values():
            apply(override, gen)

    # -- backends added and removed by the admin API ---------------------------------------

    async def add_backend(self, pool: str, config: BackendConfig) -> Backend:
        """Add `config` (origin api) to `pool` here, then in every peer; see `ApiBackends.add`."""
        backend, change = self.members.add(pool, config)
        await self._share_backend(change)
        return backend

    async def remove_backend(self, pool: str, backend_id: str) -> Backend:
        """Drain, then remove, an API backend here and in every peer; see `ApiBackends.remove`."""
        backend, change = self.members.remove(pool, backend_id)
        await self._share_backend(change)
        return backend

    async def _share_backend(self, change: BackendChange) -> None:
        # The same way as an override's: the control file (state) and the bus.
        data = change.to_json()
        if self.file is not None:
            await self._write_file(lambda document, seq: put_backend(document, data))
        if self.bus is not None:
            await self.bus.publish("backend", data)

    # -- events ------------------------------------------------------------------------------

    def on(self, kind: str, handler: EventHandler) -> None:
        """Run `handler(data)` when a peer broadcasts an event of `kind`."""
        self._handlers[kind] = handler

    async def broadcast(self, kind: str, data: dict[str, Any], *, instances: bool = False) -> None:
        """Tell the other workers of this instance (and, with `instances`, every instance on the
        shared Redis) to run `kind`'s handler with `data`. This process has done it already."""
        if self.file is not None:
            origin = self.origin

            def change(document: dict[str, Any], seq: int) -> bool:
                add_event(document, seq, origin, kind, data)
                return True

            await self._write_file(change)
        if instances and self.bus is not None:
            await self.bus.publish(kind, data)

    async def _write_file(self, change: Callable[[dict[str, Any], int], bool]) -> None:
        assert self.file is not None
        try:
            await asyncio.to_thread(self.file.update, change)
        except OSError as exc:
            logger.error("cannot write the control file %s: %s", self.file.path, exc)

    async def _poll_file(self) -> None:
        assert self.file is not None
        signature = self.file.signature()
        if signature == self._file_signature:
            return
        self._file_signature = signature
        document = self.file.read()
        self._take_overrides(document)
        self.members.take_all(document)
        seen, self._seen_seq = self._seen_seq, document["seq"]
        for event in document["events"]:
            if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                continue
            if event["seq"] <= seen or event.get("origin") == self.origin:
                continue
            await self._run_event(event.get("kind"), event.get("data"))

    async def _bus_message(self, message: dict[str, Any]) -> None:
        kind, data = message["kind"], message["data"]
        if kind == "backend":
            change = BackendChange.from_json(data)
            if change is not None and self.members.take(change) and self.file is not None:
                await self._write_file(lambda document, seq: put_backend(document, data))
            return
        if kind == "override":
            override = Override.from_json(data)
            if override is None:
                return
            self._take(override)
            if self.file is not None:
                # Also into this instance's file, for its workers that start later.
                await self._write_file(lambda document, seq: put_override(document, data))
            return
        await self._run_event(kind, data)

    async def _run_event(self, kind: Any, data: Any) -> None:
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None or not isinstance(data, dict):
            return
        try:
            await handler(data)
        except Exception:  # noqa: BLE001 - a peer's event must not stop this worker's polling
            logger.exception("handling the %s event from another worker", kind)

    async def _reload_event(self, data: dict[str, Any]) -> None:
        await self._reload_logged("another worker")

    async def _purge_event(self, data: dict[str, Any]) -> None:
        # The cache layer's purge(target: bytes | None) when the generation has a cache.
        purge = getattr(getattr(self.runtime.generation, "cache", None), "purge", None)
        if purge is not None:
            path = data.get("path")
            removed = await purge(path.encode("latin-1") if isinstance(path, str) else None)
            log_purge(
                "another worker or instance", path if isinstance(path, str) else None, removed
            )

    # -- reload ------------------------------------------------------------------------------

    async def reload(
        self, source: ConfigSource | None = None, *, share: bool = False
    ) -> dict[str, Any]:
        """Re-read the config (or load `source`) and make it live; see `lb.control.reload`.

        Returns what changed. Raises `ReloadError` with the problems, the running config
        untouched. With `share`, the other workers of the instance reload too.
        """
        async with self._lock:
            report = await self._reload(source)
        if share:
            await self.broadcast("reload", {})
        return report

    async def _reload(self, source: ConfigSource | None) -> dict[str, Any]:
        app = self.runtime
        if source is None:
            source = app.config.source
        if source is None:
            raise ReloadError(["config: this app was not loaded from a file, so it cannot reload"])
        try:
            if isinstance(source, str | os.PathLike):
                config = await asyncio.to_thread(load_config, source)
            else:
                config = load_config(source)
        except ConfigError as exc:
            raise ReloadError(exc.problems) from None
        try:
            # Before the comparison below: renewed certificates come with an unchanged config.
            renewed = app.reload_certificates()
        except TLSError as exc:
            raise ReloadError([f"tls: {exc}"]) from None
        report: dict[str, Any] = {"status": "unchanged", "config": config.source}
        if renewed:
            report["certificates_renewed"] = renewed
        report.update(describe(app.config, config))
        if config == app.config:
            return report
        await app.replace(config)  # lays the overrides over the new generation in the swap
        self.reloads += 1
        report["status"] = "reloaded"
        await self._start_bus(bus_url(config))
        return report

    async def _reload_logged(self, trigger: str) -> None:
        try:
            report = await self.reload()
        except ReloadError as exc:
            log_reload_failure(trigger, exc.problems)
            return
        log_reload(trigger, report)

    async def _watch_tick(self) -> None:
        config = self.runtime.config
        if not config.server.watch_config or config.source is None:
            self._watched = None
            return
        signature = _file_signature(config.source)
        if self._watched is None:
            self._watched = signature
            return
        if signature == self._watched:
            self._settling = None
            return
        if signature != self._settling:
            # Changed since the last look: wait one more interval, so a file still being written
            # (an editor saving in steps) is read once it has settled.
            self._settling = signature
            return
        self._watched, self._settling = signature, None
        await self._reload_logged("config file changed")

"""`Control` (`app.control`): runtime changes to one app, and sharing them with its peers.

Four kinds of change reach a running app: admin overrides of backends (PATCH), backends the admin
API adds and removes (POST, DELETE: `members.py`), reloads (POST reload, SIGHUP, the file watch)
and cache purges (and any kind a module adds with `on` or `on_document`). Each is applied in this
process at once, then shared: with the other workers of the instance through the control file
(`shared.py`), whose writer raises the shared sequence number and wakes every live worker
(`workers.py`), then waits (at most `ASK_TIMEOUT`) until each has applied it; and, for overrides,
added backends and purges, with other instances through Redis pub/sub (`bus.py`) when the config
uses a Redis store, counting the instances that acknowledge within the same bound. Before each
request a worker compares the shared sequence number with `seen_seq` and catches up first if it is
behind (`lb.app`). Everything here runs on the app's event loop.
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
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from lb.backend import AdminState, Backend
from lb.config import BackendConfig, ConfigError, load_config
from lb.control.bus import RedisBus, bus_url
from lb.control.host import Change, ConfigSource, Data, EventHandler, Host
from lb.control.members import ApiBackends, BackendChange, put_backend
from lb.control.overrides import BackendKey, Live, Override, apply, configured_weight, find_backend
from lb.control.periodic import Periodic
from lb.control.reload import ReloadError, describe, log_purge, log_reload, log_reload_failure
from lb.control.shared import (
    ENV_DIR,
    ControlFile,
    add_event,
    events_after,
    put_override,
    replay_from,
)
from lb.control.watch import ConfigWatch
from lb.control.workers import ALONE, Applied, Peers, WorkerInfo
from lb.instance import Signature
from lb.tls import TLSError

logger = logging.getLogger("lb.control")

POLL_INTERVAL = 2.0  # a safety net only: changes arrive by wake-up, and requests check the seq
WATCH_INTERVAL = 1.0  # how often `server.watch_config` looks at the config file
ASK_TIMEOUT = 2.0  # how long an admin change waits for every worker (and instance) to apply it
FLUSH_TIMEOUT = 1.0  # how long a scrape or status read waits for every worker's counts
REPLAY_SLACK = 1.0  # reloads up to this long before a worker loaded its config are run again


class Control:
    def __init__(self, runtime: Host) -> None:
        self.runtime = runtime
        self.origin = ""  # host:pid:nonce, set at start (a worker may be forked after __init__)
        self.instance = ""  # what other instances count this one by (its control directory)
        self.born = time.time()  # about when this app read its config
        self.overrides: dict[BackendKey, Override] = {}
        self.members = ApiBackends(runtime)  # backends the admin API added and removed
        self.reloads = 0
        self.poll_interval = POLL_INTERVAL
        self.watch_interval = WATCH_INTERVAL
        directory = os.environ.get(ENV_DIR)
        self.file = ControlFile(directory) if directory else None
        self.peers: Peers | None = None
        # The shared sequence number (None without a control file) and the one applied here:
        # read on every request, so plain attributes.
        self.counter: memoryview | None = None
        self.seen_seq = 0
        self.bus: RedisBus | None = None
        self._handlers: dict[str, EventHandler] = {
            "reload": self._reload_event,
            "cache_purge": self._purge_event,
        }
        self._lock = asyncio.Lock()
        self._catching = asyncio.Lock()
        self._services: list[Periodic] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._file_signature: Signature | None = None
        self._readers: list[Callable[[Data], object]] = [
            self._take_overrides,
            self.members.take_all,
        ]
        self._sighup_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        shared = f", file {self.file.path}" if self.file else ""
        bus = f", bus {self.bus.url}" if self.bus else ""
        return f"<Control {len(self.overrides)} override(s), {self.reloads} reload(s){shared}{bus}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.instance = self.origin
        if self.file is not None:
            directory = self.file.directory
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self.instance = f"{socket.gethostname()}:{directory}"
            ops = {"sync": self._sync_op, "flush": self._flush_op}
            self.peers = Peers(directory, ops)
            # In the worker table before reading the file: a change made from here on waits for
            # this worker, one made before is in what it reads now.
            await self.peers.start()
            self.counter = self.file.counter.view
            document = self.file.read()
            self._file_signature = self.file.signature()
            self._read(document)
            self.seen_seq = replay_from(document, self.born - REPLAY_SLACK)
            self._services.append(Periodic("lb control file", self.poll_interval, self.catch_up))
        if self.runtime.config.source is not None:
            watch = ConfigWatch(
                lambda: self.runtime.config, lambda: self._reload_logged("config file changed")
            )
            self._services.append(Periodic("lb config watch", self.watch_interval, watch.tick))
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
            if self.peers is not None:
                await self.peers.stop()
                self.peers = None
            if self.file is not None:
                self.counter = None
                self.file.close()

    async def _start_bus(self, url: str | None) -> None:
        if self.bus is not None and self.bus.url == url:
            return
        if self.bus is not None:
            await self.bus.stop()
            self.bus = None
        if url is None:
            return
        redis = self.runtime.redis.get(url)
        self.bus = RedisBus(redis, self.origin, self._bus_message, self.instance)
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

    # -- the workers of this instance ----------------------------------------------------------

    def workers(self) -> list[WorkerInfo]:
        """The live workers of this instance (this process alone without a control file)."""
        if self.peers is None:
            return [WorkerInfo(os.getpid(), self.born, time.time())]
        return self.peers.table()

    async def flush_workers(self) -> Applied:
        """Have every live worker hand its counts to the shared metrics files (a scrape or
        status read is about to sum them); bounded by `FLUSH_TIMEOUT`."""
        if self.peers is None:
            return ALONE
        return await self.peers.ask("flush", {}, FLUSH_TIMEOUT)

    async def _flush_op(self, message: dict[str, Any]) -> None:
        self.runtime.metrics.refresh()

    async def _sync_op(self, message: dict[str, Any]) -> None:
        seq = message.get("seq")
        await self.catch_up(seq if isinstance(seq, int) else None)

    async def catch_up(self, seq: int | None = None) -> None:
        """Apply what the control file holds beyond `seen_seq` (up to `seq` at least)."""
        if self.file is None:
            return
        async with self._catching:
            if seq is None:
                seq = self.counter[0] if self.counter is not None else self.seen_seq + 1
            if self.seen_seq >= seq and self.file.signature() == self._file_signature:
                return
            self._file_signature = self.file.signature()
            document = self.file.read()
            self._read(document)
            seen, self.seen_seq = self.seen_seq, max(self.seen_seq, document["seq"])
            for kind, data in events_after(document, seen, self.origin):
                await self._run_event(kind, data)

    def on_document(self, reader: Callable[[Data], object]) -> None:
        """Have `reader(document)` see the control document at start and at every catch-up: for
        shared *state* (as overrides are) that a worker starting later must learn too."""
        self._readers.append(reader)

    def _read(self, document: Data) -> None:
        for reader in self._readers:
            reader(document)

    async def share(
        self, change: Change, kind: str = "", data: Data | None = None, instances: bool = False
    ) -> Applied:
        """Write `change` (an edit of the document, see `ControlFile.update`) to the control file,
        wake the workers and wait until each has read it; with `instances`, also publish `kind`
        and `data` on the bus and count the instances that apply them."""
        applied = ALONE
        pending: list[Awaitable[Any]] = []
        if self.file is not None and self.peers is not None:
            seq = await self._write_file(change)
            if seq is None and self.counter is not None:
                seq = self.counter[0]  # nothing written: everyone up to what is there
            pending.append(self.peers.ask("sync", {"seq": seq}, ASK_TIMEOUT))
        if instances and self.bus is not None:
            pending.append(self.bus.publish_acked(kind, data or {}, ASK_TIMEOUT))
        results = await asyncio.gather(*pending)
        for result in results:
            if isinstance(result, Applied):
                applied = replace(result, instances=applied.instances)
            else:
                applied = replace(applied, instances=result)
        return applied

    # -- backend overrides ------------------------------------------------------------------

    async def set_backend(
        self, pool: str, backend_id: str, state: AdminState | None, weight: int | None
    ) -> tuple[Backend, Applied]:
        """Change a backend's admin state and/or weight here, then in every peer; returns the
        backend and how many peers applied it before the answer.

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
        put = lambda document, seq: put_override(document, data)  # noqa: E731
        return backend, await self.share(put, "override", data, instances=True)

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

    async def add_backend(self, pool: str, config: BackendConfig) -> tuple[Backend, Applied]:
        """Add `config` (origin api) to `pool` here, then in every peer; see `ApiBackends.add`."""
        backend, change = self.members.add(pool, config)
        return backend, await self._share_backend(change)

    async def remove_backend(self, pool: str, backend_id: str) -> tuple[Backend, Applied]:
        """Drain, then remove, an API backend here and in every peer; see `ApiBackends.remove`."""
        backend, change = self.members.remove(pool, backend_id)
        return backend, await self._share_backend(change)

    async def _share_backend(self, change: BackendChange) -> Applied:
        # The same way as an override's: the control file (state) and the bus.
        data = change.to_json()
        put = lambda document, seq: put_backend(document, data)  # noqa: E731
        return await self.share(put, "backend", data, instances=True)

    # -- events ------------------------------------------------------------------------------

    def on(self, kind: str, handler: EventHandler) -> None:
        """Run `handler(data)` when a peer broadcasts an event of `kind`."""
        self._handlers[kind] = handler

    async def broadcast(
        self, kind: str, data: dict[str, Any], *, instances: bool = False
    ) -> Applied:
        """Tell the other workers of this instance (and, with `instances`, every instance on the
        shared Redis) to run `kind`'s handler with `data`, and wait (at most `ASK_TIMEOUT`) until
        they have. This process has done it already. Returns how many did."""
        origin = self.origin

        def change(document: dict[str, Any], seq: int) -> bool:
            add_event(document, seq, origin, kind, data)
            return True

        return await self.share(change, kind, data, instances)

    async def _write_file(self, change: Change) -> int | None:
        assert self.file is not None
        try:
            return await asyncio.to_thread(self.file.update, change)
        except OSError as exc:
            logger.error("cannot write the control file %s: %s", self.file.path, exc)
            return None

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
        else:
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
            report["applied"] = (await self.broadcast("reload", {})).to_json()
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
